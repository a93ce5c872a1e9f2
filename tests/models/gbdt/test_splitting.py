import itertools

import numpy as np

from ehr_fed.models.gbdt.splitting import SplitParams, find_best_split, leaf_weight, node_totals


def _hist(rng, n_features=3, n_bins=6):
    h = np.zeros((n_features, n_bins, 3), dtype=np.int64)
    rows = rng.integers(5, 40, size=n_bins)  # rows per bin, same for each feature's total
    for j in range(n_features):
        perm = rng.permutation(rows)
        h[j, :, 2] = perm
        h[j, :, 1] = perm * 100
    g = rng.integers(-60, 60, size=(n_features, n_bins)) * h[:, :, 2]
    g -= (g.sum(axis=1, keepdims=True) - g[0].sum()) // 1  # equal totals per feature
    g[:, 0] += g[0].sum() - g.sum(axis=1)
    h[:, :, 0] = g
    return h


def _brute(hist, n_cuts, sp):
    s, lam = sp.scale, sp.reg_lambda
    tot = hist[0].sum(axis=0)
    score = lambda G, H: (G * s) ** 2 / (H * s + lam)  # noqa: E731
    best = None
    for j, b, d in itertools.product(range(hist.shape[0]), range(hist.shape[1] - 1), (0, 1)):
        if b > n_cuts[j] or (d == 1 and b == n_cuts[j]):
            continue
        left = hist[j, : b + 1].sum(axis=0) + (hist[j, -1] if d else 0)
        right = tot - left
        if min(left[1], right[1]) * s < max(sp.min_child_weight, 1e-300) or min(left[2], right[2]) < max(sp.min_count, 1):
            continue
        gain = score(left[0], left[1]) + score(right[0], right[1]) - score(tot[0], tot[1])
        if best is None or gain > best[0]:
            best = (gain, j, b, d == 1)
    return best


def test_best_split_matches_exhaustive_search():
    rng = np.random.default_rng(3)
    sp = SplitParams(reg_lambda=1.0, min_child_weight=0.01, precision=10)
    for _ in range(20):
        hist = _hist(rng)
        n_cuts = np.array([4, 3, 2])
        info = find_best_split(hist, n_cuts, sp)
        gain, j, b, dl = _brute(hist, n_cuts, sp)
        assert (info.feature, info.bin, info.default_left) == (j, b, dl)
        assert np.isclose(info.gain, gain)
        assert np.array_equal(np.add(info.left, info.right), hist[0].sum(axis=0))


def test_missing_rows_learn_their_default_direction():
    # feature 0: bins 0..1 hold negative gradients, bin 2 positive; the missing rows are positive too
    h = np.zeros((1, 4, 3), dtype=np.int64)
    h[0, :, 2] = [20, 20, 20, 20]
    h[0, :, 1] = [2000] * 4
    h[0, :, 0] = [-900, -900, 900, 900]
    info = find_best_split(h, np.array([2]), SplitParams(precision=10))
    assert (info.bin, info.default_left) == (1, False)
    h[0, :, 0] = [900, -900, -900, 900]  # now the missing rows look like bin 0: split at bin 0, missing left
    info = find_best_split(h, np.array([2]), SplitParams(precision=10))
    assert (info.bin, info.default_left) == (0, True)


def test_missing_versus_observed_split():
    h = np.zeros((1, 4, 3), dtype=np.int64)
    h[0, :, 2] = [20, 20, 20, 20]
    h[0, :, 1] = [2000] * 4
    h[0, :, 0] = [-300, -300, -300, 900]
    info = find_best_split(h, np.array([2]), SplitParams(precision=10))
    assert info.bin == 2 and not info.default_left and info.right[2] == 20


def test_constraints_min_child_weight_min_count_and_gamma():
    h = np.zeros((1, 3, 3), dtype=np.int64)
    h[0, :, 2] = [8, 30, 0]
    h[0, :, 1] = [8 * 256, 30 * 256, 0]
    h[0, :, 0] = [-8 * 900, 30 * 300, 0]
    base = dict(precision=10, reg_lambda=1.0)
    assert find_best_split(h, np.array([1]), SplitParams(**base)) is not None
    assert find_best_split(h, np.array([1]), SplitParams(min_count=10, **base)) is None
    assert find_best_split(h, np.array([1]), SplitParams(min_child_weight=2.5, **base)) is None
    gain = find_best_split(h, np.array([1]), SplitParams(**base)).gain
    assert find_best_split(h, np.array([1]), SplitParams(gamma=gain * 1.01, **base)) is None
    assert find_best_split(h, np.array([1]), SplitParams(gamma=gain * 0.99, **base)) is not None


def test_leaf_weight_and_totals():
    sp = SplitParams(reg_lambda=2.0, min_child_weight=1.0)
    assert leaf_weight(-3.0, 4.0, sp) == 0.5
    assert leaf_weight(-3.0, 0.5, sp) == 0.0  # below min_child_weight, as XGBoost
    h = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    assert node_totals(h) == tuple(h[0].sum(axis=0))

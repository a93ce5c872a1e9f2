import numpy as np

from ehr_fed.models.gbdt.histogram import build_histograms, logistic_grad_hess, quantize, sigmoid


def test_logistic_gradients_and_bounds():
    margin = np.array([-50.0, -1.0, 0.0, 2.0, 50.0])
    y = np.array([1, 0, 1, 1, 0])
    g, h = logistic_grad_hess(margin, y)
    p = sigmoid(margin)
    assert np.allclose(g, p - y) and np.all(np.abs(g) <= 1)
    assert np.all(h > 0) and np.all(h <= 0.25) and h[2] == 0.25


def test_quantize_grid():
    assert quantize(np.array([0.5, -0.25, 1 / 3]), 4).tolist() == [8, -4, 5]


def test_histograms_equal_brute_force_and_are_additive_over_partitions():
    # Prepare
    rng = np.random.default_rng(1)
    n, F, B = 500, 3, 6
    bins = rng.integers(0, B, size=(n, F))
    gq = rng.integers(-1000, 1000, size=n)
    hq = rng.integers(0, 250, size=n)
    row_node = rng.choice([3, 4, 7], size=n)
    nodes = np.array([7, 3])
    # Execute
    hist = build_histograms(bins, gq, hq, row_node, nodes, B)
    # Assert
    assert hist.shape == (2, F, B, 3) and hist.dtype == np.int64
    for i, nid in enumerate(nodes):
        for j in range(F):
            for b in range(B):
                m = (row_node == nid) & (bins[:, j] == b)
                assert hist[i, j, b].tolist() == [gq[m].sum(), hq[m].sum(), m.sum()]
    half = rng.random(n) < 0.4
    parts = [build_histograms(bins[s], gq[s], hq[s], row_node[s], nodes, B) for s in (half, ~half)]
    assert np.array_equal(parts[0] + parts[1], hist)


def test_no_requested_rows_gives_zeros():
    bins = np.zeros((4, 2), dtype=np.uint16)
    hist = build_histograms(bins, np.ones(4, np.int64), np.ones(4, np.int64), np.zeros(4, np.int64),
                            np.array([5]), 3)
    assert hist.shape == (1, 2, 3, 3) and not hist.any()

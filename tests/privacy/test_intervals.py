"""Interval ledger: histograms over different edges of one column cannot be subtracted into a small cell."""

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr_fed.privacy.intervals import IntervalLedger, merge_against

MIN = 10


def _hist(x, edges):
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(idx, minlength=len(edges) - 1).astype(float)


def _known(releases):
    """Every cumulative count the releases show: {boundary: #(x < boundary)} (with -inf -> 0). A merged
    interval's count sits in its first bin, so a boundary is shown where a non-empty bin starts."""
    points = {-np.inf: 0.0}
    for edges, merged in releases:
        cum = np.concatenate([[0.0], np.cumsum(merged)])
        for i in range(1, len(merged)):
            if merged[i] != 0:
                points[float(edges[i])] = cum[i]
    return points


def _recoverable_small(releases, total):
    pts = _known(releases)
    pts[np.inf] = total
    vals = [pts[b] for b in sorted(pts)]
    return [b - a for a, b in itertools.combinations(vals, 2) if 0 < b - a < MIN]


def test_shifted_edges_do_not_isolate_one_row():
    x = np.concatenate([np.full(30, 40.0), [50.005], np.full(30, 60.0)])
    led = [IntervalLedger(1)]
    e1, e2 = np.array([0, 50, 200.0]), np.array([0, 50.01, 200.0])
    m1, _ = merge_against(_hist(x, e1)[None], e1, MIN, led)
    m2, groups = merge_against(_hist(x, e2)[None], e2, MIN, led)
    # without the ledger: 31 - 30 = the one patient aged 50.005
    assert _hist(x, e2)[0] - _hist(x, e1)[0] == 1
    assert m1[0].tolist() == [30, 31] and m2[0].tolist() == [61, 0] and groups == [[0, 1]]
    assert _recoverable_small([(e1, m1[0]), (e2, m2[0])], len(x)) == []


def test_grouped_release_checks_each_group_and_the_whole_column():
    rng = np.random.default_rng(1)
    x = rng.normal(60, 10, 400)
    y = rng.random(400) < 0.3
    e = np.linspace(20, 100, 41)
    whole, by = IntervalLedger(1), IntervalLedger(2)
    h = np.stack([_hist(x[~y], e), _hist(x[y], e)])
    merged, _ = merge_against(h, e, MIN, [whole, by])
    assert np.all((merged == 0) | (merged >= MIN))
    # a later overall release over shifted edges respects the boundaries the grouped one showed
    e2 = e + 0.37
    m2, _ = merge_against(_hist(x, e2)[None], e2, MIN, [whole])
    pts = {**{b: c[0] for b, c in whole.points.items()}, np.inf: 400.0, -np.inf: 0.0}
    vals = [pts[b] for b in sorted(pts)]
    assert all(b - a == 0 or b - a >= MIN for a, b in zip(vals, vals[1:], strict=False))


def test_small_total_is_hidden_and_a_changed_total_refused():
    led = [IntervalLedger(1)]
    m, _ = merge_against(np.array([[3.0, 2.0]]), np.array([0, 1, 2.0]), MIN, led)
    assert np.isnan(m).all()
    merge_against(np.array([[30.0, 20.0]]), np.array([0, 1, 2.0]), MIN, led)
    try:
        merge_against(np.array([[30.0, 21.0]]), np.array([0, 1.5, 2.0]), MIN, led)
    except ValueError as exc:
        assert "total differs" in str(exc)
    else:
        raise AssertionError("a release over another population was compared")


def test_ledger_round_trips():
    led = IntervalLedger(2, {1.5: [3, 4], -2.0: [0, 1]}, [10, 20])
    again = IntervalLedger.from_dict(led.to_dict())
    assert again.groups == 2 and again.total.tolist() == [10, 20]
    assert {b: c.tolist() for b, c in again.points.items()} == {1.5: [3, 4], -2.0: [0, 1]}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=15, max_size=120),
       st.lists(st.lists(st.integers(0, 200), min_size=1, max_size=12), min_size=1, max_size=6))
def test_no_sequence_of_releases_shows_a_small_interval(values, cuts):
    """Property: whatever edges a coordinator asks for, in whatever order, no difference of shown
    cumulative counts lies in 1 .. MIN-1."""
    x = np.asarray(values, dtype=float) / 2.0
    led = [IntervalLedger(1)]
    releases = []
    for c in cuts:
        edges = np.array([-1.0, *sorted(set(v / 2.0 + 0.25 for v in c)), 1000.0])
        merged, _ = merge_against(_hist(x, edges)[None], edges, MIN, led)
        if np.isnan(merged).any():
            continue
        releases.append((edges, merged[0]))
        assert abs(merged.sum() - len(x)) < 1e-9
    assert _recoverable_small(releases, float(len(x))) == []

import numpy as np

from ehr_fed.models.gbdt.predictor import Tree, apply_tree, base_margin, predict_margin


def _stump(threshold=0.5, default_left=True, lo=-0.2, hi=0.3):
    t = Tree()
    left, right = t.split(0, feature=1, split_bin=0, threshold=threshold, default_left=default_left, gain=1.0)
    t.leaf_value[left], t.leaf_value[right] = lo, hi
    return t


def test_routing_threshold_and_missing():
    t = _stump()
    X = np.array([[0, 0.49], [0, 0.5], [0, np.nan], [np.nan, 2.0]], dtype=np.float32)
    assert apply_tree(t, X).tolist() == [1, 2, 1, 2]
    assert apply_tree(_stump(default_left=False), X).tolist() == [1, 2, 2, 2]
    assert apply_tree(t.to_routing(), X).tolist() == [1, 2, 1, 2]


def test_margins_accumulate_in_float32_from_base_margin():
    trees = [_stump(), _stump(threshold=0.0, lo=0.1, hi=-0.4)]
    X = np.array([[0, -1.0], [0, 0.25], [0, 1.0]])
    m = predict_margin(trees, X, base_score=0.2)
    assert m.dtype == np.float32
    b = base_margin(0.2)
    assert np.isclose(b, np.log(0.2 / 0.8))
    expected = [b + np.float32(-0.2) + np.float32(0.1), b + np.float32(-0.2) + np.float32(-0.4),
                b + np.float32(0.3) + np.float32(-0.4)]
    assert np.array_equal(m, np.array(expected, dtype=np.float32))


def test_tree_depth():
    t = _stump()
    t.split(1, 0, 0, 0.0, False, 0.5)
    assert t.depth() == 2 and t.n_nodes == 5 and t.parent == [-1, 0, 0, 1, 1]

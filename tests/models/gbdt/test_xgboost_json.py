import json

import numpy as np
import pytest
import xgboost as xgb

from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier
from ehr_fed.models.gbdt.xgboost_json import coarsen, model_from_json, model_to_json

from .conftest import FEATURES


@pytest.fixture(scope="module")
def fitted(small_data):
    m = FederatedGradientBoostingClassifier(n_estimators=8, max_depth=4, max_bin=32)
    return m.fit(small_data["X"], small_data["y"])


def test_booster_loads_export_and_predicts_identically(fitted, small_data, tmp_path):
    path = fitted.save_xgboost_json(tmp_path / "m.json")
    booster = xgb.Booster(model_file=str(path))
    Xt = small_data["Xt"]
    names = fitted.to_xgboost_json()["learner"]["feature_names"]  # XGBoost's f0, f1, ... (fitted on an array)
    assert names == [f"f{j}" for j in range(8)] and not hasattr(fitted, "feature_names_in_")
    p_xgb = booster.predict(xgb.DMatrix(Xt, feature_names=names))
    p_ours = fitted.predict_proba(Xt)[:, 1]
    assert np.abs(p_xgb - p_ours).max() < 1e-6
    margin = booster.predict(xgb.DMatrix(Xt, feature_names=names), output_margin=True)
    assert np.abs(margin - fitted.decision_function(Xt)).max() < 1e-5
    doc = json.loads(path.read_text())
    assert doc["learner"]["objective"]["name"] == "binary:logistic"
    assert doc["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] == "8"


def test_to_xgboost_gives_a_usable_classifier(fitted, small_data):
    clf = fitted.to_xgboost()
    assert isinstance(clf, xgb.XGBClassifier)
    p = clf.predict_proba(small_data["Xt"])
    assert p.shape == (2000, 2)
    assert np.abs(p[:, 1] - fitted.predict_proba(small_data["Xt"])[:, 1]).max() < 1e-6
    assert np.array_equal(clf.predict(small_data["Xt"]), fitted.predict(small_data["Xt"]))


@pytest.mark.parametrize("mode", ["keep", "coarsen", "strip"])
def test_hessian_export_modes(fitted, small_data, mode):
    doc = fitted.to_xgboost_json(hessian_export=mode)
    hess = np.concatenate([t["sum_hessian"] for t in doc["learner"]["gradient_booster"]["model"]["trees"]])
    exact = np.concatenate([t.sum_hessian for t in fitted.trees_])
    if mode == "keep":
        assert np.allclose(hess, exact, rtol=1e-6)
    elif mode == "strip":
        assert not hess.any()
    else:
        assert np.allclose(hess, exact, rtol=0.05) and not np.allclose(hess, exact, rtol=1e-6)
        assert all(len(f"{v:.6g}".replace(".", "").replace("-", "").lstrip("0").rstrip("0")) <= 2 for v in hess)
    booster = xgb.Booster()
    booster.load_model(bytearray(json.dumps(doc).encode()))
    p = booster.predict(xgb.DMatrix(small_data["Xt"], feature_names=doc["learner"]["feature_names"]))
    assert np.abs(p - fitted.predict_proba(small_data["Xt"])[:, 1]).max() < 1e-6


def test_reads_a_model_trained_by_xgboost(small_data, tmp_path):
    X, y, Xt = small_data["X"], small_data["y"], small_data["Xt"]
    clf = xgb.XGBClassifier(tree_method="hist", n_estimators=5, max_depth=3).fit(X, y)
    clf.get_booster().save_model(str(tmp_path / "x.json"))
    ours = FederatedGradientBoostingClassifier.from_xgboost_json(tmp_path / "x.json")
    assert np.abs(ours.predict_proba(Xt)[:, 1] - clf.predict_proba(Xt)[:, 1]).max() < 1e-6


def test_round_trip_and_invalid_documents(fitted):
    doc = model_to_json(fitted.trees_, base_score=fitted.base_score_, n_features=len(FEATURES),
                        feature_names=FEATURES)
    trees, meta = model_from_json(doc)
    assert [t.to_routing() for t in trees] == [t.to_routing() for t in fitted.trees_]
    assert meta["base_score"] == pytest.approx(fitted.base_score_) and meta["feature_names"] == FEATURES
    with pytest.raises(ValueError, match="hessian_export must be one of"):
        model_to_json(fitted.trees_, base_score=0.5, n_features=8, hessian_export="drop")
    doc["learner"]["objective"]["name"] = "reg:squarederror"
    with pytest.raises(ValueError, match="objective 'binary:logistic', got 'reg:squarederror'"):
        model_from_json(doc)


def test_coarsen_keeps_two_significant_digits():
    assert coarsen(np.array([123.456, 0.012345, 0.0, -9.876])).tolist() == [120.0, 0.012, 0.0, -9.9]

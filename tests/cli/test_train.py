"""``ehr-fed train logreg`` and ``ehr-fed train gbdt`` on a federation YAML of feature tables."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest
import yaml

import ehr_fed
from ehr_fed.cli.main import main
from ehr_fed.cli.train import GBDT_FLAGS

PROJECT = __import__("pathlib").Path(__file__).resolve().parents[2]
STUDY = PROJECT / "mappings" / "studies" / "readmission_30d.yaml"


def study_features() -> list[str]:
    return [f["name"] for f in yaml.safe_load(STUDY.read_text())["features"]]


def study_table(site: str, n: int, seed: int) -> pd.DataFrame:
    """A feature table with the study's columns: a few informative features, the rest noise or missing."""
    rng = np.random.default_rng(seed)
    cols = {name: rng.normal(size=n) for name in study_features()}
    cols["age"] = rng.normal(65, 12, n)
    cols["los_days"] = rng.exponential(4, n)
    for name in study_features():
        if name.startswith("cond_") or name == "sex_female":
            cols[name] = (rng.random(n) < 0.3).astype(float)
        elif name.startswith("lab_") or name in ("lace", "prior_ed_180d", "n_active_meds"):
            cols[name] = np.nan  # never observed, as in a source without labs
    cols["lab_creatinine"] = np.where(rng.random(n) < 0.3, np.nan, rng.lognormal(0, 0.3, n))
    eta = -3 + 0.03 * cols["age"] + 0.1 * cols["los_days"]
    label = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype("int8")
    meta = {"site_id": site, "person_key": [f"{seed:02x}{i:014x}" for i in range(n)],
            "index_time": pd.Timestamp("2022-01-01"), "label": label}
    return pd.DataFrame({**meta, **cols})


@pytest.fixture(scope="module")
def federation_yaml(tmp_path_factory):
    root = tmp_path_factory.mktemp("fed")
    sites = []
    for i, n in enumerate((400, 500, 450)):
        sid = f"site_{'abc'[i]}"
        study_table(sid, n, 40 + i).to_parquet(root / f"{sid}.parquet", index=False)
        sites.append({"id": sid, "table": f"{sid}.parquet"})
    cfg = {"study": str(STUDY), "sites": sites, "transport": {"kind": "in_process"},
           "privacy": {"min_cell_count": 10, "min_sites": 3, "max_params_fraction": 0.3},
           "keys": {"n_length": 2048}}
    path = root / "federation.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_logreg_encrypted_writes_a_model_and_reports_rounds(federation_yaml, tmp_path, capsys):
    out = tmp_path / "model.json"
    rc = main(["train", "logreg", "--federation", str(federation_yaml), "--out", str(out),
               "--key-bits", "1024", "--allow-insecure"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "Paillier-encrypted" in cap.err
    assert "round   1: log-likelihood" in cap.err and "converged" in cap.err
    assert "warning: terms left out of the model: ['prior_ed_180d', 'lab_hemoglobin'" in cap.err
    assert "missing_lab_creatinine" in cap.out and "odds_ratio" in cap.out
    model = ehr_fed.load_model(out)
    doc = json.loads(out.read_text())
    assert doc["study_id"] == "readmission_30d" and len(doc["feature_schema"]) == 20
    assert model.n_samples_ == 1350 and model.converged_
    assert list(model.terms_) == ["age", "sex_female", "los_days", "prior_inpatient_365d", "charlson",
                                  "cond_diabetes", "cond_heart_failure", "cond_copd", "cond_ckd",
                                  "cond_hypertension", "cond_cancer", "lab_creatinine", "missing_lab_creatinine"]


def test_train_logreg_plaintext_options_equal_the_api(federation_yaml, tmp_path, capsys):
    from ehr_fed.federation import Federation
    from ehr_fed.models import FederatedLogisticRegression

    out = tmp_path / "m.json"
    rc = main(["train", "logreg", "--federation", str(federation_yaml), "--out", str(out), "--plaintext",
               "--penalty", "l2", "--C", "0.1", "--features", "age, los_days,lab_creatinine",
               "--missing-values", "mean_impute"])
    assert rc == 0, capsys.readouterr().err
    cli_model = ehr_fed.load_model(out)
    assert cli_model.get_params()["features"] == ["age", "los_days", "lab_creatinine"]
    with Federation.from_yaml(federation_yaml, encrypted=False) as fed:
        api = FederatedLogisticRegression(penalty="l2", C=0.1, encrypted=False, missing_values="mean_impute",
                                          features=["age", "los_days", "lab_creatinine"]).fit(fed)
    np.testing.assert_array_equal(cli_model.coef_, api.coef_)
    assert list(cli_model.terms_) == ["age", "los_days", "lab_creatinine"]


def test_train_logreg_errors_are_reported_not_raised(federation_yaml, tmp_path, capsys):
    rc = main(["train", "logreg", "--federation", str(federation_yaml), "--out", str(tmp_path / "m.json"),
               "--plaintext", "--features", "age,bmi"])
    assert rc == 1
    assert "error: features ['bmi'] are not feature columns" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
    rc = main(["train", "logreg", "--federation", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "m.json")])
    assert rc == 1 and "does not exist" in capsys.readouterr().err


def test_train_requires_a_model_kind(capsys):
    with pytest.raises(SystemExit):
        main(["train"])
    assert "logreg" in capsys.readouterr().err


def test_gbdt_flags_cover_the_estimator_parameters():
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    params = set(inspect.signature(FederatedGradientBoostingClassifier.__init__).parameters) - {"self"}
    assert {name for name, _, _ in GBDT_FLAGS} == params - {"encrypted", "bin_edges", "dp"}  # dp: --epsilon


def test_train_gbdt_writes_a_model(federation_yaml, tmp_path, capsys):
    out = tmp_path / "gbdt.json"
    rc = main(["train", "gbdt", "--federation", str(federation_yaml), "--out", str(out), "--plaintext",
               "--n-estimators", "3", "--max-depth", "2", "--learning-rate", "0.5", "--max-bin", "16"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "tree 3/3" in cap.err
    model = ehr_fed.load_model(out)
    assert type(model).__name__ == "FederatedGradientBoostingClassifier"
    assert model.get_params()["n_estimators"] == 3 and model.get_params()["max_depth"] == 2
    assert len(model.trees_) == 3


def test_train_gbdt_with_epsilon_prints_and_saves_what_it_spent(federation_yaml, tmp_path, capsys):
    out = tmp_path / "gbdt_dp.json"
    rc = main(["train", "gbdt", "--federation", str(federation_yaml), "--out", str(out), "--plaintext",
               "--n-estimators", "2", "--max-depth", "2", "--max-bin", "8", "--epsilon", "4", "--delta", "1e-7"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    line = next(x for x in cap.out.splitlines() if x.startswith("differential privacy: epsilon"))
    spent = float(line.split()[3])
    assert 0 < spent <= 4 and "of a planned 4" in line and "delta 1e-07" in line
    assert "planned tree levels released" in line
    model = ehr_fed.load_model(out)
    assert model.dp_["epsilon"] == pytest.approx(spent, rel=1e-3) and model.dp_["delta"] == 1e-7
    rc = main(["train", "gbdt", "--federation", str(federation_yaml), "--out", str(tmp_path / "x.json"),
               "--plaintext", "--delta", "1e-7"])
    assert rc != 0 and "--delta needs --epsilon" in capsys.readouterr().err


def test_train_logreg_with_epsilon_saves_a_model_that_loads_with_dp(federation_yaml, tmp_path, capsys):
    out = tmp_path / "lr_dp.json"
    rc = main(["train", "logreg", "--federation", str(federation_yaml), "--out", str(out), "--plaintext",
               "--features", "age,los_days", "--epsilon", "4"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "differential privacy: epsilon" in cap.out
    model = ehr_fed.load_model(out)  # the loaded model restores dp_ (what the file says it spent)
    assert model.dp_ == json.loads(out.read_text())["dp"] and model.dp_["epsilon"] <= 4

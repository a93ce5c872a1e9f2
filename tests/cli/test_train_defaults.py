"""``ehr-fed train logreg`` with its defaults on small sites: succeeds, or says before round 1 why not.

The federations here hold the readmission study's 20 features with every lab partly missing, so the
model has 27 parameters (intercept, 20 features, 6 missing indicators), and a smallest site of 150 rows.
"""

from __future__ import annotations

import stat

import numpy as np
import pandas as pd
import pytest
import yaml

import ehr_fed
from ehr_fed.cli.main import main

PROJECT = __import__("pathlib").Path(__file__).resolve().parents[2]
STUDY = PROJECT / "mappings" / "studies" / "readmission_30d.yaml"
SIZES = (150, 400, 500)


def study_table(site: str, n: int, seed: int, *, separate: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = [f["name"] for f in yaml.safe_load(STUDY.read_text())["features"]]
    cols = {}
    for name in names:
        if name.startswith("cond_") or name == "sex_female":
            cols[name] = (rng.random(n) < 0.3).astype(float)
        elif name.startswith("lab_"):
            cols[name] = np.where(rng.random(n) < 0.2, np.nan, rng.lognormal(0, 0.3, n))
        else:
            cols[name] = rng.poisson(3, n).astype(float)
    cols["age"] = rng.normal(65, 12, n)
    eta = -4 + 0.04 * cols["age"] + 0.2 * cols["los_days"]
    label = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype("int8")
    if separate:  # creatinine is missing only for patients without the event: its indicator separates
        cols["lab_creatinine"] = np.where((label == 0) & (rng.random(n) < 0.3), np.nan,
                                          rng.lognormal(0, 0.3, n))
    meta = {"site_id": site, "person_key": [f"{seed:02x}{i:014x}" for i in range(n)],
            "index_time": pd.Timestamp("2022-01-01"), "label": label}
    return pd.DataFrame({**meta, **cols})


def write_federation(root, *, privacy=None, separate=False):
    sites = []
    for i, n in enumerate(SIZES):
        sid = f"site_{'abc'[i]}"
        study_table(sid, n, 70 + i, separate=separate).to_parquet(root / f"{sid}.parquet", index=False)
        sites.append({"id": sid, "table": f"{sid}.parquet"})
    cfg = {"study": str(STUDY), "sites": sites, "transport": {"kind": "in_process"}}
    if privacy is not None:
        cfg["privacy"] = privacy
    path = root / "federation.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(capsys, fed, out, *extra):
    rc = main(["train", "logreg", "--federation", str(fed), "--out", str(out), "--plaintext", *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_defaults_train_27_parameters_on_a_site_of_150_rows(tmp_path, capsys):
    fed = write_federation(tmp_path)  # no privacy section: the default policy
    out = tmp_path / "m.json"
    rc, stdout, err = train(capsys, fed, out)
    assert rc == 0, err
    assert "penalty l2, C=1" in err and "converged" in err
    model = ehr_fed.load_model(out)
    assert len(model.terms_) + 1 == 27 and model.n_samples_ == sum(SIZES)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_a_site_too_small_for_the_model_is_named_before_round_1(tmp_path, capsys):
    fed = write_federation(tmp_path, privacy={"max_params_fraction": 0.1})
    rc, _, err = train(capsys, fed, tmp_path / "m.json")
    assert rc == 1
    assert "round   1" not in err  # refused by the pre-flight check, not in the middle of training
    assert "1 site(s) would refuse this logistic regression before round 1" in err
    assert ("site site_a refuses task 'logreg.newton': 27 model parameters exceed max_params_fraction=0.1 x "
            "150 rows = 15 (it would need max_params_fraction >= 0.18, or 270 rows)") in err
    assert "site_b" not in err and "site_c" not in err
    assert "--features" in err and "privacy.max_params_fraction" in err
    assert not (tmp_path / "m.json").exists()


def test_a_site_below_min_cell_count_rows_is_not_told_exactly(tmp_path, capsys):
    fed = write_federation(tmp_path, privacy={"max_params_fraction": 0.1, "min_cell_count": 200})
    rc, _, err = train(capsys, fed, tmp_path / "m.json")
    assert rc == 1 and "150" not in err
    assert "site site_a refuses task 'logreg.newton': 27 model parameters exceed max_params_fraction=0.1 x its " \
           "rows, fewer than its min_cell_count=200 (the exact count is not released)" in err


def test_separation_is_found_up_front_with_the_terms_and_the_flag(tmp_path, capsys):
    fed = write_federation(tmp_path, separate=True)
    rc, _, err = train(capsys, fed, tmp_path / "m.json", "--penalty", "none")
    assert rc == 1 and "round   1" not in err
    assert "Perfect separation: the term(s) ['missing_lab_creatinine']" in err
    assert "train with --penalty l2 (--C sets its strength)" in err and "penalty='l2'" not in err
    rc, _, err = train(capsys, fed, tmp_path / "m.json")  # the default penalty keeps the estimate finite
    assert rc == 0, err


def test_an_existing_model_is_kept_unless_force(tmp_path, capsys):
    fed = write_federation(tmp_path)
    out = tmp_path / "m.json"
    out.write_text("previous model\n")
    rc, _, err = train(capsys, fed, out, "--features", "age,los_days")
    assert rc == 2 and "pass --force to overwrite the model file" in err
    assert out.read_text() == "previous model\n"
    rc, _, err = train(capsys, fed, out, "--features", "age,los_days", "--force")
    assert rc == 0, err
    assert list(ehr_fed.load_model(out).terms_) == ["age", "los_days"]


@pytest.mark.parametrize("seed", [6])
def test_defaults_succeed_on_a_synthetic_federation(tmp_path, capsys, seed):
    """``ehr-fed synth`` with its defaults, then ``ehr-fed train logreg`` with its defaults (plaintext sums
    to keep the test fast; the disclosure checks are the same)."""
    out = tmp_path / "fed"
    assert main(["synth", "--out", str(out), "--seed", str(seed), "--no-progress"]) == 0
    assert "max_params_fraction: 0.33" in (out / "federation.yaml").read_text()
    capsys.readouterr()
    rc, _, err = train(capsys, out / "federation.yaml", tmp_path / "m.json")
    assert rc == 0, err
    assert main(["synth", "--out", str(out), "--seed", str(seed), "--no-progress"]) == 2
    assert "pass --force to replace it" in capsys.readouterr().err

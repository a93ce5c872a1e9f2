"""``ehr-fed train logreg`` and ``ehr-fed evaluate`` with their defaults on small sites: they succeed, or say
before round 1 why not.

The federations here hold the readmission study's 20 features with every lab partly missing, so the
model has 27 parameters (intercept, 20 features, 6 missing indicators), and a smallest site of 150 rows
(100 rows where the held-out split has to shrink).
"""

from __future__ import annotations

import json
import re
import stat
from html import unescape

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


def write_federation(root, *, privacy=None, separate=False, sizes=SIZES):
    sites = []
    for i, n in enumerate(sizes):
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


def evaluate(capsys, fed, model, root, *extra):
    rc = main(["evaluate", "--federation", str(fed), "--model", str(model), "--out", str(root / "r.html"),
               "--json", str(root / "r.json"), "--plaintext", "--no-local-only", "--bins", "1000", *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def split_sizes(fed_yaml, fraction):
    """Training rows per site of the person split at ``fraction`` (as ``ehr-fed evaluate`` draws it)."""
    from ehr_fed.cli.validation import held_out

    root = fed_yaml.parent
    tables = {s["id"]: pd.read_parquet(root / s["table"]) for s in yaml.safe_load(fed_yaml.read_text())["sites"]}
    return {sid: int((~held_out(t, fraction)).sum()) for sid, t in tables.items()}


def test_default_evaluate_refits_on_70_percent_at_a_site_of_150_rows(tmp_path, capsys):
    fed = write_federation(tmp_path)
    assert train(capsys, fed, tmp_path / "m.json")[0] == 0
    assert min(split_sizes(fed, 0.3).values()) >= 82  # 27 parameters <= 0.33 x 82 rows
    rc, stdout, err = evaluate(capsys, fed, tmp_path / "m.json", tmp_path)
    assert rc == 0, err
    assert "note:" not in err
    validation = json.loads((tmp_path / "r.json").read_text())["validation"]
    assert validation["scheme"] == "split" and validation["test_fraction"] == 0.3 and "note" not in validation
    assert validation["train_rows"] == sum(split_sizes(fed, 0.3).values())
    n_test = sum(SIZES) - validation["train_rows"]
    assert f"evaluated on: split ({n_test} index events)" in stdout
    counts = dict(re.findall(r"^(index events|positives) +(\S+)$", stdout, re.M))
    assert counts["index events"] == str(n_test) and counts["positives"].isdigit()  # counts print as integers
    assert re.search(r"^AUC \(c-statistic\) +0\.\d{4}$", stdout, re.M)


def test_default_evaluate_holds_out_fewer_persons_when_a_site_is_too_small_and_says_so(tmp_path, capsys):
    """A site of 100 rows trains the 27 parameters (33 allowed), but 70 % of it (about 70 rows) does not:
    the default split holds out the largest share every site's training part accepts, and says so."""
    fed = write_federation(tmp_path, sizes=(100, 400, 500))
    assert train(capsys, fed, tmp_path / "m.json")[0] == 0
    assert split_sizes(fed, 0.3)["site_a"] < 82
    rc, _, err = evaluate(capsys, fed, tmp_path / "m.json", tmp_path)
    assert rc == 0, err
    validation = json.loads((tmp_path / "r.json").read_text())["validation"]
    f = validation["test_fraction"]
    assert 0.1 <= f < 0.3 and round(f, 2) == f
    assert min(split_sizes(fed, f).values()) >= 82 > min(split_sizes(fed, round(f + 0.01, 2)).values())
    note = (f"{f:.0%} of each site's persons held out, not the default 30%: holding out 30% would leave the "
            "training part of site site_a (max_params_fraction=0.33: at least 82 rows) too small for the "
            "refit's 27 model parameters (rule max_params_fraction)")
    assert f"note: {note}" in err and validation["note"] == note
    assert validation["train_rows"] == sum(split_sizes(fed, f).values())
    html = unescape((tmp_path / "r.html").read_text())
    assert f"Evaluated on the held-out {f:.0%} of each site's persons" in html and note in html

    # an explicit --test-fraction is never changed: refused up front, naming the share that works
    rc, _, err = evaluate(capsys, fed, tmp_path / "m.json", tmp_path, "--test-fraction", "0.3")
    assert rc == 1 and "round   1" not in err and "refitting" not in err
    assert ("error: --test-fraction 0.3 would leave the training part of site site_a (max_params_fraction=0.33: "
            "at least 82 rows) too small for the refit's 27 model parameters") in err
    assert f"The largest share that works here is --test-fraction {f:.2f}" in err and "--validation loso" in err
    rc, _, err = evaluate(capsys, fed, tmp_path / "m.json", tmp_path, "--test-fraction", f"{f:.2f}")
    assert rc == 0, err


def test_default_evaluate_refuses_when_no_split_leaves_enough_rows(tmp_path, capsys):
    """A site of 85 rows trains 27 parameters, but even 90 % of it is below 82 rows: no silent in-sample
    fallback, but a message with the flags that work."""
    fed = write_federation(tmp_path, sizes=(85, 400, 500))
    assert train(capsys, fed, tmp_path / "m.json")[0] == 0
    rc, _, err = evaluate(capsys, fed, tmp_path / "m.json", tmp_path)
    assert rc == 1 and not (tmp_path / "r.html").exists()
    assert ("error: the held-out split cannot refit this model: even holding out 10% of each site's persons "
            "would leave the training part of site site_a (max_params_fraction=0.33: at least 82 rows) too "
            "small") in err
    assert "--validation loso" in err and "--features" in err and "privacy.max_params_fraction" in err
    assert "site_b" not in err and "site_c" not in err


@pytest.mark.parametrize("seed", [6, 20])  # 6: the split shrinks to 14 %; 20: it stays at 30 %
def test_defaults_succeed_on_a_synthetic_federation(tmp_path, capsys, seed):
    """``ehr-fed synth`` with its defaults, then ``ehr-fed train logreg`` and ``ehr-fed evaluate`` with their
    defaults (plaintext sums to keep the test fast; the disclosure checks are the same). The full loop over
    seeds 1-20 with encrypted sums is run by hand (docs/operations.md)."""
    out = tmp_path / "fed"
    assert main(["synth", "--out", str(out), "--seed", str(seed), "--no-progress"]) == 0
    assert "max_params_fraction: 0.33" in (out / "federation.yaml").read_text()
    capsys.readouterr()
    rc, _, err = train(capsys, out / "federation.yaml", tmp_path / "m.json")
    assert rc == 0, err
    rc, stdout, err = evaluate(capsys, out / "federation.yaml", tmp_path / "m.json", tmp_path)
    assert rc == 0, err
    assert "evaluated on: split (" in stdout
    assert main(["synth", "--out", str(out), "--seed", str(seed), "--no-progress"]) == 2
    assert "pass --force to replace it" in capsys.readouterr().err

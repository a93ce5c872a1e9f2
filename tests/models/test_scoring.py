"""Batch scoring internals: schema checks with column diffs, stable scores, atomic and idempotent writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ehr_fed.federation import Federation
from ehr_fed.mapping import load_study
from ehr_fed.models import FederatedLogisticRegression, scoring
from ehr_fed.models.scoring import (
    OUTPUT_COLUMNS,
    ScoringSchemaError,
    StudyRequiredError,
    check_schema,
    check_study,
    file_sha256,
    model_version,
    read_scores_metadata,
    resolve_study,
    score_table,
    write_atomically,
)

PROJECT = Path(__file__).resolve().parents[2]
STUDY = PROJECT / "mappings" / "studies" / "readmission_30d.yaml"
FEATURES = ["age", "los_days", "charlson"]


def site_table(site: str, n: int, seed: int) -> pd.DataFrame:
    """A feature table with every column of the readmission study; three informative features."""
    study = load_study(STUDY)
    rng = np.random.default_rng(seed)
    cols = {name: rng.normal(size=n) for name in study.feature_names}
    cols["age"] = rng.normal(65, 12, n)
    cols["los_days"] = rng.exponential(4, n)
    cols["charlson"] = rng.poisson(2, n).astype(float)
    eta = -4 + 0.03 * cols["age"] + 0.1 * cols["los_days"] + 0.3 * cols["charlson"]
    label = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype("int8")
    times = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D")
    meta = {"site_id": site, "person_key": [f"{seed:02x}{i:014x}" for i in range(n)][::-1],
            "index_time": times.astype("datetime64[ns]"), "label": label}
    return pd.DataFrame({**meta, **cols})


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {f"site_{c}": site_table(f"site_{c}", 300, i) for i, c in enumerate("abc")}


@pytest.fixture(scope="module")
def model(tables):
    fed = Federation.in_process(tables, encrypted=False, study=load_study(STUDY))
    return FederatedLogisticRegression(encrypted=False, features=FEATURES).fit(fed)


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "logreg.json"
    model.save(path)
    return path


# -- schema checks ---------------------------------------------------------------------------------------
def test_check_schema_lists_the_missing_features_with_a_column_diff(tables):
    table = tables["site_a"].drop(columns=["los_days"])
    with pytest.raises(ScoringSchemaError, match=r"lacks 1 feature\(s\) the model was trained on: los_days") as err:
        check_schema(table, FEATURES)
    diff = str(err.value)
    assert "--- model features" in diff and "+++ site feature table" in diff
    assert "\n-los_days" in diff


def test_check_schema_accepts_extra_columns_and_checks_dtypes(tables):
    check_schema(tables["site_a"], FEATURES, ["float64"] * 3)
    table = tables["site_a"].astype({"charlson": "int64"})
    with pytest.raises(ScoringSchemaError, match="charlson: model float64, table int64"):
        check_schema(table, FEATURES, ["float64"] * 3)


def test_check_study_rejects_another_study_and_missing_features(model_file):
    doc = json.loads(model_file.read_text())
    study = load_study(STUDY)
    check_study(study, doc)
    other = study.model_copy(update={"study_id": "t2d_progression"})
    with pytest.raises(ScoringSchemaError, match="trained for study 'readmission_30d', but the study spec given "
                                                 "is 't2d_progression'"):
        check_study(other, doc)
    fewer = study.model_copy(update={"features": [f for f in study.features if f.name != "charlson"]})
    with pytest.raises(ScoringSchemaError, match=r"does not declare 1 feature\(s\).*: charlson") as err:
        check_study(fewer, doc)
    assert "\n-charlson" in str(err.value)


def test_resolve_study_requires_a_study_unless_the_model_embeds_one(model_file):
    doc = json.loads(model_file.read_text())
    # a model trained on a federation with a study embeds the whole spec
    assert resolve_study(doc, model_file, None).feature_names == load_study(STUDY).feature_names
    bare = {**doc, "study": None}
    with pytest.raises(StudyRequiredError, match=r"does not embed the study spec .*\(study 'readmission_30d'\): "
                                                 "pass --study FILE"):
        resolve_study(bare, model_file, None)
    assert resolve_study(bare, model_file, STUDY).study_id == "readmission_30d"


def test_model_version_prefers_an_explicit_version():
    assert model_version({"kind": "gbdt", "created": "2025-01-02T03:04:05Z"}) == "gbdt-2025-01-02T03:04:05Z"
    assert model_version({"kind": "gbdt", "created": "x", "model_version": "2.3"}) == "2.3"


# -- scores ----------------------------------------------------------------------------------------------
def test_score_table_is_sorted_and_equals_the_models_probabilities(model, tables):
    table = tables["site_b"]
    out = score_table(model, table, model_sha256="ab" * 32, model_version="v1")
    assert list(out.columns) == OUTPUT_COLUMNS
    assert out["person_key"].is_monotonic_increasing
    expected = pd.Series(model.predict_proba(table[FEATURES])[:, 1], index=table["person_key"])
    np.testing.assert_allclose(out["score"].to_numpy(), expected.loc[out["person_key"]].to_numpy(), rtol=0, atol=0)
    assert set(out["model_sha256"]) == {"ab" * 32} and set(out["model_version"]) == {"v1"}


def test_score_table_of_an_empty_site_has_the_schema_and_no_rows(model, tables):
    out = score_table(model, tables["site_a"].iloc[:0], model_sha256="0", model_version="v")
    assert list(out.columns) == OUTPUT_COLUMNS and len(out) == 0
    assert out["score"].dtype == np.float64


# -- writing ---------------------------------------------------------------------------------------------
@pytest.fixture()
def scores(model, tables):
    return score_table(model, tables["site_c"], model_sha256="cd" * 32, model_version="logreg-1")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_write_is_idempotent_byte_for_byte(scores, tmp_path, suffix):
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    write_atomically(scores, a, {"model_sha256": "cd" * 32})
    write_atomically(scores.copy(), b, {"model_sha256": "cd" * 32})
    assert a.read_bytes() == b.read_bytes()
    back = pd.read_parquet(a) if suffix == ".parquet" else pd.read_csv(a)
    np.testing.assert_array_equal(back["score"].to_numpy(), scores["score"].to_numpy())  # exact round trip
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, b.name])  # no temporary files left


def test_parquet_metadata_carries_the_model_and_no_library_versions(scores, tmp_path, model_file):
    out = tmp_path / "s.parquet"
    write_atomically(scores, out, {"model_sha256": file_sha256(model_file), "model_version": "logreg-1"})
    assert read_scores_metadata(out) == {"model_sha256": file_sha256(model_file), "model_version": "logreg-1"}
    assert b"pandas" not in (pq.read_schema(out).metadata or {})


def test_a_failed_write_leaves_the_previous_output_and_no_partial_file(scores, tmp_path, monkeypatch):
    out = tmp_path / "s.parquet"
    write_atomically(scores, out, {})
    before = out.read_bytes()

    def broken(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(scoring.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(scores.iloc[:3], out, {})
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.parquet"]


def test_output_suffix_is_checked_before_anything_is_read(tmp_path):
    with pytest.raises(ValueError, match=r"must end in .parquet or .csv, got 'scores.json'"):
        scoring.predict_site(tmp_path / "missing.json", source="fhir", input=tmp_path, mapping=tmp_path / "m.yaml",
                             out=tmp_path / "scores.json")

"""Model files carry their training transcript; old and rewritten files load, and sites say why they refuse them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ehr_fed import load_model
from ehr_fed.evaluation import evaluate
from ehr_fed.evaluation.provenance import approved_digest
from ehr_fed.federation.coordinator import FederationError
from ehr_fed.models.persistence import TRAINING_ENCODING, seal_model_document

from .conftest import FEATURES, pooled


def test_a_saved_model_carries_its_transcript_and_a_reload_keeps_it(logreg, tmp_path):
    logreg.save(tmp_path / "m.json")
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["training"]["encoding"] == TRAINING_ENCODING and doc["training"]["kind"] == "logreg"
    loaded = load_model(tmp_path / "m.json")
    assert [r["signature"] for r in loaded.transcript_["transcript"]] == \
        [r["signature"] for r in logreg.transcript_["transcript"]]
    loaded.save(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["training"] == doc["training"]
    assert approved_digest(tmp_path / "again.json") == approved_digest(doc) == approved_digest(logreg)


def test_an_old_model_file_loads_and_predicts_but_is_not_evaluated(plain_fed, tables, logreg, tmp_path):
    logreg.save(tmp_path / "m.json")
    doc = json.loads((tmp_path / "m.json").read_text())
    del doc["training"]  # a file written before model files carried their transcript
    (tmp_path / "old.json").write_text(json.dumps(seal_model_document(doc)))
    old = load_model(tmp_path / "old.json")
    assert not hasattr(old, "transcript_")
    X = pooled(tables)[FEATURES]
    np.testing.assert_array_equal(old.predict_proba(X), logreg.predict_proba(X))
    with pytest.raises(FederationError, match=r"\[model_no_transcript\].*retrain it with this ehr-fed version.*"
                                              r"approved_models"):
        evaluate(plain_fed, tmp_path / "old.json", per_site=False, lace=False)


def test_a_rewritten_training_section_loads_but_is_refused_as_malformed(plain_fed, logreg, tmp_path):
    logreg.save(tmp_path / "m.json")
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["training"]["data"] = {"__nd__": "<f8", "shape": [3], "data": "not base64!"}
    (tmp_path / "bad.json").write_text(json.dumps(seal_model_document(doc)))
    assert not hasattr(load_model(tmp_path / "bad.json"), "transcript_")
    with pytest.raises(FederationError, match=r"\[model_malformed\]"):
        evaluate(plain_fed, tmp_path / "bad.json", per_site=False, lace=False)

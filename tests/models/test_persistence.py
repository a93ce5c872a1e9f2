"""Model files: the versioned JSON envelope and the registry of loaders by kind."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ehr_fed
from ehr_fed.models import persistence
from ehr_fed.models.persistence import ModelFormatError, load_model, register_loader, write_model_document


class _Toy:
    def __init__(self, weights):
        self.weights = weights


@pytest.fixture
def toy_kind():
    @register_loader("toy")
    def _load(doc):
        return _Toy(np.asarray(doc["state"]["weights"], dtype=float))

    yield "toy"
    persistence._LOADERS.pop("toy", None)


def test_write_and_load_through_the_registry(tmp_path, toy_kind):
    path = write_model_document(tmp_path / "sub" / "toy.json", kind=toy_kind, params={"a": 1},
                                state={"weights": np.array([1.5, np.nan, 2.0])},
                                feature_names=["x", "y"], study_id="s1")
    doc = json.loads(path.read_text())  # strict JSON: NaN written as null
    assert doc["state"]["weights"] == [1.5, None, 2.0]
    assert doc["feature_schema"] == [{"name": "x", "dtype": "float64"}, {"name": "y", "dtype": "float64"}]
    assert doc["study_id"] == "s1" and doc["params"] == {"a": 1}
    toy = ehr_fed.load_model(path)
    np.testing.assert_array_equal(toy.weights, [1.5, np.nan, 2.0])
    assert "toy" in persistence.model_kinds() and {"logreg", "gbdt"} <= set(persistence.model_kinds())
    assert not list(path.parent.glob(".toy.json.*"))  # no temporary file left behind


def test_unknown_kind_lists_the_valid_kinds(tmp_path):
    path = write_model_document(tmp_path / "m.json", kind="forest", params={}, state={}, feature_names=[])
    with pytest.raises(ModelFormatError, match=r"unknown model kind 'forest'; valid kinds: \[.*'logreg'"):
        load_model(path)


def test_newer_format_version_asks_for_an_upgrade(tmp_path):
    path = write_model_document(tmp_path / "m.json", kind="logreg", params={}, state={}, feature_names=[])
    doc = json.loads(path.read_text())
    doc["format_version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFormatError, match="model format version 99, this ehr-fed reads versions <= 1; "
                                               "upgrade ehr-fed"):
        load_model(path)


@pytest.mark.parametrize("text, match", [
    ("not json", "is not JSON"),
    ('{"kind": "logreg"}', "is not an ehr-fed model file"),
    ('{"format": "ehr-fed-model", "format_version": 1, "kind": "logreg"}', r"lacks the keys \['feature_schema'"),
])
def test_malformed_files(tmp_path, text, match):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(ModelFormatError, match=match):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        load_model(tmp_path / "nope.json")


def test_load_model_is_lazy_at_package_level():
    import subprocess
    import sys

    code = ("import sys, ehr_fed; assert 'ehr_fed.models' not in sys.modules; "
            "f = ehr_fed.load_model; assert 'ehr_fed.models.persistence' in sys.modules; print(f.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "load_model"

"""A small synthetic federation shared by the synth tests (generated once per session)."""

from __future__ import annotations

import pytest

from ehr_fed.synth import generate_federation


@pytest.fixture(scope="session")
def small_federation(tmp_path_factory):
    """3 hospitals, ~150 patients each, FHIR and OMOP, readmission study."""
    out = tmp_path_factory.mktemp("synth") / "fed"
    return generate_federation(out, n_sites=3, n_patients=150, seed=11, format="both")

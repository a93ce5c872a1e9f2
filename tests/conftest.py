"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite uses 1024-bit Paillier keys to stay fast: the explicit test mode that accepts keys below 2048
# bits (inherited by the site and Flower processes the tests start). Production code refuses them.
os.environ.setdefault("EHR_FED_ALLOW_INSECURE_KEYS", "1")

# Person keys need a per-site secret (there is no fallback): the suite, and the processes it starts, use
# the public test secret explicitly.
os.environ.setdefault("EHR_FED_PERSON_SALT", "ehr-fed-public-test-secret-synthetic-data-only")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public EHR data sets in ../shared/data (read in place, never copied)."""
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA

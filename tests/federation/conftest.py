"""Fixtures for the federation tests."""

from __future__ import annotations

import pytest

from ehr_fed.federation.testing import make_tables


@pytest.fixture
def tables():
    return make_tables()

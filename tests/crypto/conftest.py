"""Session keypairs for the crypto tests (1024-bit, insecure on purpose: keeps the suite fast)."""

from __future__ import annotations

import pytest

from ehr_fed.crypto import generate_keypair


@pytest.fixture(scope="session")
def keypair():
    return generate_keypair(1024, allow_insecure=True)


@pytest.fixture(scope="session")
def public_key(keypair):
    return keypair[0]


@pytest.fixture(scope="session")
def private_key(keypair):
    return keypair[1]


@pytest.fixture(scope="session")
def other_keypair():
    return generate_keypair(1024, allow_insecure=True)

"""The feature table of one site and its summary; person keys.

Person keys
-----------
``person_key = HMAC-SHA256(secret, local person id)`` (first 16 bytes, hex), with a per-site secret that
only the site holds: ``$EHR_FED_PERSON_SALT``. Without the secret nobody can map a local id to its key or
test a guessed id, so a key says nothing outside the site. The secret must be set: there is no fallback
to a public value (a key salted with the site id is reversed by enumerating ids). Tests and the synthetic
demo set the public :data:`TEST_SECRET` explicitly (:func:`use_test_secret`); never use it for real
patients.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

import pandas as pd

#: environment variable holding the site's person-key secret
SALT_ENV = "EHR_FED_PERSON_SALT"
#: the public secret of tests and synthetic data (anyone can recompute these keys: never for real patients)
TEST_SECRET = "ehr-fed-public-test-secret-synthetic-data-only"
#: shortest accepted secret
MIN_SECRET_CHARS = 16


class PersonKeyError(RuntimeError):
    """The site's person-key secret is missing or too short."""


def person_salt(site_id: str) -> str:
    """The site's person-key secret: ``$EHR_FED_PERSON_SALT`` (at least 16 characters).

    Raises
    ------
    PersonKeyError
        When the variable is unset or too short, saying how to set it.
    """
    secret = os.environ.get(SALT_ENV, "")
    if not secret:
        raise PersonKeyError(
            f"site {site_id}: person keys need this site's secret in the environment variable {SALT_ENV} "
            f"(at least {MIN_SECRET_CHARS} characters, kept outside the data, e.g. "
            f"`export {SALT_ENV}=\"$(cat /etc/ehr-fed/person_secret)\"`; generate one with "
            "`python -c 'import secrets; print(secrets.token_hex(32))'`). Synthetic data and tests: call "
            "ehr_fed.cohort.use_test_secret() first"
        )
    if len(secret) < MIN_SECRET_CHARS:
        raise PersonKeyError(
            f"site {site_id}: {SALT_ENV} holds {len(secret)} characters; a person-key secret needs at least "
            f"{MIN_SECRET_CHARS} (generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return secret


def person_key(salt: str, person_id: str) -> str:
    """Hex of the first 16 bytes of HMAC-SHA256(key=salt, message=local person id)."""
    return hmac.new(salt.encode("utf-8"), str(person_id).encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def use_test_secret() -> str:
    """Set ``$EHR_FED_PERSON_SALT`` to :data:`TEST_SECRET` unless a secret is already set; return the secret
    in effect. For tests, notebooks and the demo on synthetic or public data only."""
    os.environ.setdefault(SALT_ENV, TEST_SECRET)
    return os.environ[SALT_ENV]


@dataclass
class FeatureTable:
    """A site's feature table for one study.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per index event: ``site_id, person_key, index_time, label`` then the study's features
        (float64, NaN = missing), sorted by ``person_key, index_time``.
    summary : dict
        ``index_events, positives, persons, quarantined{reason: n}, source_records{type: n},
        exclusions{name: n}``, plus ``site_id`` and ``study_id``.
    quarantine : Quarantine or None
        The rejected records (write them with ``quarantine.write(path)``).
    """

    table: pd.DataFrame
    summary: dict = field(default_factory=dict)
    quarantine: object = None

    def __len__(self) -> int:
        return len(self.table)

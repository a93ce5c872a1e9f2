"""The feature table of one site and its summary."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import pandas as pd

#: environment variable holding the production person-key salt
SALT_ENV = "EHR_FED_PERSON_SALT"


def person_salt(site_id: str) -> str:
    """The salt of person keys: ``$EHR_FED_PERSON_SALT`` when set, else the site id (not secret)."""
    return os.environ.get(SALT_ENV) or site_id


def person_key(salt: str, person_id: str) -> str:
    """Hex of the first 16 bytes of sha256(salt + local person id)."""
    return hashlib.sha256((salt + str(person_id)).encode("utf-8")).hexdigest()[:32]


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

"""OMOP CDM reader: DuckDB files, CSV/Parquet folders and PostgreSQL into record tables.

See ``docs/internals.md`` section 1 for the tables; :class:`OmopOptions` for the ``omop:`` key
of a site mapping.
"""

from ehr_fed.sources.omop.errors import OmopSourceError
from ehr_fed.sources.omop.options import ClinicalTableOptions, OmopOptions, VisitOptions, VocabularyRule
from ehr_fed.sources.omop.reader import read_omop

__all__ = [
    "ClinicalTableOptions",
    "OmopOptions",
    "OmopSourceError",
    "VisitOptions",
    "VocabularyRule",
    "read_omop",
]

"""Options of the OMOP CDM reader (the ``omop:`` key of a site mapping config).

Settings are plain data named after the OMOP CDM fields they select
(``visit_occurrence.visit_source_value``, ``condition_occurrence.condition_source_value``),
so a data engineer can read them against the CDM documentation. ``OmopOptions()`` reads a
standard OMOP CDM 5.3 / 5.4 (and 5.0) database as it is.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: OMOP tables read into the clinical record tables, with the record table they fill
CLINICAL_TABLES: dict[str, str] = {
    "condition_occurrence": "condition",
    "measurement": "measurement",
    "drug_exposure": "medication",
    "procedure_occurrence": "procedure",
}

#: the domain prefix of each clinical table's columns (``condition`` in ``condition_concept_id``)
DOMAIN_PREFIX: dict[str, str] = {
    "condition_occurrence": "condition",
    "measurement": "measurement",
    "drug_exposure": "drug",
    "procedure_occurrence": "procedure",
}

_DEFAULT_TIMES: dict[str, list[str]] = {
    "condition_occurrence": ["condition_start_datetime", "condition_start_date"],
    "measurement": ["measurement_datetime", "measurement_date"],
    "drug_exposure": ["drug_exposure_start_datetime", "drug_exposure_start_date"],
    "procedure_occurrence": ["procedure_datetime", "procedure_date"],
}

_DEFAULT_END_TIMES: dict[str, list[str]] = {
    "drug_exposure": ["drug_exposure_end_datetime", "drug_exposure_end_date"],
}

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_columns(value: list[str]) -> list[str]:
    bad = [c for c in value if not _COLUMN.match(c)]
    if bad:
        raise ValueError(f"{bad} are not column names (letters, digits and '_' only)")
    return [c.lower() for c in value]


class VocabularyRule(BaseModel):
    """Which vocabulary a ``*_source_value`` belongs to.

    A rule matches when every condition it states holds: ``pattern`` (a regular expression
    searched in the trimmed, upper-cased source value) and ``source_concept_id_range``
    (inclusive bounds on the row's ``*_source_concept_id``). The first matching rule wins.

    Examples
    --------
    MIMIC-IV writes ICD-9-CM and ICD-10-CM codes in one column; their source concept ids
    (OMOP ICD9CM concepts 44819xxx-44837xxx) tell them apart::

        {source_concept_id_range: [44819000, 44838000], vocabulary: ICD9CM}
        {pattern: "^[A-Z][0-9][0-9A-Z]", vocabulary: ICD10CM}
    """

    model_config = ConfigDict(extra="forbid")

    vocabulary: str = Field(min_length=1)
    pattern: str | None = None
    source_concept_id_range: tuple[int, int] | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern {value!r} is not a regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _has_condition(self) -> VocabularyRule:
        if self.pattern is None and self.source_concept_id_range is None:
            raise ValueError(
                "a vocabulary rule needs a 'pattern' or a 'source_concept_id_range'; "
                "for a single vocabulary set 'source_vocabulary' instead"
            )
        return self


class ClinicalTableOptions(BaseModel):
    """How one clinical table (``condition_occurrence``, ``measurement``, ...) is read.

    Parameters
    ----------
    code_field : {"concept_id", "source_value"}
        ``concept_id``: ``*_concept_id`` resolved through the ``concept`` table to
        ``vocabulary_id`` / ``concept_code`` (unresolved: ``system='omop'``, ``code`` = the id).
        ``source_value``: the ``*_source_value`` column, trimmed and upper-cased, with its system
        from ``source_vocabulary`` / ``vocabulary_rules``.
    source_vocabulary : str or None
        Vocabulary of every source value (``ICD10CM``); the fallback after ``vocabulary_rules``.
    vocabulary_rules : list of VocabularyRule
        First matching rule gives the vocabulary of a source value.
    time_fields : list of str
        Columns tried in order for the record's (start) time; the first parseable one wins.
    end_time_fields : list of str
        Columns tried in order for the end time (``drug_exposure`` only).
    """

    model_config = ConfigDict(extra="forbid")

    code_field: Literal["concept_id", "source_value"] = "concept_id"
    source_vocabulary: str | None = None
    vocabulary_rules: list[VocabularyRule] = Field(default_factory=list)
    time_fields: list[str] = Field(default_factory=list)
    end_time_fields: list[str] = Field(default_factory=list)

    @field_validator("time_fields", "end_time_fields")
    @classmethod
    def _column_names(cls, value: list[str]) -> list[str]:
        return _check_columns(value)

    @model_validator(mode="after")
    def _vocabulary_declared(self) -> ClinicalTableOptions:
        if self.code_field == "source_value" and not (self.source_vocabulary or self.vocabulary_rules):
            raise ValueError(
                "code_field 'source_value' needs 'source_vocabulary' (e.g. ICD10CM) or "
                "'vocabulary_rules' to say which vocabulary the source values are in"
            )
        return self


def _clinical(table: str) -> ClinicalTableOptions:
    return ClinicalTableOptions(
        time_fields=list(_DEFAULT_TIMES[table]), end_time_fields=list(_DEFAULT_END_TIMES.get(table, []))
    )


class VisitOptions(BaseModel):
    """How ``visit_occurrence`` is read.

    Parameters
    ----------
    start_time_fields, end_time_fields : list of str
        Columns tried in order; the first parseable one wins (columns a CDM version lacks,
        such as ``visit_start_datetime`` in CDM 5.0, are skipped).
    priority_field : str or None
        A concept id column whose value becomes ``visit.priority`` as
        ``omop:<column>|<concept id>`` (MIMIC: ``visit_source_concept_id`` holds the admission
        type such as ELECTIVE). ``None``: priority stays NULL.
    """

    model_config = ConfigDict(extra="forbid")

    start_time_fields: list[str] = Field(default_factory=lambda: ["visit_start_datetime", "visit_start_date"])
    end_time_fields: list[str] = Field(default_factory=lambda: ["visit_end_datetime", "visit_end_date"])
    priority_field: str | None = None

    @field_validator("start_time_fields", "end_time_fields")
    @classmethod
    def _column_names(cls, value: list[str]) -> list[str]:
        return _check_columns(value)

    @field_validator("priority_field")
    @classmethod
    def _priority_column(cls, value: str | None) -> str | None:
        return None if value is None else _check_columns([value])[0]


class OmopOptions(BaseModel):
    """How to read an OMOP CDM source (DuckDB file, CSV/Parquet folder or PostgreSQL).

    Parameters
    ----------
    schema : str or None
        Database schema holding the CDM tables (DuckDB file or PostgreSQL). ``None``: the
        ``?schema=`` of a PostgreSQL URL, else ``public`` (PostgreSQL) / ``main`` (DuckDB), else
        the only schema holding a ``person`` table.
    person_id_field : {"person_id", "person_source_value"}
        Column giving ``person.person_id``. The synthetic hospitals store the FHIR ``Patient.id``
        in ``person_source_value``, so the FHIR and OMOP forms of a site share person keys.
    visit_id_field : {"visit_occurrence_id", "visit_source_value"}
        Column giving ``visit.visit_id`` (and the ``visit_id`` of clinical records).
    visit_occurrence : VisitOptions
    condition_occurrence, measurement, drug_exposure, procedure_occurrence : ClinicalTableOptions
    chunk_rows : int
        Rows per batch when streaming PostgreSQL tables into DuckDB.
    memory_limit : str
        DuckDB memory limit while reading; beyond it DuckDB spills to ``workdir``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    db_schema: str | None = Field(default=None, alias="schema")
    person_id_field: Literal["person_id", "person_source_value"] = "person_id"
    visit_id_field: Literal["visit_occurrence_id", "visit_source_value"] = "visit_occurrence_id"
    visit_occurrence: VisitOptions = Field(default_factory=VisitOptions)
    condition_occurrence: ClinicalTableOptions = Field(
        default_factory=lambda: _clinical("condition_occurrence")
    )
    measurement: ClinicalTableOptions = Field(default_factory=lambda: _clinical("measurement"))
    drug_exposure: ClinicalTableOptions = Field(default_factory=lambda: _clinical("drug_exposure"))
    procedure_occurrence: ClinicalTableOptions = Field(
        default_factory=lambda: _clinical("procedure_occurrence")
    )
    chunk_rows: int = Field(default=50_000, ge=1)
    memory_limit: str = "1GB"

    @field_validator("db_schema")
    @classmethod
    def _schema_name(cls, value: str | None) -> str | None:
        if value is not None and not _COLUMN.match(value):
            raise ValueError(f"schema {value!r} is not a plain identifier (letters, digits, '_')")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", value.strip(), flags=re.IGNORECASE):
            raise ValueError(f"memory_limit {value!r} is not a size such as '512MB' or '2GB'")
        return value.strip()

    @model_validator(mode="after")
    def _default_times(self) -> OmopOptions:
        for table in CLINICAL_TABLES:
            opts: ClinicalTableOptions = getattr(self, table)
            if not opts.time_fields:
                opts.time_fields = list(_DEFAULT_TIMES[table])
            if not opts.end_time_fields and table in _DEFAULT_END_TIMES:
                opts.end_time_fields = list(_DEFAULT_END_TIMES[table])
        return self

    def table(self, name: str) -> ClinicalTableOptions:
        """The options of clinical table ``name`` (``condition_occurrence``, ...)."""
        return getattr(self, name)

"""Options of the FHIR reader (the ``fhir:`` key of a site mapping config).

Settings are plain data named after the FHIR element paths they select
(``Condition.onsetDateTime``, ``Observation.effectiveDateTime``), so a data
engineer can read them against the FHIR R4 specification.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: resource types the reader turns into record tables
RECORD_RESOURCE_TYPES: tuple[str, ...] = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "Procedure",
)

ConditionDate = Literal["onsetDateTime", "onsetPeriod.start", "recordedDate", "encounter.period.start"]
ObservationDate = Literal["effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"]
MedicationDate = Literal["authoredOn", "dispenseRequest.validityPeriod.start"]
ProcedureDate = Literal["performedDateTime", "performedPeriod.start"]


class FhirOptions(BaseModel):
    """How to read a FHIR R4 source.

    The date fields are tried in order; the first one present gives the record's time.
    ``FhirOptions()`` reads Synthea and MIMIC-IV on FHIR as they are.

    Parameters
    ----------
    resource_types : list of str
        Resource types turned into records (a subset of ``Patient, Encounter, Condition,
        Observation, MedicationRequest, Procedure``). Every other resource type is only counted
        in ``source_records`` (``Medication`` is also read to resolve ``medicationReference``).
    condition_date : list of str
        Fields giving ``condition.onset_time``. ``encounter.period.start`` means the start of the
        linked Encounter (MIMIC Conditions carry no date of their own). When none is present the
        onset is NULL (the cohort stage then falls back on the visit start).
    observation_date : list of str
        Fields giving ``measurement.time``.
    medication_date : list of str
        Fields giving ``medication.start_time``; ``medication.end_time`` is
        ``dispenseRequest.validityPeriod.end``.
    procedure_date : list of str
        Fields giving ``procedure.time``.
    observation_components : bool
        Write each ``Observation.component`` with a value as its own measurement row, under the
        component's code (blood pressure panels).
    exclude_files : list of str
        Glob patterns of file names to skip inside a folder (bulk-export server logs, manifests).
    on_missing_patient : {"quarantine", "keep"}
        What to do with a clinical record whose subject Patient is not in the source.
    memory_limit : str
        DuckDB memory limit of the site's record database (reading and the cohort queries); beyond it
        DuckDB spills to ``workdir``. DuckDB's buffer pool fills up to this limit, so it sets the peak
        memory of a large harmonization: with 128MB, 1M and 5M resources peak at 390 and 473 MB RSS.
    large_input_bytes : int
        Inputs larger than this are written to a DuckDB file (in ``workdir`` or a temporary
        directory) rather than kept in memory, and show a progress bar unless told otherwise.
    batch_rows : int
        Rows buffered per table before they are appended to DuckDB as an Arrow batch.
    quarantine_text_limit : int
        At most this many records found bad only after reading (missing patient) get their raw
        text looked up again in the files; the others keep their location only.
    """

    model_config = ConfigDict(extra="forbid")

    resource_types: list[str] = Field(default_factory=lambda: list(RECORD_RESOURCE_TYPES))
    condition_date: list[ConditionDate] = Field(
        default_factory=lambda: ["onsetDateTime", "onsetPeriod.start"]
    )
    observation_date: list[ObservationDate] = Field(
        default_factory=lambda: ["effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"]
    )
    medication_date: list[MedicationDate] = Field(
        default_factory=lambda: ["authoredOn", "dispenseRequest.validityPeriod.start"]
    )
    procedure_date: list[ProcedureDate] = Field(
        default_factory=lambda: ["performedDateTime", "performedPeriod.start"]
    )
    observation_components: bool = True
    exclude_files: list[str] = Field(default_factory=lambda: ["log.ndjson", "log.ndjson.gz"])
    on_missing_patient: Literal["quarantine", "keep"] = "quarantine"
    memory_limit: str = "128MB"
    large_input_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    batch_rows: int = Field(default=50_000, ge=1)
    quarantine_text_limit: int = Field(default=10_000, ge=0)

    @field_validator("resource_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in RECORD_RESOURCE_TYPES]
        if unknown:
            raise ValueError(
                f"resource_types {unknown} are not read into records; "
                f"choose among {list(RECORD_RESOURCE_TYPES)}"
            )
        return value

"""The site mapping config: how one site's local codes map to the standard.

``mappings/sites/synthea_fhir.yaml`` is the reference. The reader options of
the source packages are embedded as the ``fhir:`` and ``omop:`` keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from ehr_fed.sources.fhir.options import FhirOptions
from ehr_fed.sources.omop.options import OmopOptions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class VisitCode(_Strict):
    """A visit class: ``Encounter.class`` system and code (OMOP: ``omop:visit_concept_id`` and the id).

    ``code: "*"`` matches every code of the system.
    """

    system: str
    code: str


class Visits(_Strict):
    """Visit classes per category; a class listed nowhere is ``other``.

    ``emergency_admission`` (class, priority or admit source), ``transfer_dispositions`` and
    ``planned_priorities`` are ``system|code`` strings matched against the visit's fields.
    """

    inpatient: list[VisitCode] = []
    emergency: list[VisitCode] = []
    outpatient: list[VisitCode] = []
    other: list[VisitCode] = []
    emergency_admission: list[str] = []
    transfer_dispositions: list[str] = []
    planned_priorities: list[str] = []


class StandardCode(_Strict):
    vocabulary: str
    code: str


class LocalCode(_Strict):
    """One local code mapped to a standard code, optionally with the unit its values are in."""

    system: str
    code: str
    to: StandardCode
    unit: str | None = None


class SiteMapping(_Strict):
    """A site's mapping config.

    Which source fields carry dates is a reader option: ``fhir.condition_date`` (e.g.
    ``[onsetDateTime, encounter.period.start]``), ``omop.condition_occurrence.time_fields``, ...
    A condition still without a time takes its visit's start in the cohort stage.
    """

    site_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
    source: Literal["fhir", "omop"]
    description: str = ""
    visits: Visits = Visits()
    code_systems: dict[str, str] = {}
    local_codes: list[LocalCode] = []
    units: dict[str, str] = {}
    fhir: FhirOptions | None = None
    omop: OmopOptions | None = None

    @model_validator(mode="after")
    def _check_values(self, info: ValidationInfo) -> SiteMapping:
        if (info.context or {}).get("skip_reference_checks"):
            return self
        from ehr_fed.mapping.checks import site_problems

        problems = site_problems(self.model_dump(mode="python"))
        if problems:
            raise ValueError("; ".join(f"{p.code}: {p.message}" for p in problems))
        return self

    @property
    def reader_options(self):
        """The options for this site's reader (``fhir`` or ``omop``), or None."""
        return self.fhir if self.source == "fhir" else self.omop

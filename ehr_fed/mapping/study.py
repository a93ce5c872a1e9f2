"""The study spec: index event, label, exclusions, windows, concept sets, labs and features.

A study spec is shared by every site of a federation and speaks only standard
vocabularies. ``mappings/studies/readmission_30d.yaml`` is the reference.
Feature kinds are a closed registry (:data:`FEATURE_KINDS`); the cohort stage
maps each kind to its implementation.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

#: vocabularies a concept set may list codes in; ICD codes match by prefix, OMOP ids with descendants
VOCABULARIES: tuple[str, ...] = ("snomed", "icd10cm", "icd10", "icd9cm", "loinc", "rxnorm", "omop")
#: visit categories a site maps its visit classes to
VISIT_CATEGORIES: tuple[str, ...] = ("inpatient", "emergency", "outpatient", "other")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InpatientDischarge(_Strict):
    """Every inpatient stay with an end is an index event; index time = the stay's end."""

    kind: Literal["inpatient_discharge"]


class LabCriterion(_Strict):
    """A lab value in a range: ``min <= value`` (inclusive) and ``value < below`` (exclusive)."""

    lab: str
    min: float | None = None
    below: float | None = None


class FirstFinding(_Strict):
    """Index = a person's first finding: a condition in ``concept_set`` or a lab in range."""

    kind: Literal["first_finding"]
    concept_set: str | None = None
    lab: LabCriterion | None = None


IndexEvent = Annotated[InpatientDischarge | FirstFinding, Field(discriminator="kind")]


class Readmission(_Strict):
    """Label 1 when the person's next inpatient stay starts on/after the index stay's end and
    no more than ``window_days`` after it."""

    kind: Literal["readmission"]
    window_days: int = Field(30, gt=0)


class Progression(_Strict):
    """Label 1 when a condition in ``concept_set`` or a lab in range occurs after the index time and
    no more than ``horizon_years`` after it."""

    kind: Literal["progression"]
    concept_set: str | None = None
    lab: LabCriterion | None = None
    horizon_years: float = Field(3.0, gt=0)


Label = Annotated[Readmission | Progression, Field(discriminator="kind")]

#: which label kinds go with which index event kinds
LABEL_FOR_INDEX = {"inpatient_discharge": "readmission", "first_finding": "progression"}


class Exclusions(_Strict):
    """Opt-in exclusions; each is reported with its count when on."""

    death_during_stay: bool = False
    transfer_out: bool = False
    planned_readmission: bool = False
    min_followup_days: int | None = Field(None, ge=0)
    prior_outcome: bool = False


class QuarantinePolicy(_Strict):
    max_fraction: float = Field(0.05, ge=0, le=1)


class Windows(_Strict):
    prior_inpatient_days: int = Field(365, gt=0)
    prior_ed_days: int = Field(180, gt=0)
    lookback_lab_days: int = Field(365, gt=0)
    active_medication_days: int = Field(90, gt=0)


class ConceptSet(_Strict):
    """Standard codes per vocabulary (ICD: prefixes, dots optional; omop: concept ids with descendants)."""

    snomed: list[str] = []
    icd10cm: list[str] = []
    icd10: list[str] = []
    icd9cm: list[str] = []
    loinc: list[str] = []
    rxnorm: list[str] = []
    omop: list[int] = []


class Lab(_Strict):
    """A lab feature's codes and canonical UCUM unit."""

    loinc: list[str]
    unit: str
    omop: list[int] = []
    analyte: str | None = None


class _Feature(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")


class AgeFeature(_Feature):
    kind: Literal["age"]
    unit: Literal["a"] = "a"


class SexFemaleFeature(_Feature):
    kind: Literal["sex_female"]


class LengthOfStayFeature(_Feature):
    kind: Literal["length_of_stay"]
    unit: Literal["d"] = "d"


class PriorVisitsFeature(_Feature):
    kind: Literal["prior_visits"]
    visit_category: Literal["inpatient", "emergency", "outpatient", "other"]
    window_days: int = Field(gt=0)


class CharlsonFeature(_Feature):
    kind: Literal["charlson"]


class ConditionFlagFeature(_Feature):
    kind: Literal["condition_flag"]
    concept_set: str


class LastLabFeature(_Feature):
    kind: Literal["last_lab"]
    lab: str
    unit: str


class ActiveMedicationsFeature(_Feature):
    kind: Literal["active_medications"]


class LaceFeature(_Feature):
    kind: Literal["lace"]


_FEATURE_MODELS = (
    AgeFeature, SexFemaleFeature, LengthOfStayFeature, PriorVisitsFeature, CharlsonFeature,
    ConditionFlagFeature, LastLabFeature, ActiveMedicationsFeature, LaceFeature,
)
#: the feature kinds a study may use -> their model
FEATURE_KINDS: dict[str, type[_Feature]] = {
    m.model_fields["kind"].annotation.__args__[0]: m for m in _FEATURE_MODELS
}
#: kinds that only make sense when the index event is a stay
STAY_FEATURE_KINDS = ("length_of_stay", "lace")

Feature = Annotated[
    AgeFeature | SexFemaleFeature | LengthOfStayFeature | PriorVisitsFeature | CharlsonFeature | ConditionFlagFeature | LastLabFeature | ActiveMedicationsFeature | LaceFeature,
    Field(discriminator="kind"),
]


class StudySpec(_Strict):
    """A study: who is in the cohort, when, what the label is and which features describe them."""

    study_id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")
    version: int = 1
    description: str = ""
    index_event: IndexEvent
    label: Label
    exclusions: Exclusions = Exclusions()
    quarantine: QuarantinePolicy = QuarantinePolicy()
    windows: Windows = Windows()
    concept_sets: dict[str, ConceptSet] = {}
    labs: dict[str, Lab] = {}
    features: list[Feature] = Field(min_length=1)
    missing_values: Literal["mean_impute_with_indicator", "mean_impute", "native"] = (
        "mean_impute_with_indicator"
    )

    @model_validator(mode="after")
    def _check_references(self, info: ValidationInfo) -> StudySpec:
        # the loader reports these itself, with lines; this guards specs built in Python
        if (info.context or {}).get("skip_reference_checks"):
            return self
        from ehr_fed.mapping.checks import study_problems

        problems = study_problems(self.model_dump(mode="python"))
        if problems:
            raise ValueError("; ".join(f"{p.code}: {p.message}" for p in problems))
        return self

    @property
    def feature_names(self) -> list[str]:
        """Feature column names in study order."""
        return [f.name for f in self.features]

    @property
    def is_stay_study(self) -> bool:
        """True when index events are inpatient stays."""
        return self.index_event.kind == "inpatient_discharge"

"""How reports name what a study measures: display names with units, outcome groups and variable types.

Everything is derived from the study spec (feature kinds, concept sets, labs, windows, units), so a report
reads "Hemoglobin (g/dL)" and "Readmitted within 30 days" instead of ``lab_hemoglobin`` and ``label=1``.
Without a study (a federation of bare tables) the column names are shown as they are.

Variable types choose the Table 1 summary: ``binary`` -> n (%), ``normal`` -> mean (SD), ``skewed`` (counts,
scores, lengths of stay) -> median [IQR].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: display names of the shipped concept sets (others: the set's name with spaces)
CONCEPT_NAMES = {
    "diabetes": "Diabetes", "type2_diabetes": "Type 2 diabetes", "prediabetes": "Prediabetes",
    "heart_failure": "Heart failure", "copd": "COPD", "ckd": "Chronic kidney disease",
    "hypertension": "Hypertension", "cancer": "Cancer",
}
#: display names of the shipped labs (others: the lab's name, capitalised)
LAB_NAMES = {"creatinine": "Creatinine", "hemoglobin": "Hemoglobin", "sodium": "Sodium", "glucose": "Glucose",
             "hba1c": "HbA1c", "egfr": "eGFR"}
#: UCUM units as a reader writes them
UNIT_NAMES = {"a": "years", "d": "days", "mL/min/{1.73_m2}": "mL/min/1.73 m²"}
_VISITS = {"inpatient": "Inpatient stays", "emergency": "ED visits", "outpatient": "Outpatient visits",
           "other": "Other visits"}
#: feature kinds summarised as median [IQR] (counts, scores, durations) and as n (%)
SKEWED_KINDS = ("length_of_stay", "prior_visits", "charlson", "active_medications", "lace")
BINARY_KINDS = ("sex_female", "condition_flag")
#: feature kinds whose values are whole numbers
INTEGER_KINDS = ("prior_visits", "charlson", "active_medications", "lace")


def _features(study: Any) -> dict[str, Any]:
    return {f.name: f for f in getattr(study, "features", None) or [] if not isinstance(f, str)}


def unit(study: Any, name: str) -> str | None:
    """The feature's unit as a reader writes it (``None`` when it has none)."""
    f = _features(study).get(name)
    u = getattr(f, "unit", None)
    return UNIT_NAMES.get(u, u) if u else None


def _base_name(f: Any, study: Any) -> str:
    kind = f.kind
    if kind == "age":
        return "Age"
    if kind == "sex_female":
        return "Female sex"
    if kind == "length_of_stay":
        return "Length of stay"
    if kind == "prior_visits":
        return f"{_VISITS.get(f.visit_category, f.visit_category)}, prior {f.window_days} days"
    if kind == "charlson":
        return "Charlson comorbidity index"
    if kind == "condition_flag":
        return CONCEPT_NAMES.get(f.concept_set, f.concept_set.replace("_", " ").capitalize())
    if kind == "last_lab":
        return LAB_NAMES.get(f.lab, f.lab.replace("_", " ").capitalize())
    if kind == "active_medications":
        days = getattr(getattr(study, "windows", None), "active_medication_days", None)
        return f"Active medications{f', last {days} days' if days else ''}"
    if kind == "lace":
        return "LACE index"
    return f.name


def feature_name(study: Any, name: str, with_unit: bool = True) -> str:
    """Display name of feature ``name``: "Age (years)", "Heart failure", "Hemoglobin (g/dL)"."""
    f = _features(study).get(name)
    if f is None:
        return name
    text = _base_name(f, study)
    u = unit(study, name) if with_unit else None
    return f"{text} ({u})" if u else text


def feature_names(study: Any, names: Sequence[str]) -> dict[str, str]:
    """``{name: display name}`` for every name."""
    return {n: feature_name(study, n) for n in names}


def term_name(study: Any, term: str) -> str:
    """Display name of a model term: a feature, or its missing-value indicator ("Hemoglobin missing")."""
    if term.startswith("missing_") and term[len("missing_"):] in _features(study):
        return f"{feature_name(study, term[len('missing_'):], with_unit=False)} missing"
    return feature_name(study, term)


def variable_type(study: Any, name: str) -> str | None:
    """``binary``, ``skewed`` or ``normal`` from the feature's kind; ``None`` when the study does not say."""
    f = _features(study).get(name)
    if f is None:
        return None
    if f.kind in BINARY_KINDS:
        return "binary"
    return "skewed" if f.kind in SKEWED_KINDS else "normal"


def integer_valued(study: Any, name: str) -> bool:
    """True for counts and scores (quartiles shown as whole numbers)."""
    f = _features(study).get(name)
    return getattr(f, "kind", None) in INTEGER_KINDS


def outcome_names(study: Any) -> tuple[str, str]:
    """(label 0, label 1) as groups: ("Not readmitted", "Readmitted within 30 days")."""
    label = getattr(study, "label", None)
    kind = getattr(label, "kind", None)
    if kind == "readmission":
        return "Not readmitted", f"Readmitted within {label.window_days} days"
    if kind == "progression":
        outcome = CONCEPT_NAMES.get(label.concept_set or "", "the outcome") if label.concept_set else "Outcome"
        years = label.horizon_years
        horizon = f"{years:g} year{'s' if years != 1 else ''}"
        return f"No {outcome[0].lower() + outcome[1:]} within {horizon}", f"{outcome} within {horizon}"
    return "label=0", "label=1"  # no study: the table's own label values


def outcome_name(study: Any) -> str:
    """The outcome in a few words ("readmission within 30 days", "type 2 diabetes within 3 years")."""
    label = getattr(study, "label", None)
    if getattr(label, "kind", None) == "readmission":
        return f"readmission within {label.window_days} days"
    positive = outcome_names(study)[1]
    return positive if positive.startswith("label") else positive[0].lower() + positive[1:]


def study_of(*objects: Any) -> Any:
    """The first study spec found on the objects (``study``, ``study_spec`` or ``study_spec_``), or None."""
    for obj in objects:
        for attr in ("study_spec_", "study_spec", "study"):
            spec = getattr(obj, attr, None)
            if spec is not None and hasattr(spec, "features"):
                return spec
    return None

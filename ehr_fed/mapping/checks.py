"""Cross-reference checks of study specs and site mappings, on plain (YAML) data.

Pydantic checks shapes and types; these check what refers to what (a feature's
concept set, a lab's unit, a code system's vocabulary), so the loader can report
every problem, with its path, in the same pass. They accept partially invalid
data (guarding every access), because they run even when pydantic found problems.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ehr_fed.mapping.problems import suggest
from ehr_fed.mapping.study import LABEL_FOR_INDEX, STAY_FEATURE_KINDS, VOCABULARIES
from ehr_fed.mapping.units import CONVERSIONS, KNOWN_UCUM, conversion_table


@dataclass(frozen=True)
class PathProblem:
    """A problem located by its path in the document (the loader turns paths into lines)."""

    path: tuple
    code: str
    message: str
    fix: str
    key: bool = False


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def study_problems(data: Any) -> list[PathProblem]:
    """Reference problems of a study spec given as plain data."""
    data = _d(data)
    sets = _d(data.get("concept_sets"))
    labs = _d(data.get("labs"))
    out: list[PathProblem] = []
    out += _lab_problems(labs)
    out += _event_problems(data, sets, labs)
    out += _feature_problems(_l(data.get("features")), sets, labs, data)
    return out


def _lab_problems(labs: dict) -> list[PathProblem]:
    out = []
    for name, lab in labs.items():
        lab = _d(lab)
        unit = lab.get("unit")
        if isinstance(unit, str) and unit not in KNOWN_UCUM:
            out.append(PathProblem(("labs", name, "unit"), "unknown_unit",
                                   f"lab {name!r} has unit {unit!r}, which is not a known UCUM unit",
                                   suggest(unit, KNOWN_UCUM)))
        analyte = lab.get("analyte") or name
        if isinstance(unit, str) and unit in KNOWN_UCUM and analyte in CONVERSIONS:
            targets = {c.to_unit for c in CONVERSIONS[analyte]} or {unit}
            if unit not in targets:
                out.append(PathProblem(("labs", name, "unit"), "unknown_unit",
                                       f"lab {name!r}: no conversions to {unit!r} are known for {analyte}",
                                       f"use the canonical unit {sorted(targets)[0]!r}"))
    return out


def _ref(value: Any, valid: dict, path: tuple, what: str) -> list[PathProblem]:
    if value is None or value in valid:
        return []
    return [PathProblem(path, f"unknown_{what}", f"{what.replace('_', ' ')} {value!r} is not defined",
                        suggest(value, valid))]


def _criterion_problems(event: dict, path: tuple, sets: dict, labs: dict) -> list[PathProblem]:
    out = _ref(event.get("concept_set"), sets, path + ("concept_set",), "concept_set")
    lab = event.get("lab")
    if isinstance(lab, dict):
        out += _ref(lab.get("lab"), labs, path + ("lab", "lab"), "lab")
    if event.get("kind") in ("first_finding", "progression") and not event.get("concept_set") and not lab:
        out.append(PathProblem(path, "missing_key", f"{path[0]} of kind {event.get('kind')!r} needs "
                               "'concept_set' or 'lab'", "add a concept_set, a lab criterion, or both"))
    return out


def _event_problems(data: dict, sets: dict, labs: dict) -> list[PathProblem]:
    index, label = _d(data.get("index_event")), _d(data.get("label"))
    out = _criterion_problems(index, ("index_event",), sets, labs)
    out += _criterion_problems(label, ("label",), sets, labs)
    want = LABEL_FOR_INDEX.get(index.get("kind"))
    if want and label.get("kind") in LABEL_FOR_INDEX.values() and label.get("kind") != want:
        out.append(PathProblem(("label", "kind"), "incompatible_label",
                               f"label {label.get('kind')!r} does not go with index event {index.get('kind')!r}",
                               f"use label kind {want!r}"))
    excl = _d(data.get("exclusions"))
    stay = index.get("kind") == "inpatient_discharge"
    for key in ("death_during_stay", "transfer_out", "planned_readmission"):
        if excl.get(key) and not stay:
            out.append(PathProblem(("exclusions", key), "exclusion_not_applicable",
                                   f"exclusion {key!r} needs stay index events (inpatient_discharge)",
                                   "set it to false"))
    if excl.get("prior_outcome") and stay:
        out.append(PathProblem(("exclusions", "prior_outcome"), "exclusion_not_applicable",
                               "exclusion 'prior_outcome' applies to progression labels only", "set it to false"))
    return out


def _feature_problems(features: list, sets: dict, labs: dict, data: dict) -> list[PathProblem]:
    out: list[PathProblem] = []
    names = Counter(f.get("name") for f in features if isinstance(f, dict))
    seen: set = set()
    stay = _d(data.get("index_event")).get("kind") == "inpatient_discharge"
    for i, f in enumerate(features):
        f = _d(f)
        name, kind = f.get("name"), f.get("kind")
        if names.get(name, 0) > 1 and name in seen:
            out.append(PathProblem(("features", i, "name"), "duplicate_name",
                                   f"feature name {name!r} is used more than once", "rename one of them"))
        seen.add(name)
        if kind == "condition_flag":
            out += _ref(f.get("concept_set"), sets, ("features", i, "concept_set"), "concept_set")
        if kind == "last_lab":
            lab = f.get("lab")
            out += _ref(lab, labs, ("features", i, "lab"), "lab")
            lab_unit = _d(labs.get(lab)).get("unit")
            if lab in labs and f.get("unit") is not None and f.get("unit") != lab_unit:
                out.append(PathProblem(("features", i, "unit"), "unit_mismatch",
                                       f"feature {name!r} says unit {f.get('unit')!r} but lab {lab!r} is "
                                       f"in {lab_unit!r}", f"write unit: {lab_unit!r}"))
        if kind in STAY_FEATURE_KINDS and data.get("index_event") and not stay:
            out.append(PathProblem(("features", i, "kind"), "feature_needs_stay",
                                   f"feature kind {kind!r} needs stay index events (inpatient_discharge)",
                                   "remove the feature from this study"))
    return out


#: OMOP vocabulary_id -> vocabulary, used for OMOP sources when code_systems does not list it
OMOP_VOCABULARY_IDS: dict[str, str] = {
    "SNOMED": "snomed", "ICD10CM": "icd10cm", "ICD10": "icd10", "ICD9CM": "icd9cm",
    "LOINC": "loinc", "RxNorm": "rxnorm", "RxNorm Extension": "rxnorm",
}


def site_problems(data: Any) -> list[PathProblem]:
    """Reference problems of a site mapping given as plain data."""
    data = _d(data)
    out: list[PathProblem] = []
    for system, vocab in _d(data.get("code_systems")).items():
        if isinstance(vocab, str) and vocab not in VOCABULARIES:
            out.append(PathProblem(("code_systems", system), "unknown_vocabulary",
                                   f"code system {system!r} maps to unknown vocabulary {vocab!r}",
                                   suggest(vocab, VOCABULARIES)))
    for local, ucum in _d(data.get("units")).items():
        if isinstance(ucum, str) and ucum not in KNOWN_UCUM:
            out.append(PathProblem(("units", local), "unknown_unit",
                                   f"unit {local!r} maps to {ucum!r}, which is not a known UCUM unit",
                                   suggest(ucum, KNOWN_UCUM)))
    out += _local_code_problems(_l(data.get("local_codes")))
    out += _visit_problems(_d(data.get("visits")))
    if "dates" in data:
        out.append(PathProblem(("dates",), "moved_key", "'dates' moved to the reader options",
                               "use fhir: {condition_date: [...], observation_date: [...]} or "
                               "omop: {condition_occurrence: {time_fields: [...]}}", key=True))
    return out


def _local_code_problems(codes: list) -> list[PathProblem]:
    out = []
    seen: dict = {}
    for i, entry in enumerate(codes):
        entry = _d(entry)
        key = (entry.get("system"), entry.get("code"))
        if key in seen:
            out.append(PathProblem(("local_codes", i), "duplicate_name",
                                   f"local code {key[0]}|{key[1]} is mapped twice (also entry {seen[key]})",
                                   "keep one mapping per local code"))
        seen.setdefault(key, i)
        vocab = _d(entry.get("to")).get("vocabulary")
        if isinstance(vocab, str) and vocab not in VOCABULARIES:
            out.append(PathProblem(("local_codes", i, "to", "vocabulary"), "unknown_vocabulary",
                                   f"unknown vocabulary {vocab!r}", suggest(vocab, VOCABULARIES)))
        unit = entry.get("unit")
        if isinstance(unit, str) and unit not in KNOWN_UCUM:
            out.append(PathProblem(("local_codes", i, "unit"), "unknown_unit",
                                   f"unit {unit!r} is not a known UCUM unit", suggest(unit, KNOWN_UCUM)))
    return out


def _visit_problems(visits: dict) -> list[PathProblem]:
    out = []
    seen: dict = {}
    for category in ("inpatient", "emergency", "outpatient", "other"):
        for i, vc in enumerate(_l(visits.get(category))):
            vc = _d(vc)
            key = (vc.get("system"), vc.get("code"))
            if key in seen and seen[key] != category:
                out.append(PathProblem(("visits", category, i), "duplicate_name",
                                       f"visit class {key[0]}|{key[1]} is listed under {seen[key]!r} and "
                                       f"{category!r}", "list each visit class under one category"))
            seen.setdefault(key, category)
    for key in ("emergency_admission", "transfer_dispositions", "planned_priorities"):
        for i, value in enumerate(_l(visits.get(key))):
            if isinstance(value, str) and "|" not in value:
                out.append(PathProblem(("visits", key, i), "invalid_value",
                                       f"{value!r} is not of the form system|code",
                                       "write the code system URL, a '|' and the code"))
    return out


def lab_units(lab_name: str, lab: Any) -> list[str]:
    """Units accepted for a study lab (its canonical unit first)."""
    return list(conversion_table(lab.analyte or lab_name, lab.unit))

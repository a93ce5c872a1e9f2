"""Per-resource extraction of the record-table fields into staging rows.

Each extractor reads one resource (a dict from orjson) and returns the staging rows it
gives, as ``(table, row)`` pairs in :func:`ehr_fed.sources.fhir.staging.staging_columns`
order without the trailing ``_src, _pos``; times are microseconds since 1970 (naive UTC), dates
days since 1970, as Arrow takes them. It computes every value before returning, so a
resource that fails a check gives no row at all. Failures raise
:class:`~ehr_fed.sources.fhir.fields.InvalidResource` or
:class:`~ehr_fed.sources.fhir.fields.ResourceBadDate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ehr_fed.sources.fhir.dates import US_PER_DAY
from ehr_fed.sources.fhir.fields import (
    InvalidResource,
    coding,
    coding_text,
    obj,
    period,
    reference,
    string,
    when,
)
from ehr_fed.sources.fhir.options import FhirOptions

SEXES = {"female", "male", "other", "unknown"}


@dataclass
class Context:
    """What an extractor needs besides the resource."""

    options: FhirOptions
    known: frozenset[str] = field(default_factory=frozenset)
    times: dict[str, tuple] = field(init=False)

    def __post_init__(self) -> None:
        o = self.options
        cond = list(o.condition_date)
        k = cond.index("encounter.period.start") if "encounter.period.start" in cond else len(cond)
        self.times = {
            "condition": _time_getters("Condition", cond[:k]),
            "condition_fallback": _time_getters("Condition", cond[k + 1 :]),
            "observation": _time_getters("Observation", o.observation_date),
            "medication": _time_getters("MedicationRequest", o.medication_date),
            "procedure": _time_getters("Procedure", o.procedure_date),
        }


def _subject(res: dict, rtype: str, refs) -> str:
    pid = reference(res, f"{rtype}.subject", "subject", refs)
    if pid is None:
        raise InvalidResource(
            f"{rtype} has no subject reference; every {rtype} must name its Patient (subject.reference)"
        )
    return pid


def _time_getters(rtype: str, fields: list[str]) -> tuple:
    """``(key, part, path)`` per date field: ``part`` None for a plain element, 0/1 for a Period's
    start/end, ``"validity"`` for ``dispenseRequest.validityPeriod.start``."""
    out = []
    for name in fields:
        head, _, tail = name.partition(".")
        if head == "dispenseRequest":
            out.append((head, "validity", f"{rtype}.dispenseRequest.validityPeriod"))
        elif tail:
            out.append((head, 0 if tail == "start" else 1, f"{rtype}.{head}"))
        else:
            out.append((head, None, f"{rtype}.{head}"))
    return tuple(out)


def _first_time(res: dict, getters: tuple) -> int | None:
    """The first present date among ``getters`` (see :func:`_time_getters`)."""
    for key, part, path in getters:
        if key not in res:
            continue
        if part is None:
            t = when(res, path, key)
        elif part == "validity":
            dr = obj(res, path, key) or {}
            t = period(dr, path, "validityPeriod")[0]
        else:
            t = period(res, path, key)[part]
        if t is not None:
            return t
    return None


def patient(res: dict, refs, ctx: Context) -> list[tuple[str, tuple]]:
    gender = string(res, "Patient.gender", "gender")
    sex = gender if gender in SEXES else "unknown"
    birth = when(res, "Patient.birthDate", "birthDate")
    death = when(res, "Patient.deceasedDateTime", "deceasedDateTime")
    return [("person", (res["id"], birth // US_PER_DAY if birth is not None else None, sex, death))]


def encounter(res: dict, refs, ctx: Context) -> list[tuple[str, tuple]]:
    known = ctx.known
    pid = _subject(res, "Encounter", refs)
    start, end = period(res, "Encounter.period", "period")
    cls = res.get("class")
    if isinstance(cls, list):  # R5: class is a list of CodeableConcept
        cls = cls[0] if cls else None
        cls = (cls or {}).get("coding", [None])[0] if isinstance(cls, dict) else cls
    if cls is not None and not isinstance(cls, dict):
        raise InvalidResource(f"Encounter.class must be a Coding object, got {cls!r:.80}")
    cls = cls or {}
    class_system, class_code = cls.get("system"), cls.get("code")
    hosp = obj(res, "Encounter.hospitalization", "hospitalization") or {}
    admit = coding_text(hosp.get("admitSource"), "Encounter.hospitalization.admitSource", known)
    disp = coding_text(
        hosp.get("dischargeDisposition"), "Encounter.hospitalization.dischargeDisposition", known
    )
    priority = coding_text(res.get("priority"), "Encounter.priority", known)
    part_of = reference(res, "Encounter.partOf", "partOf", refs)
    row = (res["id"], pid, start, end, class_system, class_code, admit, disp, priority, part_of)
    return [("visit", row)]


def condition(res: dict, refs, ctx: Context) -> list[tuple[str, tuple]]:
    pid = _subject(res, "Condition", refs)
    vid = reference(res, "Condition.encounter", "encounter", refs)
    onset = _first_time(res, ctx.times["condition"])
    fallback = _first_time(res, ctx.times["condition_fallback"])
    system, code = coding(res.get("code"), "Condition.code", ctx.known)
    return [("condition", (pid, vid, onset, system, code, None, fallback))]


def _quantity(q, path: str) -> tuple[float | None, str | None]:
    if q is None:
        return None, None
    if not isinstance(q, dict):
        raise InvalidResource(f"{path} must be a Quantity object, got {q!r:.80}")
    value = q.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise InvalidResource(f"{path}.value must be a number, got {value!r:.80}")
    unit = q.get("code") if q.get("system") == "http://unitsofmeasure.org" else None
    unit = unit or q.get("unit") or q.get("code")
    if unit is not None and not isinstance(unit, str):
        raise InvalidResource(f"{path}.unit must be a string, got {unit!r:.80}")
    return (float(value) if value is not None else None), unit


def observation(res: dict, refs, ctx: Context) -> list[tuple[str, tuple]]:
    pid = _subject(res, "Observation", refs)
    vid = reference(res, "Observation.encounter", "encounter", refs)
    t = _first_time(res, ctx.times["observation"])
    if res.get("code") is None:
        raise InvalidResource("Observation has no code (Observation.code is required)")
    system, code = coding(res["code"], "Observation.code", ctx.known)
    value, unit = _quantity(res.get("valueQuantity"), "Observation.valueQuantity")
    rows = [("measurement", (pid, vid, t, system, code, None, value, unit))]
    components = res.get("component") if ctx.options.observation_components else None
    if components:
        if not isinstance(components, list):
            raise InvalidResource("Observation.component must be an array")
        for i, comp in enumerate(components):
            path = f"Observation.component[{i}]"
            if not isinstance(comp, dict):
                raise InvalidResource(f"{path} must be an object")
            cvalue, cunit = _quantity(comp.get("valueQuantity"), f"{path}.valueQuantity")
            if cvalue is None:
                continue
            csys, ccode = coding(comp.get("code"), f"{path}.code", ctx.known)
            rows.append(("measurement", (pid, vid, t, csys, ccode, None, cvalue, cunit)))
    return rows


def medication_request(res: dict, refs, ctx: Context) -> list[tuple[str, tuple]]:
    pid = _subject(res, "MedicationRequest", refs)
    vid = reference(res, "MedicationRequest.encounter", "encounter", refs)
    start = _first_time(res, ctx.times["medication"])
    dr = obj(res, "MedicationRequest.dispenseRequest", "dispenseRequest") or {}
    end = period(dr, "MedicationRequest.dispenseRequest.validityPeriod", "validityPeriod")[1]
    status = string(res, "MedicationRequest.status", "status")
    med_ref = None
    if res.get("medicationCodeableConcept") is not None:
        system, code = coding(
            res["medicationCodeableConcept"], "MedicationRequest.medicationCodeableConcept", ctx.known
        )
    elif res.get("medicationReference") is not None:
        system, code = _medication_reference(res, refs, ctx)
        if system is None and code is None:
            med_ref = reference(res, "MedicationRequest.medicationReference", "medicationReference", refs)
    else:
        raise InvalidResource(
            "MedicationRequest has neither medicationCodeableConcept nor medicationReference"
        )
    return [("medication", (pid, vid, start, end, system, code, None, status, med_ref))]


def _medication_reference(res: dict, refs, ctx: Context) -> tuple[str | None, str | None]:
    """A ``#id`` reference to a contained Medication is resolved here; others after reading."""
    ref = obj(res, "MedicationRequest.medicationReference", "medicationReference") or {}
    target = ref.get("reference")
    if isinstance(target, str) and target.startswith("#"):
        for c in res.get("contained") or []:
            if isinstance(c, dict) and c.get("id") == target[1:]:
                return coding(c.get("code"), "MedicationRequest.contained.code", ctx.known)
        raise InvalidResource(f"medicationReference {target} names no contained resource")
    return None, None


def medication(res: dict, refs, ctx: Context) -> list[tuple[str, tuple]]:
    system, code = coding(res.get("code"), "Medication.code", ctx.known)
    return [("_med_codes", (res["id"], system, code))]


def procedure(res: dict, refs, ctx: Context) -> list[tuple[str, tuple]]:
    pid = _subject(res, "Procedure", refs)
    vid = reference(res, "Procedure.encounter", "encounter", refs)
    t = _first_time(res, ctx.times["procedure"])
    system, code = coding(res.get("code"), "Procedure.code", ctx.known)
    return [("procedure", (pid, vid, t, system, code, None))]


EXTRACTORS = {
    "Patient": patient,
    "Encounter": encounter,
    "Condition": condition,
    "Observation": observation,
    "MedicationRequest": medication_request,
    "Procedure": procedure,
}


def extractors_for(options: FhirOptions) -> dict:
    """Extractors of the chosen resource types (plus Medication when MedicationRequest is read)."""
    chosen = {t: EXTRACTORS[t] for t in options.resource_types}
    if "MedicationRequest" in chosen:
        chosen["Medication"] = medication
    return chosen

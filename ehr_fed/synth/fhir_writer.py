"""Write simulated patients as FHIR R4 bulk NDJSON.gz, one file per resource type.

Timestamps carry the site's UTC offset (``2019-03-04T09:15:00-05:00``); the gzip header
holds no time and no file name, so the files are byte-identical for a seed.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import orjson

from ehr_fed.synth.codes import DRUGS, ETHNICITIES, PROCEDURES, RACES, RXNORM, SNOMED, UCUM
from ehr_fed.synth.patients import PERIOD_END, Patient
from ehr_fed.synth.profiles import SiteProfile
from ehr_fed.synth.sitecodes import LOCAL_SPELLING, dx_coding, lab_coding

#: the resource types written, in file order
RESOURCE_TYPES = ("Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "Procedure")

_CLINICAL = {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
_VERIFIED = {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}
_DX_CATEGORY = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                             "code": "encounter-diagnosis"}]}]
_LAB_CATEGORY = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "laboratory"}]}]
_ADMIT_EMD = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": "emd"}]}
_ADMIT_PSYCH = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": "psych"}]}
_US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-"
_OMB = "urn:oid:2.16.840.1.113883.6.238"


def us_core_extensions(race: str, ethnicity: str) -> list[dict]:
    """US Core race and ethnicity extensions (OMB categories) of a Patient."""
    out = []
    for kind, (_, code, display) in (("race", RACES[race]), ("ethnicity", ETHNICITIES[ethnicity])):
        out.append({"url": f"{_US_CORE}{kind}", "extension": [
            {"url": "ombCategory", "valueCoding": {"system": _OMB, "code": code, "display": display}},
            {"url": "text", "valueString": display}]})
    return out
_HOME = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition", "code": "home"}]}


class TimeFormat:
    """Format UTC seconds as FHIR dateTime in a fixed UTC offset."""

    def __init__(self, tz_minutes: int):
        self.shift = tz_minutes * 60
        if tz_minutes == 0:
            self.suffix = "Z"
        else:
            sign = "-" if tz_minutes < 0 else "+"
            m = abs(tz_minutes)
            self.suffix = f"{sign}{m // 60:02d}:{m % 60:02d}"

    def __call__(self, ts: int) -> str:
        t = time.gmtime(ts + self.shift)
        return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}{self.suffix}")


def birth_date(ts: int) -> str:
    t = time.gmtime(ts)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"


class FhirWriter:
    """Streams patients into ``<folder>/<Type>.000.ndjson.gz``."""

    def __init__(self, folder: Path, profile: SiteProfile, compresslevel: int = 3):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        self.fmt = TimeFormat(profile.tz_minutes)
        self._files = {
            rt: gzip.GzipFile(filename="", mode="wb", compresslevel=compresslevel, mtime=0,
                              fileobj=open(self.folder / f"{rt}.000.ndjson.gz", "wb"))
            for rt in RESOURCE_TYPES
        }
        self._buf: dict[str, list[bytes]] = {rt: [] for rt in RESOURCE_TYPES}
        self.counts = dict.fromkeys(RESOURCE_TYPES, 0)

    def add(self, p: Patient, ids) -> None:
        """Append one patient's resources; ``ids(kind, n)`` gives resource ids."""
        fmt, prof, buf = self.fmt, self.profile, self._buf
        dumps = orjson.dumps
        subject = {"reference": f"Patient/{p.key}"}
        pat = {"resourceType": "Patient", "id": p.key,
               "identifier": [{"system": f"urn:oid:2.16.840.1.113883.3.9999.{prof.index + 1}.2",
                               "value": p.key[:8].upper()}],
               "gender": "female" if p.female else "male", "birthDate": birth_date(p.birth),
               "extension": us_core_extensions(p.race, p.ethnicity)}
        if p.death is not None:
            pat["deceasedDateTime"] = fmt(p.death)
        buf["Patient"].append(dumps(pat))
        enc_ids = ids("Encounter", len(p.visits))
        vis = prof.visits
        cls_code = {"IP": vis.inpatient, "ED": vis.emergency, "OP": vis.outpatient}
        for v, eid in zip(p.visits, enc_ids, strict=True):
            enc = {"resourceType": "Encounter", "id": eid, "status": "finished",
                   "class": {"system": vis.system, "code": cls_code[v.kind]},
                   "subject": subject, "period": {"start": fmt(v.start), "end": fmt(v.end)}}
            if v.reason is not None:
                system, code, display = dx_coding(prof, v.reason)
                enc["reasonCode"] = [{"coding": [{"system": system, "code": code, "display": display}]}]
            if v.kind == "IP":
                enc["hospitalization"] = {"admitSource": _ADMIT_EMD if v.emergency else _ADMIT_PSYCH,
                                          "dischargeDisposition": _HOME}
            buf["Encounter"].append(dumps(enc))
        ref = [{"reference": f"Encounter/{eid}"} for eid in enc_ids]
        for (key, onset, v), rid in zip(p.conditions, ids("Condition", len(p.conditions)), strict=True):
            system, code, display = dx_coding(prof, key)
            buf["Condition"].append(dumps({
                "resourceType": "Condition", "id": rid, "clinicalStatus": {"coding": [_CLINICAL]},
                "verificationStatus": {"coding": [_VERIFIED]}, "category": _DX_CATEGORY,
                "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
                "subject": subject, "encounter": ref[v.index], "onsetDateTime": fmt(onset),
                "recordedDate": fmt(max(onset, v.start))}))
        for (lab, t, v, _, value), rid in zip(p.labs, ids("Observation", len(p.labs)), strict=True):
            system, code, display, unit, _ = lab_coding(prof, lab)
            quantity = {"value": value}
            if prof.lab_coding == "loinc_local_units":
                quantity["unit"] = LOCAL_SPELLING.get(unit, unit)
            else:
                quantity.update(unit=unit, system=UCUM, code=unit)
            buf["Observation"].append(dumps({
                "resourceType": "Observation", "id": rid, "status": "final", "category": _LAB_CATEGORY,
                "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
                "subject": subject, "encounter": ref[v.index], "effectiveDateTime": fmt(t),
                "valueQuantity": quantity}))
        for (drug, start, end, v), rid in zip(p.drugs, ids("MedicationRequest", len(p.drugs)), strict=True):
            d = DRUGS[drug]
            buf["MedicationRequest"].append(dumps({
                "resourceType": "MedicationRequest", "id": rid,
                "status": "active" if end > PERIOD_END else "completed", "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": d.rxnorm, "display": d.display}],
                                              "text": d.display},
                "subject": subject, "encounter": ref[v.index], "authoredOn": fmt(start),
                "dispenseRequest": {"validityPeriod": {"start": fmt(start), "end": fmt(end)}}}))
        for (proc, t, v), rid in zip(p.procedures, ids("Procedure", len(p.procedures)), strict=True):
            pr = PROCEDURES[proc]
            buf["Procedure"].append(dumps({
                "resourceType": "Procedure", "id": rid, "status": "completed",
                "code": {"coding": [{"system": SNOMED, "code": pr.snomed, "display": pr.display}], "text": pr.display},
                "subject": subject, "encounter": ref[v.index], "performedDateTime": fmt(t)}))

    def flush(self) -> None:
        for rt, lines in self._buf.items():
            if lines:
                self._files[rt].write(b"\n".join(lines) + b"\n")
                self.counts[rt] += len(lines)
                lines.clear()

    def close(self) -> None:
        self.flush()
        for f in self._files.values():
            raw = f.fileobj
            f.close()
            raw.close()

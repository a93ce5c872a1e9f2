"""Small FHIR R4 resources and writers for the FHIR reader tests (NDJSON, Bundles, gzip)."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def patient(pid="p1", birth="1950-04-02", gender="female", **extra):
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth, **extra}


def encounter(eid="e1", pid="p1", start="2020-01-01T10:00:00+02:00", end="2020-01-05T12:00:00+02:00",
              cls="IMP", **extra):
    return {
        "resourceType": "Encounter", "id": eid, "status": "finished",
        "class": {"system": V3, "code": cls},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": start, "end": end}, **extra,
    }


def condition(cid="c1", pid="p1", eid="e1", code="44054006", onset="2020-01-02", **extra):
    return {
        "resourceType": "Condition", "id": cid,
        "code": {"coding": [{"system": SNOMED, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{eid}"},
        "onsetDateTime": onset, **extra,
    }


def observation(oid="o1", pid="p1", eid="e1", code="2160-0", value=1.2, unit="mg/dL",
                when="2020-01-03T08:00:00Z", **extra):
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{eid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
        **extra,
    }


def medication_request(mid="m1", pid="p1", eid="e1", code="860975", authored="2020-01-04", **extra):
    res = {
        "resourceType": "MedicationRequest", "id": mid, "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{eid}"},
        "authoredOn": authored,
        "dispenseRequest": {"validityPeriod": {"start": authored, "end": "2020-07-04"}},
    }
    res.update(extra)
    return res


def procedure(prid="pr1", pid="p1", eid="e1", code="80146002", when="2020-01-02T09:30:00-05:00", **extra):
    return {
        "resourceType": "Procedure", "id": prid, "status": "completed",
        "code": {"coding": [{"system": SNOMED, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{eid}"},
        "performedDateTime": when, **extra,
    }


def small_site() -> list[dict]:
    """Two patients with one stay each and one record of every kind."""
    return [
        patient("p1"), patient("p2", birth="1961-11-30", gender="male"),
        encounter("e1", "p1"), encounter("e2", "p2", start="2021-03-01T00:30:00-05:00",
                                          end="2021-03-02", cls="EMER"),
        condition("c1", "p1", "e1"), condition("c2", "p2", "e2", code="38341003", onset="2021"),
        observation("o1", "p1", "e1"), observation("o2", "p2", "e2", code="2345-7", value=99, unit="mg/dL"),
        medication_request("m1", "p1", "e1"), procedure("pr1", "p2", "e2"),
    ]


def dumps(resource) -> bytes:
    return orjson.dumps(resource)


def write_ndjson(path: Path, resources, lines: list[bytes] | None = None) -> Path:
    """Resources one per line (plus raw ``lines`` appended as they are); gzip when ``.gz``."""
    data = b"".join(dumps(r) + b"\n" for r in resources) + b"".join(line + b"\n" for line in lines or [])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def bundle(resources, kind="transaction", urn=True) -> dict:
    """A Bundle whose references use ``urn:uuid:`` fullUrls when ``urn`` (ids are not UUIDs)."""
    url = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:00000000-0000-0000-0000-{i:012d}"
           for i, r in enumerate(resources)}

    def relink(value):
        if isinstance(value, dict):
            return {k: (url.get(v, v) if k == "reference" and urn else relink(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [relink(v) for v in value]
        return value

    entries = []
    for r in resources:
        key = f"{r['resourceType']}/{r['id']}"
        entries.append({"fullUrl": url[key] if urn else f"http://example.org/fhir/{key}",
                        "resource": relink(r), "request": {"method": "POST", "url": r["resourceType"]}})
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def write_json(path: Path, document) -> Path:
    data = orjson.dumps(document)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path

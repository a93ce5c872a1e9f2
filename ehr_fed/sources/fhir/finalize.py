"""Checks that need the whole source, run in DuckDB after every file has been read.

* ``MedicationRequest.medicationReference`` is resolved to the referenced Medication's code;
  a reference to a Medication absent from the source is quarantined (``missing_reference``).
* A clinical record whose subject Patient is not in the source is moved to the quarantine
  (``missing_reference``) by an anti-join, unless ``on_missing_patient="keep"``.
* ``encounter.period.start`` in ``condition_date`` takes a Condition's onset from its visit.

Then the staging rows are copied into the record tables and the staging tables dropped.
"""

from __future__ import annotations

from collections import defaultdict

import duckdb

from ehr_fed.sources.fhir.files import SourceFile, read_raw
from ehr_fed.sources.fhir.options import FhirOptions
from ehr_fed.sources.fhir.staging import drop_staging, staging_name
from ehr_fed.sources.quarantine import Quarantine
from ehr_fed.sources.records import TABLES

RESOURCE_OF = {
    "visit": "Encounter",
    "condition": "Condition",
    "measurement": "Observation",
    "medication": "MedicationRequest",
    "procedure": "Procedure",
}


def finalize(
    con: duckdb.DuckDBPyConnection, files: list[SourceFile], quarantine: Quarantine, opts: FhirOptions
) -> None:
    """Resolve references, quarantine what the joins reject, fill the record tables."""
    rejected: list[tuple[int, int, str, str]] = []  # (src, pos, resource type, detail)
    rejected += _resolve_medications(con)
    _fill_person(con)
    if opts.on_missing_patient == "quarantine":
        for table, rtype in RESOURCE_OF.items():
            rejected += _reject_missing_patient(con, table, rtype)
    _fill_clinical(con, "encounter.period.start" in opts.condition_date)
    drop_staging(con)
    _quarantine_rows(rejected, files, quarantine, opts.quarantine_text_limit)


def _resolve_medications(con) -> list[tuple[int, int, str, str]]:
    med = staging_name("medication")
    codes = staging_name("_med_codes")
    con.execute(
        f"""UPDATE "{med}" AS m SET system = c.system, code = c.code
            FROM (SELECT med_id, any_value(system) AS system, any_value(code) AS code
                  FROM "{codes}" GROUP BY med_id) AS c
            WHERE m._med_ref IS NOT NULL AND m._med_ref = c.med_id"""
    )
    missing = con.execute(
        f"""SELECT DISTINCT m._src, m._pos, m._med_ref FROM "{med}" AS m
            WHERE m._med_ref IS NOT NULL AND NOT EXISTS
                  (SELECT 1 FROM "{codes}" AS c WHERE c.med_id = m._med_ref)"""
    ).fetchall()
    con.execute(
        f"""DELETE FROM "{med}" AS m WHERE m._med_ref IS NOT NULL AND NOT EXISTS
            (SELECT 1 FROM "{codes}" AS c WHERE c.med_id = m._med_ref)"""
    )
    return [
        (src, pos, "MedicationRequest",
         f"medicationReference Medication/{ref} is not in the source; add the Medication resource "
         "or use medicationCodeableConcept")
        for src, pos, ref in missing
    ]


def _columns(table: str) -> str:
    return ", ".join(f'"{c}"' for c in TABLES[table])


def _fill_person(con) -> None:
    con.execute(f'INSERT INTO person SELECT {_columns("person")} FROM "{staging_name("person")}"')


def _reject_missing_patient(con, table: str, rtype: str) -> list[tuple[int, int, str, str]]:
    stg = staging_name(table)
    missing = """NOT EXISTS (SELECT 1 FROM person AS p WHERE p.person_id = s.person_id)"""
    rows = con.execute(
        f'SELECT DISTINCT s._src, s._pos, s.person_id FROM "{stg}" AS s WHERE {missing}'
    ).fetchall()
    if rows:
        con.execute(f'DELETE FROM "{stg}" AS s WHERE {missing}')
    return [
        (src, pos, rtype,
         f"subject Patient/{pid} is not in the source (absent or quarantined); "
         "add the Patient resource or remove the record")
        for src, pos, pid in rows
    ]


def _fill_clinical(con, condition_from_visit: bool) -> None:
    for table in RESOURCE_OF:
        stg = staging_name(table)
        if table == "condition" and condition_from_visit:
            con.execute(
                f"""INSERT INTO condition
                    SELECT s.person_id, s.visit_id,
                           COALESCE(s.onset_time, v.start_time, s._onset_fallback),
                           s.system, s.code, s.concept_id
                    FROM "{stg}" AS s
                    LEFT JOIN (SELECT visit_id, min(start_time) AS start_time FROM visit
                               GROUP BY visit_id) AS v ON v.visit_id = s.visit_id"""
            )
        else:
            con.execute(f'INSERT INTO "{table}" SELECT {_columns(table)} FROM "{stg}"')


def _quarantine_rows(rejected, files: list[SourceFile], quarantine: Quarantine, text_limit: int) -> None:
    """Add rows rejected after reading, looking their raw text up again (up to ``text_limit``)."""
    wanted: dict[int, set[int]] = defaultdict(set)
    for src, pos, _, _ in rejected[:text_limit]:
        wanted[src].add(pos)
    texts = {src: read_raw(files[src], positions) for src, positions in wanted.items()}
    for src, pos, rtype, detail in sorted(rejected):
        sf = files[src]
        location = f"{sf.path}:{pos}" if sf.layout == "ndjson" else f"{sf.path}#entry[{pos}]"
        quarantine.add("missing_reference", location, rtype, detail, texts.get(src, {}).get(pos))

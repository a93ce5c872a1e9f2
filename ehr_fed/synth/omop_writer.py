"""Write simulated patients into an OMOP CDM v5.4 DuckDB file, as an OHDSI ETL would.

Rows are buffered per table and appended as Arrow batches every few thousand patients, so
memory stays bounded. Datetimes are the UTC instants of the FHIR form (OMOP has no zone);
``person_source_value`` holds the FHIR ``Patient.id``.

OHDSI conventions followed: every ``*_concept_id`` holds a standard concept (SNOMED CT
conditions and procedures, RxNorm drugs, LOINC measurements, UCUM units, Visit / CMS place of
service visits); the site's code is the ``*_source_value`` and its concept the
``*_source_concept_id`` (an ICD-10-CM diagnosis: the ICD-10-CM concept, while
``condition_concept_id`` is the SNOMED CT concept it 'Maps to'; a laboratory's own code: 0).
A condition starts at its record date (the later of onset and visit start), inside its visit
and the person's observation period. The vocabulary tables hold the subset of
:mod:`ehr_fed.synth.vocabulary`.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from ehr_fed.synth.codes import (
    ADMIT_SOURCE_CONCEPTS,
    CONDITIONS,
    DRUGS,
    ETHNICITIES,
    GENDER_CONCEPTS,
    LABS,
    PROCEDURES,
    RACES,
    TYPE_EHR,
    UNIT_CONCEPTS,
)
from ehr_fed.synth.patients import DAY, Patient
from ehr_fed.synth.profiles import SiteProfile
from ehr_fed.synth.sitecodes import LOCAL_SPELLING, lab_coding
from ehr_fed.synth.vocabulary import vocabulary_tables

#: CDM v5.4 columns of the tables written (name -> DuckDB type)
CDM: dict[str, dict[str, str]] = {
    "person": {
        "person_id": "BIGINT", "gender_concept_id": "INTEGER", "year_of_birth": "INTEGER",
        "month_of_birth": "INTEGER", "day_of_birth": "INTEGER", "birth_datetime": "TIMESTAMP",
        "race_concept_id": "INTEGER", "ethnicity_concept_id": "INTEGER", "location_id": "BIGINT",
        "provider_id": "BIGINT", "care_site_id": "BIGINT", "person_source_value": "VARCHAR",
        "gender_source_value": "VARCHAR", "gender_source_concept_id": "INTEGER",
        "race_source_value": "VARCHAR", "race_source_concept_id": "INTEGER",
        "ethnicity_source_value": "VARCHAR", "ethnicity_source_concept_id": "INTEGER",
    },
    "observation_period": {
        "observation_period_id": "BIGINT", "person_id": "BIGINT", "observation_period_start_date": "DATE",
        "observation_period_end_date": "DATE", "period_type_concept_id": "INTEGER",
    },
    "death": {
        "person_id": "BIGINT", "death_date": "DATE", "death_datetime": "TIMESTAMP",
        "death_type_concept_id": "INTEGER", "cause_concept_id": "INTEGER", "cause_source_value": "VARCHAR",
        "cause_source_concept_id": "INTEGER",
    },
    "visit_occurrence": {
        "visit_occurrence_id": "BIGINT", "person_id": "BIGINT", "visit_concept_id": "INTEGER",
        "visit_start_date": "DATE", "visit_start_datetime": "TIMESTAMP", "visit_end_date": "DATE",
        "visit_end_datetime": "TIMESTAMP", "visit_type_concept_id": "INTEGER", "provider_id": "BIGINT",
        "care_site_id": "BIGINT", "visit_source_value": "VARCHAR", "visit_source_concept_id": "INTEGER",
        "admitted_from_concept_id": "INTEGER", "admitted_from_source_value": "VARCHAR",
        "discharged_to_concept_id": "INTEGER", "discharged_to_source_value": "VARCHAR",
        "preceding_visit_occurrence_id": "BIGINT",
    },
    "condition_occurrence": {
        "condition_occurrence_id": "BIGINT", "person_id": "BIGINT", "condition_concept_id": "INTEGER",
        "condition_start_date": "DATE", "condition_start_datetime": "TIMESTAMP", "condition_end_date": "DATE",
        "condition_end_datetime": "TIMESTAMP", "condition_type_concept_id": "INTEGER",
        "condition_status_concept_id": "INTEGER", "stop_reason": "VARCHAR", "provider_id": "BIGINT",
        "visit_occurrence_id": "BIGINT", "visit_detail_id": "BIGINT", "condition_source_value": "VARCHAR",
        "condition_source_concept_id": "INTEGER", "condition_status_source_value": "VARCHAR",
    },
    "measurement": {
        "measurement_id": "BIGINT", "person_id": "BIGINT", "measurement_concept_id": "INTEGER",
        "measurement_date": "DATE", "measurement_datetime": "TIMESTAMP", "measurement_time": "VARCHAR",
        "measurement_type_concept_id": "INTEGER", "operator_concept_id": "INTEGER",
        "value_as_number": "DOUBLE", "value_as_concept_id": "INTEGER", "unit_concept_id": "INTEGER",
        "range_low": "DOUBLE", "range_high": "DOUBLE", "provider_id": "BIGINT", "visit_occurrence_id": "BIGINT",
        "visit_detail_id": "BIGINT", "measurement_source_value": "VARCHAR",
        "measurement_source_concept_id": "INTEGER", "unit_source_value": "VARCHAR",
        "unit_source_concept_id": "INTEGER", "value_source_value": "VARCHAR", "measurement_event_id": "BIGINT",
        "meas_event_field_concept_id": "INTEGER",
    },
    "drug_exposure": {
        "drug_exposure_id": "BIGINT", "person_id": "BIGINT", "drug_concept_id": "INTEGER",
        "drug_exposure_start_date": "DATE", "drug_exposure_start_datetime": "TIMESTAMP",
        "drug_exposure_end_date": "DATE", "drug_exposure_end_datetime": "TIMESTAMP", "verbatim_end_date": "DATE",
        "drug_type_concept_id": "INTEGER", "stop_reason": "VARCHAR", "refills": "INTEGER", "quantity": "DOUBLE",
        "days_supply": "INTEGER", "sig": "VARCHAR", "route_concept_id": "INTEGER", "lot_number": "VARCHAR",
        "provider_id": "BIGINT", "visit_occurrence_id": "BIGINT", "visit_detail_id": "BIGINT",
        "drug_source_value": "VARCHAR", "drug_source_concept_id": "INTEGER", "route_source_value": "VARCHAR",
        "dose_unit_source_value": "VARCHAR",
    },
    "procedure_occurrence": {
        "procedure_occurrence_id": "BIGINT", "person_id": "BIGINT", "procedure_concept_id": "INTEGER",
        "procedure_date": "DATE", "procedure_datetime": "TIMESTAMP", "procedure_end_date": "DATE",
        "procedure_end_datetime": "TIMESTAMP", "procedure_type_concept_id": "INTEGER",
        "modifier_concept_id": "INTEGER", "quantity": "INTEGER", "provider_id": "BIGINT",
        "visit_occurrence_id": "BIGINT", "visit_detail_id": "BIGINT", "procedure_source_value": "VARCHAR",
        "procedure_source_concept_id": "INTEGER", "modifier_source_value": "VARCHAR",
    },
    "concept": {
        "concept_id": "INTEGER", "concept_name": "VARCHAR", "domain_id": "VARCHAR", "vocabulary_id": "VARCHAR",
        "concept_class_id": "VARCHAR", "standard_concept": "VARCHAR", "concept_code": "VARCHAR",
        "valid_start_date": "DATE", "valid_end_date": "DATE", "invalid_reason": "VARCHAR",
    },
    "concept_relationship": {
        "concept_id_1": "INTEGER", "concept_id_2": "INTEGER", "relationship_id": "VARCHAR",
        "valid_start_date": "DATE", "valid_end_date": "DATE", "invalid_reason": "VARCHAR",
    },
    "concept_ancestor": {
        "ancestor_concept_id": "INTEGER", "descendant_concept_id": "INTEGER",
        "min_levels_of_separation": "INTEGER", "max_levels_of_separation": "INTEGER",
    },
    "domain": {"domain_id": "VARCHAR", "domain_name": "VARCHAR", "domain_concept_id": "INTEGER"},
    "vocabulary": {
        "vocabulary_id": "VARCHAR", "vocabulary_name": "VARCHAR", "vocabulary_reference": "VARCHAR",
        "vocabulary_version": "VARCHAR", "vocabulary_concept_id": "INTEGER",
    },
    "concept_class": {
        "concept_class_id": "VARCHAR", "concept_class_name": "VARCHAR", "concept_class_concept_id": "INTEGER",
    },
    "relationship": {
        "relationship_id": "VARCHAR", "relationship_name": "VARCHAR", "is_hierarchical": "VARCHAR",
        "defines_ancestry": "VARCHAR", "reverse_relationship_id": "VARCHAR", "relationship_concept_id": "INTEGER",
    },
}
#: the vocabulary tables (written once, at close)
VOCABULARY_TABLES = ("concept", "concept_relationship", "concept_ancestor", "domain", "vocabulary",
                     "concept_class", "relationship")

#: columns whose buffered values are UTC seconds (written as TIMESTAMP) or days (DATE)
_TS_SUFFIX = "_datetime"


def condition_concepts(profile: SiteProfile, key: str) -> tuple[int, int, str]:
    """``(condition_concept_id, condition_source_concept_id, condition_source_value)`` at the site."""
    c = CONDITIONS[key]
    if profile.dx_vocabulary == "icd10cm" and c.icd10 is not None:
        return c.icd10_maps_to, c.icd10_concept, c.icd10
    return c.snomed_concept, c.snomed_concept, c.snomed


def lab_concepts(profile: SiteProfile, key: str) -> tuple[int, int, str]:
    """``(measurement_concept_id, measurement_source_concept_id, measurement_source_value)``."""
    lab = LABS[key]
    if profile.lab_coding == "local":
        return lab.concept, 0, lab.local_code
    return lab.concept, lab.source_concept, lab.loinc


class OmopWriter:
    """Streams patients into an OMOP CDM v5.4 DuckDB database file."""

    def __init__(self, path: Path, profile: SiteProfile, flush_rows: int = 50_000):
        self.path = Path(path)
        if self.path.exists():
            self.path.unlink()
        self.profile = profile
        self.con = duckdb.connect(str(self.path))
        self.con.execute("SET threads TO 1")
        self.con.execute("SET memory_limit = '256MB'")
        self.con.execute("SET preserve_insertion_order = true")
        for table, cols in CDM.items():
            body = ", ".join(f"{c} {t}" for c, t in cols.items())
            self.con.execute(f"CREATE TABLE {table} ({body})")
        self._buf: dict[str, dict[str, list]] = {t: {} for t in CDM if t not in VOCABULARY_TABLES}
        self._rows = 0
        self.flush_rows = flush_rows
        self.counts = dict.fromkeys(self._buf, 0)
        self._next = dict.fromkeys(("visit", "condition", "measurement", "drug", "procedure"), 1)
        self._person = 0
        self._dx = {k: condition_concepts(profile, k) for k in CONDITIONS}
        self._lab = {k: lab_concepts(profile, k) for k in LABS}
        self._lab_unit = {k: lab_coding(profile, k)[3] for k in LABS}
        v = profile.visits
        self._visit = {"IP": (v.omop_inpatient, v.inpatient), "ED": (v.omop_emergency, v.emergency),
                       "OP": (v.omop_outpatient, v.outpatient)}

    def _append(self, table: str, **values) -> None:
        cols = self._buf[table]
        for k, val in values.items():
            cols.setdefault(k, []).append(val)
        self._rows += 1

    def _ids(self, kind: str, n: int) -> range:
        start = self._next[kind]
        self._next[kind] = start + n
        return range(start, start + n)

    def add(self, p: Patient) -> None:
        """Append one patient's rows."""
        self._person += 1
        pid = self._person
        a = self._append
        race, race_code, _ = RACES[p.race]
        ethnicity, ethnicity_code, _ = ETHNICITIES[p.ethnicity]
        a("person", person_id=pid, gender_concept_id=GENDER_CONCEPTS["female" if p.female else "male"],
          birth_datetime=p.birth, race_concept_id=race, ethnicity_concept_id=ethnicity, person_source_value=p.key,
          gender_source_value="F" if p.female else "M", race_source_value=race_code,
          ethnicity_source_value=ethnicity_code)
        first = min(v.start for v in p.visits)
        last = max(v.end for v in p.visits)
        if p.death is not None:
            last = max(last, p.death)
            a("death", person_id=pid, death_datetime=p.death, death_type_concept_id=TYPE_EHR)
        a("observation_period", observation_period_id=pid, person_id=pid,
          observation_period_start_date=first, observation_period_end_date=last,
          period_type_concept_id=TYPE_EHR)
        vids = self._ids("visit", len(p.visits))
        for v, vid in zip(p.visits, vids, strict=True):
            concept, source = self._visit[v.kind]
            ip = v.kind == "IP"
            admit = ("emd" if v.emergency else "psych") if ip else None
            a("visit_occurrence", visit_occurrence_id=vid, person_id=pid, visit_concept_id=concept,
              visit_start_datetime=v.start, visit_end_datetime=v.end, visit_type_concept_id=TYPE_EHR,
              visit_source_value=source,
              admitted_from_concept_id=ADMIT_SOURCE_CONCEPTS[admit] if ip else None,
              admitted_from_source_value=admit, discharged_to_source_value="home" if ip else None)
        for (key, onset, v), cid in zip(p.conditions, self._ids("condition", len(p.conditions)), strict=True):
            concept, source_concept, code = self._dx[key]
            a("condition_occurrence", condition_occurrence_id=cid, person_id=pid, condition_concept_id=concept,
              condition_start_datetime=max(onset, v.start), condition_type_concept_id=TYPE_EHR,
              visit_occurrence_id=vids[v.index], condition_source_value=code,
              condition_source_concept_id=source_concept)
        local_units = self.profile.lab_coding == "loinc_local_units"
        for (lab, t, v, _, value), mid in zip(p.labs, self._ids("measurement", len(p.labs)), strict=True):
            concept, source_concept, code = self._lab[lab]
            unit = self._lab_unit[lab]
            a("measurement", measurement_id=mid, person_id=pid, measurement_concept_id=concept,
              measurement_datetime=t, measurement_type_concept_id=TYPE_EHR, value_as_number=value,
              unit_concept_id=UNIT_CONCEPTS[unit], visit_occurrence_id=vids[v.index],
              measurement_source_value=code, measurement_source_concept_id=source_concept,
              unit_source_value=LOCAL_SPELLING.get(unit, unit) if local_units else unit)
        for (drug, start, end, v), did in zip(p.drugs, self._ids("drug", len(p.drugs)), strict=True):
            d = DRUGS[drug]
            a("drug_exposure", drug_exposure_id=did, person_id=pid, drug_concept_id=d.concept,
              drug_exposure_start_datetime=start, drug_exposure_end_datetime=end, drug_type_concept_id=TYPE_EHR,
              days_supply=max(1, round((end - start) / DAY)), visit_occurrence_id=vids[v.index],
              drug_source_value=d.rxnorm, drug_source_concept_id=d.concept)
        for (proc, t, v), xid in zip(p.procedures, self._ids("procedure", len(p.procedures)), strict=True):
            pr = PROCEDURES[proc]
            a("procedure_occurrence", procedure_occurrence_id=xid, person_id=pid, procedure_concept_id=pr.concept,
              procedure_datetime=t, procedure_type_concept_id=TYPE_EHR, visit_occurrence_id=vids[v.index],
              procedure_source_value=pr.snomed, procedure_source_concept_id=pr.concept)
        if self._rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        for table, cols in self._buf.items():
            if not cols:
                continue
            batch = _arrow_batch(table, cols)
            names = ", ".join(batch.column_names)
            self.con.register("_synth_batch", batch)
            self.con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM _synth_batch")
            self.con.unregister("_synth_batch")
            self.counts[table] += batch.num_rows
            cols.clear()
        self._rows = 0

    def close(self) -> None:
        self.flush()
        for table, rows in vocabulary_tables().items():
            marks = ", ".join("?" * len(CDM[table]))
            self.con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        self.con.execute("CHECKPOINT")
        self.con.close()


def _arrow_batch(table: str, cols: dict[str, list]) -> pa.Table:
    """Arrow table of buffered columns; ``*_datetime`` seconds also fill their ``*_date`` column."""
    out: dict[str, pa.Array] = {}
    types = CDM[table]
    for name, values in cols.items():
        if name.endswith(_TS_SUFFIX) or name == "birth_datetime":
            secs = np.array([np.iinfo(np.int64).min if x is None else x for x in values], dtype=np.int64)
            ts = pa.array(secs.astype("datetime64[s]"), type=pa.timestamp("s"))
            out[name] = ts
            date_col = name[: -len(_TS_SUFFIX)] + "_date"
            if date_col in types and date_col not in cols:
                out[date_col] = pa.array((secs // DAY).astype("int32"), type=pa.date32())
        elif types[name] == "DATE":
            out[name] = pa.array((np.asarray(values, dtype=np.int64) // DAY).astype("int32"), type=pa.date32())
        else:
            out[name] = pa.array(values)
    if table == "person":
        dates = (np.asarray(cols["birth_datetime"], dtype=np.int64).astype("datetime64[s]")
                 .astype("datetime64[D]"))
        y = dates.astype("datetime64[Y]").astype(int) + 1970
        m = dates.astype("datetime64[M]").astype(int) % 12 + 1
        d = (dates - dates.astype("datetime64[M]")).astype(int) + 1
        out["year_of_birth"], out["month_of_birth"], out["day_of_birth"] = pa.array(y), pa.array(m), pa.array(d)
    return pa.table(out)

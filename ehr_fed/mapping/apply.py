"""Apply a site mapping (and a study's concept sets and labs) to source records, in SQL.

The records stay in the reader's DuckDB connection; this module adds temporary
tables in standard terms:

``std_visit``
    ``visit_id, person_id, start_time, end_time, category`` (inpatient / emergency / outpatient /
    other), ``is_part`` (the visit is ``part_of`` another: an ICU stay inside an admission is part of
    a stay, not a stay), ``emergency_admission``, ``transfer_out``, ``planned``.
``std_condition``
    ``person_id, visit_id, time, vocabulary, code, concept_id``; ``time`` is the onset, else the
    visit's start; ICD codes are normalised (dots and blanks removed, upper case). With an OMOP
    source, the source codings of ``condition_source`` (ICD-10-CM of a SNOMED CT condition) too.
``std_condition_set``
    ``person_id, visit_id, time, concept_set``: conditions in each concept set (ICD by prefix,
    other vocabularies exactly, OMOP concept ids with their descendants from ``concept_ancestor``).
``std_lab``
    ``person_id, visit_id, time, lab, value``: study labs in their canonical unit. A value whose
    unit is unknown, or has no conversion to the canonical unit, is quarantined (``unknown_unit``).
``std_medication``
    ``person_id, visit_id, start_time, end_time, vocabulary, code, status``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from ehr_fed.mapping.checks import OMOP_VOCABULARY_IDS
from ehr_fed.mapping.site import SiteMapping
from ehr_fed.mapping.study import ConceptSet, StudySpec
from ehr_fed.mapping.units import canonical_ucum, conversion_table

#: vocabularies whose codes are normalised (no dots/blanks, upper case) and matched by prefix
PREFIX_VOCABULARIES = ("icd10cm", "icd10", "icd9cm")
_NORMALISE = (
    "CASE WHEN {voc} IN ('icd10cm', 'icd10', 'icd9cm') "
    "THEN upper(regexp_replace({code}, '[.\\s]', '', 'g')) ELSE trim({code}) END"
)


@dataclass
class AppliedMapping:
    """What applying the mapping did: ``unknown_units`` values quarantined; table names created."""

    unknown_units: int
    tables: tuple[str, ...] = ("std_visit", "std_condition", "std_condition_set", "std_lab", "std_medication")


def normalise_code(vocabulary: str | None, code: str) -> str:
    """The code as matched: ICD without dots or blanks, upper case; others trimmed."""
    code = str(code)
    if vocabulary in PREFIX_VOCABULARIES:
        return "".join(code.split()).replace(".", "").upper()
    return code.strip()


def apply_mapping(records, mapping: SiteMapping, study: StudySpec,
                  extra_concept_sets: dict[str, ConceptSet] | None = None) -> AppliedMapping:
    """Create the ``std_*`` tables of ``records.con`` for ``study`` (see the module docstring).

    Parameters
    ----------
    records : SourceRecords
        The site's records; its quarantine receives values with unknown units.
    mapping : SiteMapping
    study : StudySpec
    extra_concept_sets : dict, optional
        More concept sets to match (the cohort stage adds the Charlson categories).
    """
    con = records.con
    _load_maps(con, mapping)
    _std_visit(con)
    _std_clinical(con)
    sets = dict(study.concept_sets)
    sets.update(extra_concept_sets or {})
    _std_condition_set(con, sets)
    n_unknown = _std_lab(con, mapping, study, records.quarantine)
    return AppliedMapping(unknown_units=n_unknown)


def _table(con: duckdb.DuckDBPyConnection, name: str, columns: str, rows: list[tuple]) -> None:
    """Create temp table ``name`` (``columns`` as SQL) holding ``rows`` (one bulk insert through Arrow)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} ({columns})")
    if rows:
        names = [c.strip().split()[0].strip('"') for c in columns.split(",")]
        data = pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})
        con.register("_rows", data)
        try:
            con.execute(f"INSERT INTO {name} SELECT * FROM _rows")
        finally:
            con.unregister("_rows")


def system_vocabularies(mapping: SiteMapping) -> dict[str, str]:
    """Code system -> vocabulary: the mapping's ``code_systems`` (OMOP: plus standard vocabulary ids)."""
    systems = dict(OMOP_VOCABULARY_IDS) if mapping.source == "omop" else {}
    systems.update(mapping.code_systems)
    return systems


def _load_maps(con: duckdb.DuckDBPyConnection, mapping: SiteMapping) -> None:
    v = mapping.visits
    classes = {(vc.system, vc.code, cat) for cat in ("inpatient", "emergency", "outpatient", "other")
               for vc in getattr(v, cat)}
    _table(con, "map_visit_class", "class_system VARCHAR, class_code VARCHAR, category VARCHAR", sorted(classes))
    flags = [("emergency_admission", x) for x in v.emergency_admission]
    flags += [("transfer_out", x) for x in v.transfer_dispositions]
    flags += [("planned", x) for x in v.planned_priorities]
    _table(con, "map_visit_flag", "flag VARCHAR, value VARCHAR", flags)
    _table(con, "map_system", "system VARCHAR, vocabulary VARCHAR", sorted(system_vocabularies(mapping).items()))
    local = [(lc.system, lc.code, lc.to.vocabulary, normalise_code(lc.to.vocabulary, lc.to.code), lc.unit)
             for lc in mapping.local_codes]
    _table(con, "map_local", "system VARCHAR, code VARCHAR, vocabulary VARCHAR, std_code VARCHAR, unit VARCHAR",
           local)


def _flag(name: str) -> str:
    return (f"EXISTS (SELECT 1 FROM map_visit_flag f WHERE f.flag = '{name}' AND f.value IN "
            "(v.class_system || '|' || v.class_code, v.priority, v.admit_source, v.discharge_disposition))")


def _std_visit(con: duckdb.DuckDBPyConnection) -> None:
    transfer = ("EXISTS (SELECT 1 FROM map_visit_flag f WHERE f.flag = 'transfer_out' "
                "AND f.value = v.discharge_disposition)")
    planned = ("EXISTS (SELECT 1 FROM map_visit_flag f WHERE f.flag = 'planned' "
               "AND f.value IN (v.priority, v.admit_source, v.class_system || '|' || v.class_code))")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE std_visit AS
        SELECT v.visit_id, v.person_id, v.start_time, v.end_time,
               coalesce(
                 (SELECT min(m.category) FROM map_visit_class m
                   WHERE m.class_system = v.class_system AND m.class_code = v.class_code),
                 (SELECT min(m.category) FROM map_visit_class m
                   WHERE m.class_system = v.class_system AND m.class_code = '*'),
                 'other') AS category,
               v.part_of IS NOT NULL AS is_part,
               {_flag('emergency_admission')} AS emergency_admission,
               {transfer} AS transfer_out,
               {planned} AS planned
        FROM visit v""")


def _coded(table: str, time_expr: str, extra: str) -> str:
    voc = "coalesce(l.vocabulary, s.vocabulary)"
    return f"""
        SELECT r.person_id, r.visit_id, {time_expr}, {voc} AS vocabulary,
               {_NORMALISE.format(voc=voc, code='coalesce(l.std_code, r.code)')} AS code,
               r.concept_id{extra}
        FROM "{table}" r
        LEFT JOIN map_local l ON l.system = r.system AND l.code = r.code
        LEFT JOIN map_system s ON s.system = r.system"""


def _std_clinical(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE _visit_start AS SELECT visit_id, min(start_time) AS start_time "
                "FROM visit WHERE visit_id IS NOT NULL GROUP BY visit_id")
    # an OMOP reader's condition_source holds the source codings (ICD-10-CM) of the same conditions
    tables = ["condition"] + (["condition_source"] if _has_table(con, "condition_source") else [])
    coded = [f"""{_coded(t, 'coalesce(r.onset_time, vs.start_time) AS time', '')}
        LEFT JOIN _visit_start vs ON vs.visit_id = r.visit_id""" for t in tables]
    con.execute(f"CREATE OR REPLACE TEMP TABLE std_condition AS {' UNION ALL '.join(coded)}")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE std_medication AS
        {_coded('medication', 'coalesce(r.start_time, vs.start_time) AS start_time', ', r.end_time, r.status')}
        LEFT JOIN _visit_start vs ON vs.visit_id = r.visit_id""")
    extra = (", r.value, coalesce(nullif(trim(r.unit), ''), l.unit) AS unit, "
             "r.system AS local_system, r.code AS local_code")
    measured = _coded("measurement", "coalesce(r.time, vs.start_time) AS time", extra)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _measurement AS {measured}
        LEFT JOIN _visit_start vs ON vs.visit_id = r.visit_id""")


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchone()[0])


def _std_condition_set(con: duckdb.DuckDBPyConnection, sets: dict[str, ConceptSet]) -> None:
    codes, concepts = [], []
    for name, cs in sets.items():
        for vocab in ("snomed", "icd10cm", "icd10", "icd9cm", "loinc", "rxnorm"):
            for code in getattr(cs, vocab):
                codes.append((name, vocab, normalise_code(vocab, code), vocab in PREFIX_VOCABULARIES))
        concepts += [(name, int(c)) for c in cs.omop]
    _table(con, "cs_code", "concept_set VARCHAR, vocabulary VARCHAR, code VARCHAR, prefix BOOLEAN", codes)
    _table(con, "cs_concept", "concept_set VARCHAR, concept_id BIGINT", concepts)
    if _has_table(con, "concept_ancestor") and concepts:
        con.execute("""INSERT INTO cs_concept SELECT DISTINCT k.concept_set, a.descendant_concept_id
                       FROM cs_concept k JOIN concept_ancestor a ON a.ancestor_concept_id = k.concept_id""")
    con.execute("""CREATE OR REPLACE TEMP TABLE std_condition_set AS
        SELECT DISTINCT c.person_id, c.visit_id, c.time, k.concept_set FROM std_condition c
          JOIN cs_code k ON k.vocabulary = c.vocabulary
           AND (CASE WHEN k.prefix THEN starts_with(c.code, k.code) ELSE c.code = k.code END)
        UNION
        SELECT DISTINCT c.person_id, c.visit_id, c.time, k.concept_set FROM std_condition c
          JOIN cs_concept k ON k.concept_id = c.concept_id""")


def _std_lab(con: duckdb.DuckDBPyConnection, mapping: SiteMapping, study: StudySpec, quarantine) -> int:
    rows = [(lab, "loinc", code) for lab, spec in study.labs.items() for code in spec.loinc]
    rows += [(lab, "omop", str(c)) for lab, spec in study.labs.items() for c in spec.omop]
    _table(con, "lab_code", "lab VARCHAR, vocabulary VARCHAR, code VARCHAR", rows)
    con.execute("""CREATE OR REPLACE TEMP TABLE _lab_raw AS
        SELECT m.*, k.lab FROM _measurement m JOIN lab_code k
          ON (k.vocabulary = m.vocabulary AND k.code = m.code)
          OR (k.vocabulary = 'omop' AND k.code = CAST(m.concept_id AS VARCHAR))
        WHERE m.value IS NOT NULL""")
    pairs = con.execute("SELECT DISTINCT lab, unit FROM _lab_raw").fetchall()
    conv = []
    for lab, unit in pairs:
        spec = study.labs[lab]
        ucum = canonical_ucum(unit, mapping.units)
        table = conversion_table(spec.analyte or lab, spec.unit)
        if ucum in table:
            conv.append((lab, unit, table[ucum].factor, table[ucum].offset))
    _table(con, "lab_unit", "lab VARCHAR, unit VARCHAR, factor DOUBLE, \"offset\" DOUBLE", conv)
    con.execute("""CREATE OR REPLACE TEMP TABLE std_lab AS
        SELECT r.person_id, r.visit_id, r.time, r.lab, r.value * u.factor + u."offset" AS value
        FROM _lab_raw r JOIN lab_unit u ON u.lab = r.lab AND u.unit = r.unit""")
    bad = con.execute("""SELECT r.person_id, r.visit_id, CAST(r.time AS VARCHAR), r.lab, r.local_system,
               r.local_code, r.value, r.unit
        FROM _lab_raw r ANTI JOIN lab_unit u ON u.lab = r.lab AND u.unit IS NOT DISTINCT FROM r.unit""").fetchall()
    for person, visit, time, lab, system, code, value, unit in bad:
        accepted = ", ".join(conversion_table(study.labs[lab].analyte or lab, study.labs[lab].unit))
        quarantine.add(
            "unknown_unit",
            f"measurement person={person} visit={visit} time={time}",
            "measurement",
            f"{lab} ({system}|{code}) value {value} has unit {unit!r}, which cannot be converted to "
            f"{study.labs[lab].unit!r}; accepted: {accepted}. Map the spelling under 'units:' in the site "
            "mapping if it is one of these",
            json.dumps({"person_id": person, "visit_id": visit, "time": time, "system": system, "code": code,
                        "value": value, "unit": unit}),
        )
    return len(bad)

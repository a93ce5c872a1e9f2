"""``condition_occurrence``, ``measurement``, ``drug_exposure``, ``procedure_occurrence`` ->
the ``condition``, ``measurement``, ``medication``, ``procedure`` record tables.

``system``/``code``: the concept's ``vocabulary_id``/``concept_code`` when the ``concept`` table
resolves ``*_concept_id`` (and it is not 0), else ``'omop'`` and the concept id. With
``code_field: source_value`` the trimmed, upper-cased ``*_source_value`` is the code and its
declared vocabulary the system; a source value no rule places falls back on the concept.

A condition whose ``condition_source_concept_id`` resolves to another concept than its
``condition_concept_id`` (an ICD-10-CM code mapped to SNOMED CT, as OHDSI ETLs write them)
also gives a row of ``condition_source`` (the columns of ``condition``) with the source
concept's ``vocabulary_id``/``concept_code``, like a second coding of a FHIR ``Condition.code``:
the mapping stage matches a study's concept sets against both, so a study finds the standard
concept (and its descendants) or the source code (ICD-10-CM prefixes), whichever it lists.
``condition`` keeps one row per ``condition_occurrence`` row.
"""

from __future__ import annotations

from ehr_fed.sources.omop.build import STAGE, Build
from ehr_fed.sources.omop.checks import Check, checked_select
from ehr_fed.sources.omop.options import CLINICAL_TABLES, DOMAIN_PREFIX, ClinicalTableOptions
from ehr_fed.sources.omop.sql import any_bad_timestamp, bigint, first_timestamp, literal, norm_id, text
from ehr_fed.sources.omop.vocabulary import CONCEPT
from ehr_fed.sources.records import TABLES

#: tables whose ``*_source_concept_id`` also gives a coding (see the module docstring)
SOURCE_CODED_TABLES = ("condition_occurrence",)
#: the table of those codings: the columns of ``condition``, one row per condition whose source
#: concept differs from its standard concept
SOURCE_CODING_TABLE = "condition_source"

#: the primary key column of each clinical table (named in quarantine details)
ID_COLUMN: dict[str, str] = {
    "condition_occurrence": "condition_occurrence_id",
    "measurement": "measurement_id",
    "drug_exposure": "drug_exposure_id",
    "procedure_occurrence": "procedure_occurrence_id",
}


def stage_clinical(b: Build, table: str) -> str | None:
    """Stage the columns a clinical table needs; ``None`` when the source has no such table."""
    if not b.backend.has(table):
        b.source_records[table] = 0
        return None
    opts = b.options.table(table)
    p = DOMAIN_PREFIX[table]
    code_col = f"{p}_concept_id" if opts.code_field == "concept_id" else f"{p}_source_value"
    b.require(table, ["person_id", code_col], why=f"omop.{table}.code_field is {opts.code_field!r}")
    times = b.present(table, opts.time_fields)
    if not times:
        b.require(
            table, opts.time_fields[:1], why=f"none of omop.{table}.time_fields {opts.time_fields} is present"
        )
    columns = (
        [
            ID_COLUMN[table],
            "person_id",
            "visit_occurrence_id",
            f"{p}_concept_id",
            f"{p}_source_value",
            f"{p}_source_concept_id",
        ]
        + times
        + b.present(table, opts.end_time_fields)
    )
    if table == "measurement":
        columns += ["value_as_number", "unit_concept_id", "unit_source_value"]
    if table == "drug_exposure":
        columns += ["days_supply"]
    return b.stage(table, columns)


def _code_exprs(opts: ClinicalTableOptions, p: str) -> tuple[str, str]:
    concept_system = "CASE WHEN c.id IS NOT NULL THEN c.vocabulary_id ELSE 'omop' END"
    concept_code = f"CASE WHEN c.id IS NOT NULL THEN c.concept_code ELSE {norm_id(f's.{p}_concept_id')} END"
    if opts.code_field == "concept_id":
        return concept_system, concept_code
    sv = f"upper({text(f's.{p}_source_value')})"
    whens = []
    for rule in opts.vocabulary_rules:
        conds = []
        if rule.pattern is not None:
            conds.append(f"regexp_matches({sv}, {literal(rule.pattern)})")
        if rule.source_concept_id_range is not None:
            lo, hi = rule.source_concept_id_range
            conds.append(f"{bigint(f's.{p}_source_concept_id')} BETWEEN {int(lo)} AND {int(hi)}")
        whens.append(f"WHEN {' AND '.join(conds)} THEN {literal(rule.vocabulary)}")
    default = literal(opts.source_vocabulary) if opts.source_vocabulary else "NULL"
    vocab = f"CASE {' '.join(whens)} ELSE {default} END" if whens else default
    use_sv = f"({sv} IS NOT NULL AND {vocab} IS NOT NULL)"
    return (
        f"CASE WHEN {use_sv} THEN {vocab} ELSE {concept_system} END",
        f"CASE WHEN {use_sv} THEN {sv} ELSE {concept_code} END",
    )


def build_clinical(b: Build, table: str, stg: str | None) -> None:
    """Fill the record table of clinical OMOP table ``table`` from its staged rows."""
    if stg is None:
        return
    target = CLINICAL_TABLES[table]
    opts = b.options.table(table)
    p = DOMAIN_PREFIX[table]
    times = b.present(table, opts.time_fields)
    ends = b.present(table, opts.end_time_fields)
    system, code = _code_exprs(opts, p)
    if b.options.visit_id_field == "visit_occurrence_id":
        visit, visit_join = norm_id("s.visit_occurrence_id"), ""
    else:
        visit = "vm.visit_id"
        visit_join = f"LEFT JOIN {STAGE}.visit_map vm ON vm.occ_id = {norm_id('s.visit_occurrence_id')}"
    extra, joins = [], [visit_join]
    source_coded = table in SOURCE_CODED_TABLES and opts.code_field == "concept_id"
    if source_coded:
        extra += [
            f"{bigint(f's.{p}_source_concept_id')} AS _source_id",
            "sc.vocabulary_id AS _source_system", "sc.concept_code AS _source_code",
        ]
        joins.append(f"LEFT JOIN {CONCEPT} sc ON sc.id = {bigint(f's.{p}_source_concept_id')}")
    if table == "measurement":
        extra += [
            f"TRY_CAST({text('s.value_as_number')} AS DOUBLE) AS value",
            f"{text('s.value_as_number')} AS _value_text",
            f"CASE WHEN u.id IS NOT NULL THEN u.concept_code ELSE {text('s.unit_source_value')} END AS unit",
        ]
        joins.append(f"LEFT JOIN {CONCEPT} u ON u.id = {bigint('s.unit_concept_id')}")
    if table == "drug_exposure":
        days = f"TRY_CAST({norm_id('s.days_supply')} AS INTEGER)"
        extra += [
            f"coalesce({first_timestamp(ends)}, {first_timestamp(times)} + to_days({days})) AS end_time",
            f"{any_bad_timestamp(ends)} AS _end_bad",
            "CAST(NULL AS VARCHAR) AS status",
        ]
    inner = f"""
        SELECT s._row, {norm_id("s." + ID_COLUMN[table])} AS _id, {norm_id("s.person_id")} AS _src_person,
          pm.person_key AS person_id, {visit} AS visit_id,
          {first_timestamp(times)} AS _time, {any_bad_timestamp(times)} AS _time_bad,
          {system} AS system, {code} AS code, {bigint(f"s.{p}_concept_id")} AS concept_id
          {"".join(", " + e for e in extra)}
        FROM {stg} s
        LEFT JOIN {STAGE}.person_map pm ON pm.src_id = {norm_id("s.person_id")}
        LEFT JOIN {CONCEPT} c ON c.id = {bigint(f"s.{p}_concept_id")}
        {" ".join(joins)}"""
    checks = _checks(table, times, ends)
    checked = f"{STAGE}.{table}_checked"
    b.con.execute(f"CREATE TABLE {checked} AS {checked_select(inner, checks)}")
    b.quarantine_checked(checked, table)
    columns = [("_time" if c in ("onset_time", "time", "start_time") else c) for c in TABLES[target]]
    b.con.execute(
        f'INSERT INTO "{target}" SELECT {", ".join(columns)} FROM {checked} WHERE _reason IS NULL ORDER BY _row'
    )
    if source_coded:
        b.con.execute(
            f'CREATE TABLE "{SOURCE_CODING_TABLE}" AS SELECT person_id, visit_id, _time AS onset_time, '
            f"_source_system AS system, _source_code AS code, _source_id AS concept_id FROM {checked} "
            "WHERE _reason IS NULL AND _source_code IS NOT NULL AND _source_id <> coalesce(concept_id, 0) "
            "ORDER BY _row"
        )


def _checks(table: str, times: list[str], ends: list[str]) -> list[Check]:
    """The row checks of a clinical table, first failing one wins."""
    p = DOMAIN_PREFIX[table]
    where = f"'{ID_COLUMN[table]} ' || coalesce(_id, '?')"
    checks = [
        Check("_src_person IS NULL", "missing_field", f"{where} || ' has no person_id'"),
        Check(
            "person_id IS NULL",
            "missing_reference",
            f"{where} || ': person_id ' || _src_person || ' is not in person'",
        ),
        Check(
            "_time IS NULL AND _time_bad",
            "bad_date",
            f"{where} || ': date ({', '.join(times)}) is not a date'",
        ),
        Check("code IS NULL", "missing_field", f"{where} || ' has no {p}_concept_id / {p}_source_value'"),
    ]
    if table != "condition_occurrence":  # a condition without a date falls back on its visit's start
        checks.append(
            Check("_time IS NULL", "missing_field", f"{where} || ' has no date ({', '.join(times)})'")
        )
    if table == "measurement":
        checks.append(
            Check(
                "value IS NULL AND _value_text IS NOT NULL",
                "bad_value",
                f"{where} || ': value_as_number ' || _value_text || ' is not a number'",
            )
        )
    if table == "drug_exposure":
        checks += [
            Check(
                "end_time IS NULL AND _end_bad",
                "bad_date",
                f"{where} || ': end date ({', '.join(ends)}) is not a date'",
            ),
            Check(
                "end_time < _time",
                "end_before_start",
                f"{where} || ' ends (' || end_time || ') before it starts (' || _time || ')'",
            ),
        ]
    return checks

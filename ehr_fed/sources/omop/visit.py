"""``visit_occurrence`` -> the ``visit`` record table.

``class_system`` is ``'omop:visit_concept_id'`` and ``class_code`` the concept id as text.
``admit_source`` / ``discharge_disposition`` / ``priority`` are ``system|code`` strings like the
FHIR reader's: ``omop:admitted_from_concept_id|8863`` when the concept id is set (non-zero),
else ``omop:admitted_from_source_value|<text>``. CDM 5.3's ``admitting_source_*`` and
``discharge_to_*`` columns are read under the CDM 5.4 names (``admitted_from_*``,
``discharged_to_*``), so one mapping works for both versions. ``preceding_visit_occurrence_id``
is not ``part_of`` (it is the previous visit, not a containing one) and ``visit_detail`` rows are
parts of visits, not stays: neither is read.
"""

from __future__ import annotations

from ehr_fed.sources.omop.build import STAGE, Build
from ehr_fed.sources.omop.checks import Check, checked_select
from ehr_fed.sources.omop.sql import any_bad_timestamp, bigint, first_timestamp, ident, literal, norm_id, text

#: CDM 5.4 column -> the CDM 5.3 column read when the 5.4 one is absent
CDM53_NAMES: dict[str, str] = {
    "admitted_from_concept_id": "admitting_source_concept_id",
    "admitted_from_source_value": "admitting_source_value",
    "discharged_to_concept_id": "discharge_to_concept_id",
    "discharged_to_source_value": "discharge_to_source_value",
}


def _coded(concept: str, label: str, source_value: str | None = None, source_label: str | None = None) -> str:
    """``omop:<label>|<id>`` for a non-zero concept id, else ``omop:<source_label>|<text>``."""
    expr = f"CASE WHEN coalesce({bigint(concept)}, 0) <> 0 THEN {literal('omop:' + label + '|')} || {norm_id(concept)}"
    if source_value is not None and source_label is not None:
        expr += (
            f" WHEN {text(source_value)} IS NOT NULL "
            f"THEN {literal('omop:' + source_label + '|')} || {text(source_value)}"
        )
    return expr + " END"


def build_visit(b: Build) -> None:
    """Fill ``visit`` and, with ``visit_id_field: visit_source_value``, ``_omop_stage.visit_map``."""
    opts = b.options.visit_occurrence
    id_field = b.options.visit_id_field
    required = ["visit_occurrence_id", "person_id", "visit_concept_id"]
    if id_field != "visit_occurrence_id":
        required.append(id_field)
    b.require("visit_occurrence", required)
    starts = b.present("visit_occurrence", opts.start_time_fields)
    ends = b.present("visit_occurrence", opts.end_time_fields)
    if not starts:
        b.require(
            "visit_occurrence",
            opts.start_time_fields[:1],
            why="none of omop.visit_occurrence.start_time_fields is present",
        )
    cols = b.backend.columns["visit_occurrence"]
    renamed = {new: (new if new in cols else old) for new, old in CDM53_NAMES.items()}
    extra = [opts.priority_field] if opts.priority_field else []
    stg = b.stage(
        "visit_occurrence",
        required + ["visit_source_value"] + starts + ends + list(renamed.values()) + extra,
    )
    key = norm_id("s.visit_occurrence_id") if id_field == "visit_occurrence_id" else text(f"s.{id_field}")
    admit, discharge, priority = _coded_columns(renamed, opts.priority_field)
    inner = f"""
        SELECT *, row_number() OVER (PARTITION BY visit_id ORDER BY _row) AS _dup FROM (
          SELECT s._row, {norm_id("s.visit_occurrence_id")} AS occ_id, {key} AS visit_id,
            {norm_id("s.person_id")} AS src_person, pm.person_key AS person_id,
            {first_timestamp(starts)} AS start_time, {any_bad_timestamp(starts)} AS _start_bad,
            {first_timestamp(ends)} AS end_time, {any_bad_timestamp(ends)} AS _end_bad,
            'omop:visit_concept_id' AS class_system, {norm_id("s.visit_concept_id")} AS class_code,
            {admit} AS admit_source, {discharge} AS discharge_disposition, {priority} AS priority,
            CAST(NULL AS VARCHAR) AS part_of
          FROM {stg} s LEFT JOIN {STAGE}.person_map pm ON pm.src_id = {norm_id("s.person_id")})"""
    checks = _visit_checks(id_field, starts, ends)
    b.con.execute(f"CREATE TABLE {STAGE}.visit_checked AS {checked_select(inner, checks)}")
    b.quarantine_checked(f"{STAGE}.visit_checked", "visit_occurrence")
    b.con.execute(
        'INSERT INTO "visit" SELECT visit_id, person_id, start_time, end_time, class_system, class_code, '
        f"admit_source, discharge_disposition, priority, part_of FROM {STAGE}.visit_checked "
        "WHERE _reason IS NULL ORDER BY _row"
    )
    b.con.execute(
        f"CREATE TABLE {STAGE}.visit_map AS SELECT occ_id, visit_id FROM {STAGE}.visit_checked "
        "WHERE _reason IS NULL AND occ_id IS NOT NULL"
    )


def _coded_columns(renamed: dict[str, str], priority_field: str | None) -> tuple[str, str, str]:
    """SQL of ``admit_source``, ``discharge_disposition`` and ``priority``."""

    def col(name: str) -> str:
        return f"s.{ident(renamed[name])}"

    admit = _coded(
        col("admitted_from_concept_id"),
        "admitted_from_concept_id",
        col("admitted_from_source_value"),
        "admitted_from_source_value",
    )
    discharge = _coded(
        col("discharged_to_concept_id"),
        "discharged_to_concept_id",
        col("discharged_to_source_value"),
        "discharged_to_source_value",
    )
    priority = (
        _coded(f"s.{ident(priority_field)}", priority_field) if priority_field else "CAST(NULL AS VARCHAR)"
    )
    return admit, discharge, priority


def _visit_checks(id_field: str, starts: list[str], ends: list[str]) -> list[Check]:
    """The row checks of ``visit_occurrence``, first failing one wins."""
    where = "'visit_occurrence_id ' || coalesce(occ_id, '?')"
    checks = [
        Check("visit_id IS NULL", "missing_field", f"{where} || ' has no {id_field}'"),
        Check("src_person IS NULL", "missing_field", f"{where} || ' has no person_id'"),
        Check(
            "person_id IS NULL",
            "missing_reference",
            f"{where} || ': person_id ' || src_person || ' is not in person'",
        ),
        Check(
            "start_time IS NULL AND _start_bad",
            "bad_date",
            f"{where} || ': start date ({', '.join(starts)}) is not a date'",
        ),
        Check(
            "start_time IS NULL", "missing_field", f"{where} || ' has no start date ({', '.join(starts)})'"
        ),
        Check(
            "end_time IS NULL AND _end_bad",
            "bad_date",
            f"{where} || ': end date ({', '.join(ends)}) is not a date'",
        ),
        Check(
            "end_time < start_time",
            "end_before_start",
            f"{where} || ' ends (' || end_time || ') before it starts (' || start_time || ')'",
        ),
        Check(
            "_dup > 1", "duplicate_id", f"{where} || ': {id_field} ' || visit_id || ' appears more than once'"
        ),
    ]
    return checks

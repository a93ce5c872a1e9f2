"""``person`` and ``death`` -> the ``person`` record table."""

from __future__ import annotations

from ehr_fed.sources.omop.build import STAGE, Build
from ehr_fed.sources.omop.checks import Check, checked_select
from ehr_fed.sources.omop.sql import bad_timestamp, bigint, literal, norm_id, text, timestamp

#: gender_concept_id -> sex (OMOP Gender vocabulary)
GENDER_CONCEPTS: dict[int, str] = {
    8507: "male",
    8532: "female",
    8521: "other",
    8570: "other",
    8551: "unknown",
}
#: gender_source_value (upper case) -> sex, used when the concept id is 0 or unknown
GENDER_SOURCE_VALUES: dict[str, str] = {
    "M": "male",
    "MALE": "male",
    "F": "female",
    "FEMALE": "female",
    "O": "other",
    "OTHER": "other",
}

PERSON_COLUMNS = [
    "person_id",
    "person_source_value",
    "gender_concept_id",
    "gender_source_value",
    "year_of_birth",
    "month_of_birth",
    "day_of_birth",
    "birth_datetime",
]


def _case(expr: str, mapping: dict, default: str) -> str:
    whens = " ".join(
        f"WHEN {k if isinstance(k, int) else literal(k)} THEN {literal(v)}" for k, v in mapping.items()
    )
    return f"CASE {expr} {whens} ELSE {default} END"


def build_person(b: Build) -> None:
    """Fill ``person`` and the map ``_omop_stage.person_map(src_id, person_key)``."""
    key_field = b.options.person_id_field
    b.require(
        "person",
        ["person_id"] + ([key_field] if key_field != "person_id" else []),
        why=f"omop.person_id_field is {key_field!r}",
    )
    stg = b.stage("person", PERSON_COLUMNS)
    key = norm_id("s.person_id") if key_field == "person_id" else text(f"s.{key_field}")
    sex_from_source = _case(f"upper({text('s.gender_source_value')})", GENDER_SOURCE_VALUES, "'unknown'")
    inner = f"""
        SELECT *, row_number() OVER (PARTITION BY person_key ORDER BY _row) AS _dup
        FROM (
          SELECT s._row, {norm_id("s.person_id")} AS src_id, {key} AS person_key,
            coalesce(CAST({timestamp("s.birth_datetime")} AS DATE),
                     try(make_date(TRY_CAST({norm_id("s.year_of_birth")} AS INTEGER),
                                   coalesce(TRY_CAST({norm_id("s.month_of_birth")} AS INTEGER), 1),
                                   coalesce(TRY_CAST({norm_id("s.day_of_birth")} AS INTEGER), 1)))) AS birth_date,
            ({bad_timestamp("s.birth_datetime")} OR {text("s.year_of_birth")} IS NOT NULL) AS _birth_given,
            {_case(bigint("s.gender_concept_id"), GENDER_CONCEPTS, sex_from_source)} AS sex
          FROM {stg} s)"""
    checks = [
        Check("src_id IS NULL", "missing_field", "'person_id is empty'"),
        Check(
            "person_key IS NULL",
            "missing_field",
            f"'{key_field} is empty for person_id ' || src_id || ' (omop.person_id_field)'",
        ),
        Check(
            "birth_date IS NULL AND _birth_given",
            "bad_date",
            "'birth date (birth_datetime or year/month/day_of_birth) of person_id ' || src_id || ' is not a date'",
        ),
        Check("_dup > 1", "duplicate_id", f"'{key_field} ' || person_key || ' appears more than once'"),
    ]
    b.con.execute(f"CREATE TABLE {STAGE}.person_checked AS {checked_select(inner, checks)}")
    b.quarantine_checked(f"{STAGE}.person_checked", "person")
    b.con.execute(
        f"CREATE TABLE {STAGE}.person_map AS SELECT src_id, person_key FROM {STAGE}.person_checked "
        "WHERE _reason IS NULL"
    )
    deaths = _build_death(b)
    b.con.execute(
        f'INSERT INTO "person" SELECT p.person_key, p.birth_date, p.sex, d.death_time '
        f"FROM {STAGE}.person_checked p LEFT JOIN {deaths} d ON d.src_id = p.src_id "
        "WHERE p._reason IS NULL ORDER BY p._row"
    )


def _build_death(b: Build) -> str:
    """Earliest death time per source person id (table ``_omop_stage.deaths``)."""
    out = f"{STAGE}.deaths"
    if not b.backend.has("death"):
        b.con.execute(f"CREATE TABLE {out} (src_id VARCHAR, death_time TIMESTAMP)")
        return out
    b.require("death", ["person_id"])
    stg = b.stage("death", ["person_id", "death_date", "death_datetime"])
    inner = f"""
        SELECT s._row, {norm_id("s.person_id")} AS src_id, pm.person_key,
          coalesce({timestamp("s.death_datetime")}, {timestamp("s.death_date")}) AS death_time,
          ({bad_timestamp("s.death_datetime")} OR {bad_timestamp("s.death_date")}) AS _bad
        FROM {stg} s LEFT JOIN {STAGE}.person_map pm ON pm.src_id = {norm_id("s.person_id")}"""
    checks = [
        Check("src_id IS NULL", "missing_field", "'person_id is empty'"),
        Check("person_key IS NULL", "missing_reference", "'person_id ' || src_id || ' is not in person'"),
        Check(
            "death_time IS NULL AND _bad",
            "bad_date",
            "'death_date/death_datetime of person_id ' || src_id || ' is not a date'",
        ),
        Check("death_time IS NULL", "missing_field", "'no death_date for person_id ' || src_id"),
    ]
    b.con.execute(f"CREATE TABLE {STAGE}.death_checked AS {checked_select(inner, checks)}")
    b.quarantine_checked(f"{STAGE}.death_checked", "death")
    b.con.execute(
        f"CREATE TABLE {out} AS SELECT src_id, min(death_time) AS death_time FROM {STAGE}.death_checked "
        "WHERE _reason IS NULL GROUP BY src_id"
    )
    return out

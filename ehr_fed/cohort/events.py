"""Index events, labels and exclusions, as SQL over the ``std_*`` tables.

Both builders create the temporary table ``cohort_event``
(``event_id, person_id, visit_id, start_time, end_time, index_time, label``) and
return the exclusion counts (name -> index events removed), in the order applied.

Readmission (``inpatient_discharge`` + ``readmission``)
    Stays are inpatient visits that are not ``part_of`` another visit and have a start. Every stay
    with an end is an index event at its end. Its label is 1 when the person's next stay (by start,
    then end, then id) starts on or after the end and no more than ``window_days`` after it
    (exact timestamps).
Progression (``first_finding`` + ``progression``)
    The index time is the person's first finding (a condition of the index concept set, or a lab
    value in the index range). The label is 1 when an outcome (a condition of the label's concept
    set, or a lab value in the label's range) occurs after the index time and no later than
    ``horizon_years`` after it.
"""

from __future__ import annotations

import duckdb

from ehr_fed.mapping.study import FirstFinding, LabCriterion, StudySpec


def quote(text: str) -> str:
    """SQL string literal of ``text``."""
    return "'" + str(text).replace("'", "''") + "'"


def build_events(con: duckdb.DuckDBPyConnection, study: StudySpec) -> dict[str, int]:
    """Create ``cohort_event`` for ``study``; return exclusion counts."""
    if study.index_event.kind == "inpatient_discharge":
        excluded = _readmission(con, study)
    else:
        excluded = _progression(con, study)
    con.execute("""CREATE OR REPLACE TEMP TABLE cohort_event AS
        SELECT row_number() OVER (ORDER BY person_id, index_time, visit_id) AS event_id, *
        FROM _event WHERE excluded_by IS NULL""")
    return excluded


def _exclude(con: duckdb.DuckDBPyConnection, name: str, condition: str) -> int:
    """Mark still-included events matching ``condition`` (SQL over ``e``) as excluded by ``name``."""
    n = con.execute(f"SELECT count(*) FROM _event e WHERE excluded_by IS NULL AND ({condition})").fetchone()[0]
    con.execute(f"UPDATE _event e SET excluded_by = '{name}' WHERE excluded_by IS NULL AND ({condition})")
    return int(n)


def _readmission(con: duckdb.DuckDBPyConnection, study: StudySpec) -> dict[str, int]:
    window = int(study.label.window_days)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _event AS
        WITH stays AS (
            SELECT visit_id, person_id, start_time, end_time, transfer_out, planned FROM std_visit
            WHERE category = 'inpatient' AND NOT is_part AND start_time IS NOT NULL),
        ordered AS (
            SELECT *, lead(start_time) OVER w AS next_start, lead(planned) OVER w AS next_planned
            FROM stays WINDOW w AS (PARTITION BY person_id ORDER BY start_time, end_time, visit_id))
        SELECT person_id, visit_id, start_time, end_time, end_time AS index_time,
               CAST(CASE WHEN next_start >= end_time AND next_start <= end_time + INTERVAL ({window}) DAY
                         THEN 1 ELSE 0 END AS TINYINT) AS label,
               transfer_out, coalesce(next_planned, false) AS next_planned,
               CAST(NULL AS VARCHAR) AS excluded_by
        FROM ordered WHERE end_time IS NOT NULL""")
    ex = study.exclusions
    out: dict[str, int] = {}
    if ex.death_during_stay:
        out["death_during_stay"] = _exclude(con, "death_during_stay", """EXISTS (SELECT 1 FROM person p
            WHERE p.person_id = e.person_id AND p.death_time >= e.start_time AND p.death_time <= e.end_time)""")
    if ex.transfer_out:
        out["transfer_out"] = _exclude(con, "transfer_out", "e.transfer_out")
    if ex.planned_readmission:
        out["planned_readmission"] = _exclude(con, "planned_readmission", "e.label = 1 AND e.next_planned")
    if ex.min_followup_days is not None:
        out["min_followup_days"] = _exclude_short_followup(con, ex.min_followup_days)
    return out


def _exclude_short_followup(con: duckdb.DuckDBPyConnection, days: int) -> int:
    """Events without a positive label whose person's last record is sooner than ``days`` after index."""
    con.execute("""CREATE OR REPLACE TEMP TABLE _last_seen AS
        SELECT person_id, max(t) AS last_time FROM (
            SELECT person_id, greatest(start_time, end_time) AS t FROM std_visit
            UNION ALL SELECT person_id, time FROM std_condition
            UNION ALL SELECT person_id, time FROM _measurement
            UNION ALL SELECT person_id, start_time FROM std_medication
            UNION ALL SELECT person_id, death_time FROM person) GROUP BY person_id""")
    return _exclude(con, "min_followup_days", f"""e.label = 0 AND coalesce((SELECT l.last_time FROM _last_seen l
        WHERE l.person_id = e.person_id), e.index_time) < e.index_time + INTERVAL ({int(days)}) DAY""")


def _lab_sql(crit: LabCriterion | None) -> str | None:
    if crit is None:
        return None
    where = [f"lab = {quote(crit.lab)}"]
    if crit.min is not None:
        where.append(f"value >= {float(crit.min)!r}")
    if crit.below is not None:
        where.append(f"value < {float(crit.below)!r}")
    return f"SELECT person_id, time FROM std_lab WHERE {' AND '.join(where)}"


def _finding_sql(concept_set: str | None, lab: LabCriterion | None) -> str:
    parts = []
    if concept_set:
        parts.append(f"SELECT person_id, time FROM std_condition_set WHERE concept_set = {quote(concept_set)}")
    lab_sql = _lab_sql(lab)
    if lab_sql:
        parts.append(lab_sql)
    return " UNION ALL ".join(f"({p})" for p in parts)


def _progression(con: duckdb.DuckDBPyConnection, study: StudySpec) -> dict[str, int]:
    index: FirstFinding = study.index_event
    label = study.label
    months = int(round(label.horizon_years * 12))
    con.execute(f"CREATE OR REPLACE TEMP TABLE _finding AS {_finding_sql(index.concept_set, index.lab)}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _outcome AS {_finding_sql(label.concept_set, label.lab)}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _event AS
        WITH first AS (SELECT person_id, min(time) AS index_time FROM _finding
                       WHERE time IS NOT NULL GROUP BY person_id)
        SELECT f.person_id, CAST(NULL AS VARCHAR) AS visit_id, CAST(NULL AS TIMESTAMP) AS start_time,
               CAST(NULL AS TIMESTAMP) AS end_time, f.index_time,
               CAST(CASE WHEN EXISTS (SELECT 1 FROM _outcome o WHERE o.person_id = f.person_id
                    AND o.time > f.index_time AND o.time <= f.index_time + to_months({months}))
                    THEN 1 ELSE 0 END AS TINYINT) AS label,
               false AS transfer_out, false AS next_planned, CAST(NULL AS VARCHAR) AS excluded_by
        FROM first f""")
    out: dict[str, int] = {}
    if study.exclusions.prior_outcome:
        out["prior_outcome"] = _exclude(con, "prior_outcome", """EXISTS (SELECT 1 FROM _outcome o
            WHERE o.person_id = e.person_id AND o.time <= e.index_time)""")
    if study.exclusions.min_followup_days is not None:
        out["min_followup_days"] = _exclude_short_followup(con, study.exclusions.min_followup_days)
    return out

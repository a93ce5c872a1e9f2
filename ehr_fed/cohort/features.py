"""Features of each index event, computed only from data before its index time.

Every feature kind of the study spec maps to a function returning SQL that
selects ``event_id, value`` from ``cohort_event e`` (a registry, like OHDSI
FeatureExtraction's settings). What "before" means, exactly:

* A record counts when its time is strictly before the index time. For stay index events
  (readmission: index time = discharge) the stay's own records also count when their time is
  at or before the discharge, or missing: the stay's diagnoses and labs up to discharge are
  part of what is known at discharge.
* Visit counts (``prior_visits``) look back from the anchor: the admission for stay index events,
  the index time otherwise; the window is ``[anchor - window_days, anchor)`` on visit start;
  visits that are part of another visit are not counted.
* ``last_lab``: the latest value within ``windows.lookback_lab_days`` before the index time.
* ``active_medications``: distinct medication codes started before the index time and either
  ending at/after it or, with no end, started within ``windows.active_medication_days``.
* ``age``: completed years at the index time (days / 365.25, floored); ``sex_female``: 1 female,
  0 male, NaN otherwise; ``length_of_stay``: days (fractional) from admission to discharge.
* ``lace``: L (LOS in calendar days: 0, 1, 2, 3, 4-6 -> 4, 7-13 -> 5, >= 14 -> 7), A (3 when the
  admission is acute: a mapping ``emergency_admission`` code, or an emergency visit starting in the
  24 hours before admission), C (Charlson 0-3 as is, >= 4 -> 5), E (emergency visits in the prior
  ``windows.prior_ed_days``, capped at 4).

Missing stays missing: when the site has no records at all of a domain (no conditions, no
medications, no emergency visits), the features built on it are NaN, never a silent zero.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import numpy as np
import pandas as pd

from ehr_fed.cohort import charlson
from ehr_fed.cohort.events import quote
from ehr_fed.mapping.study import StudySpec

FeatureSQL = Callable[[object, StudySpec], str]
_REGISTRY: dict[str, FeatureSQL] = {}


def feature_kind(name: str):
    """Register the SQL builder of feature kind ``name``."""
    def wrap(fn: FeatureSQL) -> FeatureSQL:
        _REGISTRY[name] = fn
        return fn
    return wrap


def implemented_kinds() -> list[str]:
    return sorted(_REGISTRY)


def _before(alias: str, time_col: str, stay: bool) -> str:
    """Record ``alias`` is known at the index time of ``e``."""
    cond = f"{alias}.{time_col} < e.index_time"
    if stay:
        cond = (f"({cond} OR ({alias}.visit_id = e.visit_id AND "
                f"({alias}.{time_col} IS NULL OR {alias}.{time_col} <= e.index_time)))")
    return cond


@feature_kind("age")
def _age(f, study: StudySpec) -> str:
    return """SELECT e.event_id, floor(date_diff('day', p.birth_date, CAST(e.index_time AS DATE)) / 365.25) AS value
              FROM cohort_event e LEFT JOIN person p ON p.person_id = e.person_id"""


@feature_kind("sex_female")
def _sex(f, study: StudySpec) -> str:
    return """SELECT e.event_id, CASE p.sex WHEN 'female' THEN 1.0 WHEN 'male' THEN 0.0 END AS value
              FROM cohort_event e LEFT JOIN person p ON p.person_id = e.person_id"""


@feature_kind("length_of_stay")
def _los(f, study: StudySpec) -> str:
    return "SELECT event_id, epoch(end_time - start_time) / 86400.0 AS value FROM cohort_event"


def _visit_count(category: str, days: int, study: StudySpec) -> str:
    anchor = "coalesce(e.start_time, e.index_time)" if study.is_stay_study else "e.index_time"
    return f"""SELECT e.event_id,
        CASE WHEN (SELECT count(*) FROM std_visit WHERE category = {quote(category)}) = 0 THEN NULL
             ELSE (SELECT count(*) FROM std_visit v WHERE v.person_id = e.person_id
                   AND v.category = {quote(category)} AND NOT v.is_part
                   AND v.visit_id IS DISTINCT FROM e.visit_id
                   AND v.start_time >= {anchor} - INTERVAL ({int(days)}) DAY AND v.start_time < {anchor})
        END AS value FROM cohort_event e"""


@feature_kind("prior_visits")
def _prior_visits(f, study: StudySpec) -> str:
    return _visit_count(f.visit_category, f.window_days, study)


def _domain_guard(table: str, expr: str) -> str:
    return f"CASE WHEN (SELECT count(*) FROM {table}) = 0 THEN NULL ELSE {expr} END"


def _has_set(concept_set: str, study: StudySpec) -> str:
    return (f"EXISTS (SELECT 1 FROM std_condition_set c WHERE c.person_id = e.person_id "
            f"AND c.concept_set = {quote(concept_set)} AND {_before('c', 'time', study.is_stay_study)})")


@feature_kind("condition_flag")
def _condition_flag(f, study: StudySpec) -> str:
    expr = f"CASE WHEN {_has_set(f.concept_set, study)} THEN 1.0 ELSE 0.0 END"
    return f"SELECT e.event_id, {_domain_guard('std_condition', expr)} AS value FROM cohort_event e"


def prepare_charlson(con: duckdb.DuckDBPyConnection, study: StudySpec) -> None:
    """Create ``cohort_charlson(event_id, value)``: the Charlson index of each event (NULL without conditions)."""
    con.execute("CREATE OR REPLACE TEMP TABLE charlson_weight "
                "(concept_set VARCHAR, weight INTEGER, superseded_by VARCHAR)")
    con.executemany("INSERT INTO charlson_weight VALUES (?, ?, ?)", charlson.weight_rows())
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _charlson_cat AS
        SELECT DISTINCT e.event_id, c.concept_set FROM cohort_event e
        JOIN std_condition_set c ON c.person_id = e.person_id AND {_before('c', 'time', study.is_stay_study)}
        WHERE starts_with(c.concept_set, '{charlson.PREFIX}')""")
    score = """SELECT k.event_id, sum(w.weight) AS score FROM _charlson_cat k
        JOIN charlson_weight w ON w.concept_set = k.concept_set
        WHERE NOT EXISTS (SELECT 1 FROM _charlson_cat h WHERE h.event_id = k.event_id
                          AND h.concept_set = w.superseded_by)
        GROUP BY k.event_id"""
    expr = _domain_guard("std_condition", "CAST(coalesce(s.score, 0) AS DOUBLE)")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE cohort_charlson AS
        SELECT e.event_id, {expr} AS value FROM cohort_event e LEFT JOIN ({score}) s USING (event_id)""")


@feature_kind("charlson")
def _charlson(f, study: StudySpec) -> str:
    return "SELECT event_id, value FROM cohort_charlson"


@feature_kind("last_lab")
def _last_lab(f, study: StudySpec) -> str:
    days = study.windows.lookback_lab_days
    return f"""SELECT e.event_id, (SELECT arg_max(l.value, l.time) FROM std_lab l
                 WHERE l.person_id = e.person_id AND l.lab = {quote(f.lab)}
                 AND {_before('l', 'time', study.is_stay_study)}
                 AND (l.time IS NULL OR l.time >= e.index_time - INTERVAL ({int(days)}) DAY)) AS value
               FROM cohort_event e"""


@feature_kind("active_medications")
def _active_meds(f, study: StudySpec) -> str:
    days = int(study.windows.active_medication_days)
    expr = f"""CAST((SELECT count(DISTINCT coalesce(m.vocabulary, '') || '|' || m.code) FROM std_medication m
                WHERE m.person_id = e.person_id AND m.start_time < e.index_time
                AND coalesce(lower(m.status), '') NOT IN ('entered-in-error', 'cancelled', 'draft')
                AND (m.end_time >= e.index_time
                     OR (m.end_time IS NULL AND m.start_time >= e.index_time - INTERVAL ({days}) DAY)))
               AS DOUBLE)"""
    return f"SELECT e.event_id, {_domain_guard('std_medication', expr)} AS value FROM cohort_event e"


@feature_kind("lace")
def _lace(f, study: StudySpec) -> str:
    los = "date_diff('day', CAST(e.start_time AS DATE), CAST(e.end_time AS DATE))"
    l_pts = f"""CASE WHEN {los} < 1 THEN 0 WHEN {los} <= 3 THEN {los} WHEN {los} <= 6 THEN 4
                     WHEN {los} <= 13 THEN 5 ELSE 7 END"""
    acute = """CASE WHEN (SELECT s.emergency_admission FROM std_visit s WHERE s.visit_id = e.visit_id LIMIT 1)
                 OR EXISTS (SELECT 1 FROM std_visit v WHERE v.person_id = e.person_id
                            AND v.category = 'emergency' AND v.visit_id IS DISTINCT FROM e.visit_id
                            AND v.start_time >= e.start_time - INTERVAL 1 DAY AND v.start_time <= e.start_time)
               THEN 3 ELSE 0 END"""
    ed = f"SELECT event_id, value FROM ({_visit_count('emergency', study.windows.prior_ed_days, study)})"
    return f"""SELECT e.event_id,
        {l_pts} + {acute}
        + (SELECT CASE WHEN c.value >= 4 THEN 5 ELSE c.value END FROM ({_charlson(f, study)}) c
           WHERE c.event_id = e.event_id)
        + (SELECT CASE WHEN d.value >= 4 THEN 4 ELSE d.value END FROM ({ed}) d WHERE d.event_id = e.event_id) AS value
        FROM cohort_event e"""


def compute_features(con: duckdb.DuckDBPyConnection, study: StudySpec) -> pd.DataFrame:
    """One float64 column per study feature, indexed by ``event_id``."""
    events = con.execute("SELECT event_id FROM cohort_event ORDER BY event_id").df()
    out = pd.DataFrame(index=pd.Index(events["event_id"].to_numpy(), name="event_id"))
    if any(f.kind in ("charlson", "lace") for f in study.features):
        prepare_charlson(con, study)
    for f in study.features:
        build = _REGISTRY.get(f.kind)
        if build is None:
            raise KeyError(f"no implementation of feature kind {f.kind!r}; implemented: {implemented_kinds()}")
        values = con.execute(build(f, study)).df().set_index("event_id")["value"]
        out[f.name] = pd.to_numeric(values.reindex(out.index), errors="coerce").astype(np.float64)
    return out

"""Profile a source against a site mapping: what local codes, units and visit classes are used.

Authoring a mapping is a loop: profile -> edit -> validate -> preview. The profile
lists, with counts, every visit class, code system, lab code and unit the records
actually use, and says which of them the mapping does not cover yet. Codes labelled
LOINC or SNOMED CT are checked (format and check digit). Given the study too, it says
which codes feed which study feature and which feed none, flags lab units harmonize
would quarantine, and sources without values (:mod:`ehr_fed.mapping.profile_study`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ehr_fed.mapping.apply import normalise_code, system_vocabularies
from ehr_fed.mapping.codecheck import code_problem
from ehr_fed.mapping.site import SiteMapping
from ehr_fed.mapping.units import canonical_ucum

_CODED = ("condition", "measurement", "medication", "procedure")


@dataclass(frozen=True)
class ProfileRow:
    """One thing the source uses.

    ``section`` is ``visit_class``, ``code_system``, ``code`` (measurement codes), ``unit`` or, with a
    study, ``condition_code``, ``lab_unit``, ``feature`` and ``source``; ``maps_to`` is what the mapping
    makes of it (None: not covered); ``feeds`` the study features it feeds (None: none, or no study);
    ``problem`` what is wrong with it (a code failing its check digit, a unit that cannot be converted,
    a source without values). A row with a problem is not covered.
    """

    section: str
    table: str
    system: str | None
    value: str | None
    count: int
    maps_to: str | None
    feeds: str | None = None
    problem: str | None = None

    @property
    def covered(self) -> bool:
        return self.maps_to is not None and self.problem is None


def profile_records(records, mapping: SiteMapping | None = None, study=None, *,
                    extra_concept_sets=None, extra_features=None) -> list[ProfileRow]:
    """Profile ``records`` (a SourceRecords) against ``mapping`` (None: everything is uncovered).

    With ``study`` (a StudySpec; needs ``mapping``), the rows of :func:`ehr_fed.mapping.profile_study.study_rows`
    are added (``extra_concept_sets`` / ``extra_features``: more concept sets and the feature each feeds,
    such as the Charlson categories).
    """
    mapping = mapping or SiteMapping(site_id="unmapped", source=records.kind)
    con = records.con
    rows: list[ProfileRow] = []
    classes = {}
    for cat in ("inpatient", "emergency", "outpatient", "other"):
        for vc in getattr(mapping.visits, cat):
            classes.setdefault((vc.system, vc.code), cat)
    for system, code, n in con.execute("""SELECT class_system, class_code, count(*) FROM visit
                                          GROUP BY ALL ORDER BY 3 DESC, 1, 2""").fetchall():
        cat = classes.get((system, code)) or classes.get((system, "*"))
        rows.append(ProfileRow("visit_class", "visit", system, code, int(n), cat))
    systems = system_vocabularies(mapping)
    local = {(lc.system, lc.code): f"{lc.to.vocabulary}|{lc.to.code}" for lc in mapping.local_codes}
    local_systems = {s for s, _ in local}
    for table in _CODED:
        for system, n in con.execute(f'SELECT system, count(*) FROM "{table}" GROUP BY ALL ORDER BY 2 DESC, 1'
                                     ).fetchall():
            maps_to = systems.get(system) or ("local_codes" if system in local_systems else None)
            rows.append(ProfileRow("code_system", table, system, None, int(n), maps_to))
    if study is None:
        for system, code, n in con.execute("""SELECT system, code, count(*) FROM measurement
                                              GROUP BY ALL ORDER BY 3 DESC, 1, 2""").fetchall():
            vocab = systems.get(system)
            maps_to = local.get((system, code)) or (f"{vocab}|{code}" if vocab else None)
            std = maps_to.split("|", 1) if maps_to else (None, None)
            problem = code_problem(std[0], normalise_code(std[0], std[1])) if maps_to else None
            rows.append(ProfileRow("code", "measurement", system, code, int(n), maps_to, problem=problem))
    for unit, n in con.execute("""SELECT unit, count(*) FROM measurement WHERE value IS NOT NULL
                                  GROUP BY ALL ORDER BY 2 DESC, 1""").fetchall():
        rows.append(ProfileRow("unit", "measurement", None, unit, int(n), canonical_ucum(unit, mapping.units)))
    if study is not None:
        from ehr_fed.mapping.profile_study import study_rows

        rows += study_rows(records, mapping, study, ProfileRow, extra_concept_sets, extra_features)
    return rows


SECTIONS = ("source", "feature", "visit_class", "code_system", "code", "condition_code", "lab_unit", "unit")


def format_profile(rows: list[ProfileRow], *, limit: int | None = 40) -> str:
    """A plain-text table per section (``limit`` rows each; uncovered rows first)."""
    out = []
    problems = [r for r in rows if r.problem]
    if problems:
        out.append(f"{len(problems)} problem(s) to fix before harmonizing (marked BAD below)")
        out.append("")
    with_feeds = any(r.feeds for r in rows)
    for section in SECTIONS:
        part = sorted((r for r in rows if r.section == section),
                      key=lambda r: (r.problem is None, r.covered, -r.count))
        if not part:
            continue
        missing = sum(1 for r in part if not r.covered)
        out.append(f"== {section} ({len(part)} used, {missing} not covered by the mapping)")
        out.append(f"{'table':<12} {'count':>8}  {'covered':<8} {'system|value':<70} maps_to"
                   + ("  -> feeds" if with_feeds and section in ("code", "condition_code", "lab_unit") else ""))
        shown = part if limit is None else part[:limit]
        for r in shown:
            what = "|".join(str(x) for x in (r.system, r.value) if x is not None) or "(none)"
            mark = "BAD" if r.problem else ("yes" if r.covered else "NO")
            feeds = (f"  -> {r.feeds or 'no study feature'}"
                     if with_feeds and section in ("code", "condition_code", "lab_unit") else "")
            out.append(f"{r.table:<12} {r.count:>8}  {mark:<8} {what:<70} {r.maps_to or '-'}{feeds}")
            if r.problem:
                out.append(f"{'':<23}! {r.problem}")
        if len(shown) < len(part):
            out.append(f"... {len(part) - len(shown)} more (use --limit 0 or --json for all)")
        out.append("")
    return "\n".join(out)


def profile_json(rows: list[ProfileRow]) -> str:
    """Every row as a JSON object (with ``covered``)."""
    return json.dumps([asdict(r) | {"covered": r.covered} for r in rows], indent=2)

"""Profile a source against a site mapping: what local codes, units and visit classes are used.

Authoring a mapping is a loop: profile -> edit -> validate -> preview. The profile
lists, with counts, every visit class, code system, lab code and unit the records
actually use, and says which of them the mapping does not cover yet.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ehr_fed.mapping.apply import system_vocabularies
from ehr_fed.mapping.site import SiteMapping
from ehr_fed.mapping.units import canonical_ucum

_CODED = ("condition", "measurement", "medication", "procedure")


@dataclass(frozen=True)
class ProfileRow:
    """One thing the source uses.

    ``section`` is ``visit_class``, ``code_system``, ``code`` (measurement codes) or ``unit``;
    ``maps_to`` is what the mapping makes of it (None: not covered).
    """

    section: str
    table: str
    system: str | None
    value: str | None
    count: int
    maps_to: str | None

    @property
    def covered(self) -> bool:
        return self.maps_to is not None


def profile_records(records, mapping: SiteMapping | None = None) -> list[ProfileRow]:
    """Profile ``records`` (a SourceRecords) against ``mapping`` (None: everything is uncovered)."""
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
    for system, code, n in con.execute("""SELECT system, code, count(*) FROM measurement
                                          GROUP BY ALL ORDER BY 3 DESC, 1, 2""").fetchall():
        vocab = systems.get(system)
        maps_to = local.get((system, code)) or (f"{vocab}|{code}" if vocab else None)
        rows.append(ProfileRow("code", "measurement", system, code, int(n), maps_to))
    for unit, n in con.execute("""SELECT unit, count(*) FROM measurement WHERE value IS NOT NULL
                                  GROUP BY ALL ORDER BY 2 DESC, 1""").fetchall():
        rows.append(ProfileRow("unit", "measurement", None, unit, int(n), canonical_ucum(unit, mapping.units)))
    return rows


def format_profile(rows: list[ProfileRow], *, limit: int | None = 40) -> str:
    """A plain-text table per section (``limit`` rows each; uncovered rows first)."""
    out = []
    for section in ("visit_class", "code_system", "code", "unit"):
        part = sorted((r for r in rows if r.section == section), key=lambda r: (r.covered, -r.count))
        if not part:
            continue
        missing = sum(1 for r in part if not r.covered)
        out.append(f"== {section} ({len(part)} used, {missing} not covered by the mapping)")
        out.append(f"{'table':<12} {'count':>8}  {'covered':<8} {'system|value':<70} maps_to")
        shown = part if limit is None else part[:limit]
        for r in shown:
            what = "|".join(str(x) for x in (r.system, r.value) if x is not None) or "(none)"
            out.append(f"{r.table:<12} {r.count:>8}  {'yes' if r.covered else 'NO':<8} {what:<70} {r.maps_to or '-'}")
        if len(shown) < len(part):
            out.append(f"... {len(part) - len(shown)} more (use --limit 0 or --json for all)")
        out.append("")
    return "\n".join(out)


def profile_json(rows: list[ProfileRow]) -> str:
    return json.dumps([asdict(r) | {"covered": r.covered} for r in rows], indent=2)

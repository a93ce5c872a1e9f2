"""Profile a source against a site mapping *and* a study: what feeds which study feature, and what cannot.

Adds to :func:`ehr_fed.mapping.profile.profile_records` (codes, units, visit classes used) the answers a
mapping author needs before harmonizing:

``condition_code`` / ``code`` rows
    every condition and measurement code with the study features it feeds (``feeds``; None: none), and a
    ``problem`` when a code labelled LOINC or SNOMED CT fails its format or check digit
    (:mod:`ehr_fed.mapping.codecheck`), or when a measurement code has records but no values;
``lab_unit`` rows
    every (lab code, unit) pair feeding a study lab, with the lab's canonical unit when the unit converts
    to it, or a ``problem`` saying harmonize will quarantine those values (the same rule as
    :func:`ehr_fed.mapping.apply.apply_mapping`);
``feature`` rows
    every coded study feature with the number of source records that feed it (a ``problem`` when none);
``source`` rows
    tables the study needs that are empty or carry no values (an OMOP measurement table without
    ``value_as_number``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ehr_fed.mapping.apply import PREFIX_VOCABULARIES, normalise_code, system_vocabularies
from ehr_fed.mapping.codecheck import code_problem
from ehr_fed.mapping.site import SiteMapping
from ehr_fed.mapping.study import ConceptSet, StudySpec
from ehr_fed.mapping.units import canonical_ucum, conversion_table


def set_features(study: StudySpec, extra: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Concept set -> the features (or ``index event`` / ``label``) it feeds."""
    out: dict[str, list[str]] = defaultdict(list)
    for f in study.features:
        if getattr(f, "kind", None) == "condition_flag":
            out[f.concept_set].append(f.name)
    for what, part in (("index event", study.index_event), ("label", study.label)):
        cs = getattr(part, "concept_set", None)
        if cs:
            out[cs].append(what)
    for cs, feature in (extra or {}).items():
        out[cs].append(feature)
    return out


def lab_features(study: StudySpec) -> dict[str, list[str]]:
    """Study lab -> the features (or ``index event`` / ``label``) computed from it."""
    out: dict[str, list[str]] = defaultdict(list)
    for f in study.features:
        if getattr(f, "kind", None) == "last_lab":
            out[f.lab].append(f.name)
    for what, part in (("index event", study.index_event), ("label", study.label)):
        crit = getattr(part, "lab", None)
        if crit is not None:
            out[crit.lab].append(what)
    return out


class _Resolver:
    """Local (system, code) -> standard (vocabulary, code), as :mod:`ehr_fed.mapping.apply` resolves it."""

    def __init__(self, mapping: SiteMapping):
        self.systems = system_vocabularies(mapping)
        self.local = {(lc.system, lc.code): lc for lc in mapping.local_codes}

    def standard(self, system: str | None, code: str | None) -> tuple[str | None, str | None, str | None]:
        """(vocabulary, normalised code, local unit declared by the mapping)."""
        lc = self.local.get((system, code))
        if lc is not None:
            return lc.to.vocabulary, normalise_code(lc.to.vocabulary, lc.to.code), lc.unit
        vocab = self.systems.get(system)
        return vocab, (normalise_code(vocab, code) if vocab and code is not None else code), None


def _matches(sets: dict[str, ConceptSet], vocab: str | None, code: str | None) -> list[str]:
    if vocab is None or code is None or vocab == "omop":
        return []
    hits = []
    for name, cs in sets.items():
        for c in getattr(cs, vocab, []) or []:
            c = normalise_code(vocab, c)
            if (code.startswith(c) if vocab in PREFIX_VOCABULARIES else code == c):
                hits.append(name)
                break
    return hits


def study_rows(records, mapping: SiteMapping, study: StudySpec, row_type: Any,
               extra_concept_sets: dict[str, ConceptSet] | None = None,
               extra_features: dict[str, str] | None = None) -> list[Any]:
    """The study-aware rows (``row_type`` is :class:`ehr_fed.mapping.profile.ProfileRow`)."""
    con, resolver = records.con, _Resolver(mapping)
    sets = {**study.concept_sets, **(extra_concept_sets or {})}
    feeds_of_set, feeds_of_lab = set_features(study, extra_features), lab_features(study)
    lab_of_code = {("loinc", normalise_code("loinc", c)): lab for lab, s in study.labs.items() for c in s.loinc}
    rows: list[Any] = []
    fed_by: dict[str, int] = defaultdict(int)

    by_concept = _concept_sets_by_id(con, sets)
    for system, code, n in con.execute('SELECT system, code, count(*) FROM "condition" GROUP BY ALL '
                                       "ORDER BY 3 DESC, 1, 2").fetchall():
        vocab, std, _ = resolver.standard(system, code)
        matched = set(_matches(sets, vocab, std)) | by_concept.get((system, code), set())
        feats = sorted({f for cs in matched for f in feeds_of_set.get(cs, [])})
        for f in feats:
            fed_by[f] += int(n)
        rows.append(row_type("condition_code", "condition", system, code, int(n),
                             f"{vocab}|{std}" if vocab else None, feeds=", ".join(feats) or None,
                             problem=code_problem(vocab, std) if vocab else None))

    measured = con.execute("""SELECT system, code, unit, count(*) AS n, count(value) AS n_values
                              FROM measurement GROUP BY ALL ORDER BY 4 DESC, 1, 2""").fetchall()
    per_code: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for system, code, unit, n, n_values in measured:
        vocab, std, local_unit = resolver.standard(system, code)
        per_code[(system, code)][0] += int(n)
        per_code[(system, code)][1] += int(n_values)
        lab = lab_of_code.get((vocab, std))
        if lab is None or not n_values:
            continue
        spec = study.labs[lab]
        unit = unit if unit is not None and str(unit).strip() else local_unit
        ucum = canonical_ucum(unit, mapping.units)
        accepted = conversion_table(spec.analyte or lab, spec.unit)
        feats = feeds_of_lab.get(lab, [])
        if ucum in accepted:
            for f in feats:
                fed_by[f] += int(n_values)
            problem = None
        else:
            problem = (f"unit {unit!r} of {lab} cannot be converted to {spec.unit!r} (accepted: "
                       f"{', '.join(accepted)}): harmonize quarantines these {n_values} values. Map the "
                       "spelling under 'units:' if it is one of the accepted units")
        rows.append(row_type("lab_unit", "measurement", f"{system}|{code}", unit, int(n_values),
                             spec.unit if problem is None else None, feeds=", ".join(feats) or None,
                             problem=problem))
    for (system, code), (n, n_values) in per_code.items():
        vocab, std, _ = resolver.standard(system, code)
        lab = lab_of_code.get((vocab, std))
        problem = code_problem(vocab, std) if vocab else None
        if problem is None and lab is not None and n_values == 0:
            problem = f"{n} records of {lab} and none carries a value: the feature stays missing"
        rows.append(row_type("code", "measurement", system, code, n, f"{vocab}|{std}" if vocab else None,
                             feeds=", ".join(feeds_of_lab.get(lab, [])) or None if lab else None,
                             problem=problem))
    rows += _source_rows(measured, study, row_type, con)
    coded = sorted({f for fs in feeds_of_set.values() for f in fs} | {f for fs in feeds_of_lab.values() for f in fs})
    for f in coded:
        rows.append(row_type("feature", "study", None, f, fed_by.get(f, 0), "fed" if fed_by.get(f) else None,
                             feeds=f, problem=None if fed_by.get(f) else
                             "no source record feeds this feature: it will be 0 or missing for every row"))
    return rows


def _concept_sets_by_id(con, sets: dict[str, ConceptSet]) -> dict[tuple, set[str]]:
    """(system, code) -> concept sets matched by OMOP concept id (with descendants from concept_ancestor)."""
    from ehr_fed.mapping.apply import _has_table, _table

    pairs = [(name, int(c)) for name, cs in sets.items() for c in cs.omop]
    if not pairs:
        return {}
    _table(con, "_profile_cs_concept", "concept_set VARCHAR, concept_id BIGINT", pairs)
    if _has_table(con, "concept_ancestor"):
        con.execute("""INSERT INTO _profile_cs_concept SELECT DISTINCT k.concept_set, a.descendant_concept_id
                       FROM _profile_cs_concept k JOIN concept_ancestor a ON a.ancestor_concept_id = k.concept_id""")
    out: dict[tuple, set[str]] = defaultdict(set)
    for system, code, name in con.execute("""SELECT DISTINCT r.system, r.code, k.concept_set FROM "condition" r
                                             JOIN _profile_cs_concept k ON k.concept_id = r.concept_id""").fetchall():
        out[(system, code)].add(name)
    return out


def _source_rows(measured, study: StudySpec, row_type: Any, con) -> list[Any]:
    out = []
    if study.labs:
        n = sum(r[3] for r in measured)
        n_values = sum(r[4] for r in measured)
        if n == 0:
            out.append(row_type("source", "measurement", None, None, 0, None, problem=(
                "the source has no measurement records: every lab feature of the study will be missing")))
        elif n_values == 0:
            out.append(row_type("source", "measurement", None, None, n, None, problem=(
                f"the source has {n} measurement records and none carries a value (OMOP: "
                "value_as_number empty?): every lab feature of the study will be missing")))
    if study.concept_sets:
        n = con.execute('SELECT count(*) FROM "condition"').fetchone()[0]
        if n == 0:
            out.append(row_type("source", "condition", None, None, 0, None, problem=(
                "the source has no condition records: every condition feature of the study will be 0")))
    return out

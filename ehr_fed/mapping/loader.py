"""Load study specs and site mappings from YAML, reporting every problem in one pass.

Each problem carries the file, the line of the offending key or value (from
PyYAML's node marks), a reason code and a fix. Pydantic's errors are translated
into these reason codes; cross-references are checked by :mod:`.checks`.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from ehr_fed.mapping.checks import PathProblem, site_problems, study_problems
from ehr_fed.mapping.problems import ConfigError, Problem, suggest
from ehr_fed.mapping.site import SiteMapping
from ehr_fed.mapping.study import ConceptSet, StudySpec
from ehr_fed.mapping.yamlio import LocatedYaml, dump_yaml, read_yaml

_TYPE_ERRORS = {
    "string_type": "a string",
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "list_type": "a list", "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)", "model_attributes_type": "a mapping (key: value)",
    "tuple_type": "a list", "none_required": "nothing (null)",
}
_CONTEXT = {"skip_reference_checks": True}


def load_study(path: str | Path) -> StudySpec:
    """Load and validate a study spec.

    Raises
    ------
    ConfigError
        With every problem found (file, line, reason code, message, fix).
    """
    return _load(path, StudySpec, study_problems)


def load_mapping(path: str | Path) -> SiteMapping:
    """Load and validate a site mapping config.

    Raises
    ------
    ConfigError
        With every problem found (file, line, reason code, message, fix).
    """
    return _load(path, SiteMapping, site_problems)


def detect_kind(data: Any) -> str:
    """``"study"`` or ``"mapping"`` from the top-level keys of a parsed config."""
    if isinstance(data, dict) and ("study_id" in data or "features" in data or "index_event" in data):
        return "study"
    return "mapping"


def validate_file(path: str | Path) -> tuple[str, list[Problem]]:
    """Validate a study spec or site mapping (detected from its keys); return its kind and problems."""
    doc, problems = read_yaml(path)
    if doc is None:
        return "unknown", problems
    kind = detect_kind(doc.data)
    model, checks = (StudySpec, study_problems) if kind == "study" else (SiteMapping, site_problems)
    _, more = _validate(doc, model, checks)
    return kind, problems + more


def _load(path: str | Path, model: type[BaseModel], checks) -> Any:
    doc, problems = read_yaml(path)
    if doc is None:
        raise ConfigError(problems)
    obj, more = _validate(doc, model, checks)
    problems += more
    if problems:
        raise ConfigError(problems)
    return obj


def _validate(doc: LocatedYaml, model: type[BaseModel], checks) -> tuple[Any, list[Problem]]:
    if not isinstance(doc.data, dict):
        return None, [Problem(doc.file, doc.line_of(()), "wrong_type",
                              f"the file holds {type(doc.data).__name__}, not a mapping of keys",
                              f"write a YAML mapping with the keys of a {model.__name__}")]
    obj = None
    path_problems: list[PathProblem] = []
    try:
        obj = model.model_validate(doc.data, context=_CONTEXT)
    except ValidationError as exc:
        path_problems += [_translate(err, model, doc.data) for err in exc.errors()]
    path_problems += checks(doc.data)
    moved = {p.path for p in path_problems if p.code == "moved_key"}
    path_problems = [p for p in path_problems if not (p.code == "unknown_key" and p.path in moved)]
    problems = [Problem(doc.file, doc.line_of(p.path, key=p.key), p.code, p.message, p.fix)
                for p in path_problems]
    problems.sort(key=lambda p: (p.line or 0))
    return (obj if not problems else None), _dedupe(problems)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if (p.line, p.code, p.message) not in seen:
            seen.add((p.line, p.code, p.message))
            out.append(p)
    return out


def _translate(err: dict, model: type[BaseModel], data: Any) -> PathProblem:
    path, owner = _data_path(err["loc"], model, data)
    etype, where = err["type"], "/".join(str(p) for p in path[:-1]) or "the top level"
    name = path[-1] if path else ""
    if etype == "extra_forbidden":
        valid = list(owner.model_fields) if owner else []
        code = "unknown_vocabulary" if owner is ConceptSet else "unknown_key"
        return PathProblem(path, code, f"unknown key {name!r} in {where}", suggest(name, valid), key=True)
    if etype == "missing":
        return PathProblem(path[:-1], "missing_key", f"missing required key {name!r} in {where}",
                           f"add '{name}:'")
    if etype == "union_tag_invalid":
        got = err.get("ctx", {}).get("tag")
        expected = [t.strip(" '") for t in str(err.get("ctx", {}).get("expected_tags", "")).split(",")]
        section = "feature" if "features" in path else str(path[0]) if path else "item"
        return PathProblem(path + ("kind",), f"unknown_{section}_kind".replace("index_event", "index"),
                           f"unknown {section.replace('_', ' ')} kind {got!r}", suggest(got, expected))
    if etype == "union_tag_not_found":
        return PathProblem(path, "missing_key", f"missing 'kind' in {'/'.join(map(str, path))}",
                           "add 'kind:' naming what this is")
    if etype in _TYPE_ERRORS:
        return PathProblem(path, "wrong_type",
                           f"{'/'.join(map(str, path))} should be {_TYPE_ERRORS[etype]}, got {err.get('input')!r}",
                           "quote codes such as \"042\" so they stay text" if etype == "string_type"
                           else f"write {_TYPE_ERRORS[etype]}")
    if etype == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return PathProblem(path, "invalid_value", f"{'/'.join(map(str, path))} is {err.get('input')!r}",
                           f"use one of: {expected}")
    msg = err.get("msg", "invalid value")
    return PathProblem(path, "invalid_value", f"{'/'.join(map(str, path)) or 'value'}: {msg}",
                       "correct the value as the message says")


def _unwrap(tp: Any, value: Any) -> Any:
    """Strip Annotated / Optional, and pick the union member matching ``value['kind']``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            chosen = members[0] if len(members) == 1 else None
            for m in members:
                kind = m.model_fields.get("kind") if isinstance(m, type) and issubclass(m, BaseModel) else None
                if kind and isinstance(value, dict) and value.get("kind") in typing.get_args(kind.annotation):
                    chosen = m
            if chosen is None:
                return tp
            tp = chosen
            continue
        return tp


def _data_path(loc: tuple, model: type[BaseModel], data: Any) -> tuple[tuple, type[BaseModel] | None]:
    """The path in the YAML data of a pydantic error location, and the model owning its last key.

    Pydantic puts the tag of a discriminated union in the location (``features/3/last_lab/unit``);
    the YAML has no such level, so it is skipped.
    """
    tp: Any = model
    owner: type[BaseModel] | None = model
    value = data
    path: list = []
    for part in loc:
        tp = _unwrap(tp, value)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            owner = tp
            if isinstance(value, dict) and part not in value and value.get("kind") == part:
                continue
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            path.append(part)
            tp = field.annotation if field else None
        else:
            origin, args = typing.get_origin(tp), typing.get_args(tp)
            path.append(part)
            tp = args[-1] if origin in (list, dict) and args else None
            owner = None
        value = value.get(part) if isinstance(value, dict) else (
            value[part] if isinstance(value, list) and isinstance(part, int) and part < len(value) else None)
    return tuple(path), owner


def model_to_yaml(obj: BaseModel) -> str:
    """YAML text of a study spec or site mapping (defaults included; ``load`` of it gives ``obj``)."""
    return dump_yaml(obj.model_dump(mode="json", by_alias=True, exclude_none=True))

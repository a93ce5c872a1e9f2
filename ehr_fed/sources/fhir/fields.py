"""Typed access to the few FHIR elements the reader uses.

Each accessor checks the JSON type of the element it reads and raises
:class:`InvalidResource` naming the element path, so that a resource with a wrong
type for a used field is quarantined with an actionable reason.
"""

from __future__ import annotations

from ehr_fed.sources.fhir.dates import BadDate, fhir_micros


class InvalidResource(ValueError):
    """A resource that fails the reader's structural checks (reason ``invalid_resource``)."""


class ResourceBadDate(ValueError):
    """A resource with an unparseable date in a used field (reason ``bad_date``)."""


def _typename(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def obj(res: dict, path: str, key: str) -> dict | None:
    value = res.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise InvalidResource(f"{path} must be an object, got {_typename(value)} {value!r:.80}")


def string(res: dict, path: str, key: str) -> str | None:
    value = res.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InvalidResource(f"{path} must be a string, got {_typename(value)} {value!r:.80}")


def when(res: dict, path: str, key: str) -> int | None:
    """A date/dateTime/instant element as microseconds since 1970 (naive UTC), None when absent."""
    value = res.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidResource(f"{path} must be a date string, got {_typename(value)} {value!r:.80}")
    try:
        return fhir_micros(value)
    except BadDate as exc:
        raise ResourceBadDate(f"{path}: {exc}") from None


def period(res: dict, path: str, key: str) -> tuple[int | None, int | None]:
    p = obj(res, path, key)
    if p is None:
        return None, None
    return when(p, f"{path}.start", "start"), when(p, f"{path}.end", "end")


def reference(res: dict, path: str, key: str, refs: dict[str, str] | None) -> str | None:
    """The id a Reference points to: ``Patient/x``, an absolute URL, or a Bundle ``urn:uuid:``.

    ``urn:uuid:``/``urn:oid:`` references are resolved through the Bundle's ``fullUrl`` map;
    without a match the UUID itself is taken as the id (Synthea's convention).
    """
    ref = res.get(key)
    if ref is None:
        return None
    if type(ref) is not dict:
        raise InvalidResource(f"{path} must be an object, got {_typename(ref)} {ref!r:.80}")
    value = ref.get("reference")
    if type(value) is not str:
        if value is None:
            return None
        raise InvalidResource(f"{path}.reference must be a string, got {_typename(value)}")
    if value.startswith("urn:"):
        if refs is not None:
            rid = refs.get(value)
            if rid is not None:
                return rid
        return value.rpartition(":")[2]
    if "/_history/" in value:
        value = value[: value.index("/_history/")]
    return value.rpartition("/")[2] or None


def coding(
    cc: dict | None, path: str, known: frozenset[str]
) -> tuple[str | None, str | None]:
    """``(system, code)`` of the first coding in a known system, else of the first coding."""
    if cc is None:
        return None, None
    if not isinstance(cc, dict):
        raise InvalidResource(f"{path} must be a CodeableConcept object, got {_typename(cc)}")
    codings = cc.get("coding")
    if not codings:
        return None, None
    if not isinstance(codings, list):
        raise InvalidResource(f"{path}.coding must be an array, got {_typename(codings)}")
    first = None
    for c in codings:
        if not isinstance(c, dict):
            raise InvalidResource(f"{path}.coding[] must hold objects, got {_typename(c)}")
        if first is None:
            first = c
        if known and c.get("system") in known:
            first = c
            break
    system, code = first.get("system"), first.get("code")
    if not (system is None or isinstance(system, str)) or not (code is None or isinstance(code, str)):
        raise InvalidResource(f"{path}.coding system and code must be strings")
    return system, code


def coding_text(cc: dict | None, path: str, known: frozenset[str]) -> str | None:
    """A CodeableConcept as ``system|code`` (None when it has no coding)."""
    system, code = coding(cc, path, known)
    if system is None and code is None:
        return None
    return f"{system or ''}|{code or ''}"

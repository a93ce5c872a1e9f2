"""Strict mode: validate every resource against the FHIR R4B models of fhir.resources."""

from __future__ import annotations

from collections.abc import Callable

MAX_MESSAGE = 2_000


def make_validator() -> Callable[[dict], str | None]:
    """A function returning None for a valid resource, else the validation message.

    fhir.resources 8 defaults to FHIR R5; R4 resources are validated with its R4B package
    (R4B shares R4's resource definitions for the clinical resources read here).
    """
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    models: dict[str, type] = {}

    def validate(resource: dict) -> str | None:
        rtype = resource.get("resourceType")
        model = models.get(rtype)
        if model is None:
            try:
                model = models[rtype] = get_fhir_model_class(rtype)
            except (KeyError, ValueError, AttributeError, ImportError):
                return f"{rtype!r} is not a FHIR R4 resource type"
        try:
            model.model_validate(resource)
        except ValidationError as exc:
            return f"fhir.resources R4B validation failed: {str(exc)[:MAX_MESSAGE]}"
        except (TypeError, ValueError) as exc:
            return f"fhir.resources R4B validation failed: {str(exc)[:MAX_MESSAGE]}"
        return None

    return validate

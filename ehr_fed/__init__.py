"""ehr-fed: federated analytics on hospital EHR data."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    # lazy, so that ``import ehr_fed`` (the CLI, the site runtime) does not import the models
    if name == "load_model":
        from ehr_fed.models.persistence import load_model

        return load_model
    raise AttributeError(f"module 'ehr_fed' has no attribute {name!r}")

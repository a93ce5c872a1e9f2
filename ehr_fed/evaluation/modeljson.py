"""Models as JSON text: how a fitted model travels to the sites inside a task's parameters.

The text is the model file the model's ``save`` writes (:mod:`ehr_fed.models.persistence`), so a site
reads it with the same loaders as ``ehr_fed.load_model``. Loaded models are cached per site process by the
text's sha256, so the rounds of one evaluation load a model once.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any


def model_to_json(model: Any) -> str:
    """The model file text of a fitted model (anything with ``save(path)``: logreg, gbdt).

    Raises
    ------
    TypeError
        When ``model`` has no ``save`` method (it is not an ehr-fed model).
    """
    if isinstance(model, str | os.PathLike) and Path(model).is_file():
        return Path(model).read_text()
    save = getattr(model, "save", None)
    if not callable(save):
        raise TypeError(
            f"evaluation needs a fitted ehr-fed model (with save(path)) or a model file path, got "
            f"{type(model).__name__}; fit a FederatedLogisticRegression or FederatedGradientBoostingClassifier"
        )
    with tempfile.TemporaryDirectory(prefix="ehr-fed-model-") as tmp:
        path = Path(tmp) / "model.json"
        save(path)
        return path.read_text()


def model_digest(text: str) -> str:
    """sha256 (hex) of a model's JSON text."""
    return hashlib.sha256(text.encode()).hexdigest()


def model_from_json(text: str) -> Any:
    """The fitted model of a model file's text (cached by its sha256)."""
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        raise ValueError("the task parameter 'model' must be the JSON text of an ehr-fed model file")
    return _load(model_digest(text), text)


@functools.lru_cache(maxsize=8)
def _load(digest: str, text: str) -> Any:
    from ehr_fed.models.persistence import load_model

    with tempfile.TemporaryDirectory(prefix="ehr-fed-model-") as tmp:
        path = Path(tmp) / f"{digest[:16]}.json"
        path.write_text(text)
        return load_model(path)


def model_kind(text: str) -> str:
    """The ``kind`` field of a model file's text (``logreg``, ``gbdt``, ...)."""
    import json

    return str(json.loads(text).get("kind", ""))

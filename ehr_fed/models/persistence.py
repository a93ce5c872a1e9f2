"""Model files: versioned JSON documents with the model kind, the study and the feature schema.

A model file is one JSON object::

    {
      "format": "ehr-fed-model",        # always this string
      "format_version": 1,              # of this envelope; a newer file fails with a clear message
      "kind": "logreg",                 # selects the loader (registry below)
      "ehr_fed_version": "0.1.0",       # the toolkit that wrote it
      "study_id": "readmission_30d",    # or null
      "feature_schema": [{"name": "age", "dtype": "float64"}, ...],   # the input table the model expects
      "created": "2025-01-01T00:00:00Z",
      "params": {...},                  # the estimator's constructor parameters
      "state": {...},                   # the fitted state, kind specific
      "dp": {...},                      # only for a differentially private fit: the model's ``dp_``
                                        # (epsilon and delta spent, bounds, noise); restored on load
      "training": {...},                # after a federated fit: the signed release records the model
                                        # follows from (see below); restored on load as ``transcript_``
      "checksum": "sha256:..."          # of every other key (see model_checksum), verified on load
    }

``training`` holds the fit's transcript: ``{"encoding": TRAINING_ENCODING, "kind": ..., "data": ...}``,
``data`` in the exact typed JSON of :mod:`ehr_fed.federation.checkpoint` (arrays bit for bit), so the
parameters rebuild to the digests the sites signed. A site asked to evaluate the model replays it
(:mod:`ehr_fed.evaluation.provenance`); a file without it (written before model files carried it, or edited)
is evaluated only by a site whose policy lists it in ``approved_models``.

The checksum makes an edited or truncated file fail to load with a clear message instead of scoring
patients with coefficients nobody trained (it is an integrity check, not a signature: whoever can write the
file can recompute it, see :func:`seal_model_document`). Files are written atomically with mode 0600.

Each model kind registers its loader (a function from the document to a fitted estimator) with
:func:`register_loader`; the kinds shipped with ehr-fed are imported on demand by :func:`load_model`, so
``ehr_fed.load_model(path)`` works without importing the model modules first::

    from ehr_fed.models.persistence import register_loader, write_model_document

    @register_loader("gbdt")
    def _load(doc: dict) -> FederatedGradientBoostingClassifier: ...

    write_model_document(path, kind="gbdt", params=..., state=..., feature_names=..., study_id=...)
"""

from __future__ import annotations

import importlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FORMAT = "ehr-fed-model"
FORMAT_VERSION = 1
#: how the ``training`` section of a model file encodes the fit's transcript
TRAINING_ENCODING = "ehr-fed typed json v1"
#: model kinds shipped with ehr-fed and the module that registers each one's loader
BUILTIN_KINDS = {"logreg": "ehr_fed.models.logreg_export", "gbdt": "ehr_fed.models.gbdt"}

Loader = Callable[[dict[str, Any]], Any]
_LOADERS: dict[str, Loader] = {}


class ModelFormatError(ValueError):
    """A model file is not a valid ehr-fed model document."""


def model_checksum(doc: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` of the document without its ``checksum`` key (canonical JSON: sorted keys)."""
    import hashlib

    body = {k: v for k, v in doc.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal_model_document(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its ``checksum`` (re)computed: for tools that deliberately rewrite a model file."""
    return {**{k: v for k, v in doc.items() if k != "checksum"}, "checksum": model_checksum(doc)}


def register_loader(kind: str) -> Callable[[Loader], Loader]:
    """Register ``fn(document) -> model`` as the loader of model files of ``kind`` (decorator)."""

    def deco(fn: Loader) -> Loader:
        _LOADERS[kind] = fn
        return fn

    return deco


def model_kinds() -> list[str]:
    """The kinds :func:`load_model` can read."""
    return sorted(set(_LOADERS) | set(BUILTIN_KINDS))


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write a value of type {type(value).__name__} to a model file")


def build_model_document(
    *, kind: str, params: dict[str, Any], state: dict[str, Any], feature_names: Sequence[str],
    study_id: str | None = None, feature_dtypes: Sequence[str] | None = None, study: Any = None,
    dp: dict[str, Any] | None = None, training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document of a model (see the module docstring); ``dp``: the ``dp_`` record of a private fit;
    ``training``: the model's ``transcript_`` (the signed releases of its federated fit)."""
    from ehr_fed import __version__

    dtypes = list(feature_dtypes) if feature_dtypes is not None else ["float64"] * len(feature_names)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "ehr_fed_version": __version__,
        "study_id": study_id,
        # the whole study spec, so batch prediction harmonizes exactly as in training (no --study needed)
        "study": study.model_dump(mode="json") if hasattr(study, "model_dump") else study,
        "feature_schema": [{"name": str(n), "dtype": str(t)} for n, t in zip(feature_names, dtypes, strict=True)],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": params,
        "state": state,
    }
    if dp is not None:
        doc["dp"] = dp
    if training is not None:
        doc["training"] = encode_training(training)
    return doc


def encode_training(transcript: dict[str, Any]) -> dict[str, Any]:
    """The ``training`` section of a model file from a model's ``transcript_``."""
    from ehr_fed.federation.checkpoint import _enc

    return {"encoding": TRAINING_ENCODING, "kind": str(transcript.get("kind", "")), "data": _enc(transcript)}


def decode_training(section: Any) -> dict[str, Any] | None:
    """A model's ``transcript_`` from the ``training`` section of its file (None: absent or unreadable)."""
    from ehr_fed.federation.checkpoint import _dec

    if not isinstance(section, dict) or section.get("encoding") != TRAINING_ENCODING:
        return None
    data = _dec(section.get("data"))
    return data if isinstance(data, dict) else None


def write_model_document(path: str | os.PathLike, **kwargs: Any) -> Path:
    """Build (:func:`build_model_document`) and write a model file atomically; returns the path."""
    doc = seal_model_document(_strict(json.loads(json.dumps(build_model_document(**kwargs),
                                                            default=_json_default))))
    text = json.dumps(doc, indent=1, allow_nan=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_model_document(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the envelope of a model file (not the kind-specific state)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFormatError(f"model file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path} is not JSON ({exc}); is it an ehr-fed model file?") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFormatError(f"{path} is not an ehr-fed model file (no \"format\": \"{FORMAT}\")")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} has model format version {version!r}, this ehr-fed reads versions <= {FORMAT_VERSION}; "
            "upgrade ehr-fed"
        )
    missing = [k for k in ("kind", "feature_schema", "params", "state") if k not in doc]
    if missing:
        raise ModelFormatError(f"{path} lacks the keys {missing}")
    if not doc.get("checksum"):
        raise ModelFormatError(_unsigned_message(path, doc))
    try:
        expected = model_checksum(doc)
    except ValueError:  # NaN or infinity: not written by write_model_document
        expected = None
    if doc["checksum"] != expected:
        raise ModelFormatError(
            f"{path} was modified after it was written: its checksum does not match its content, so its "
            "coefficients or trees may not be the ones trained. Use the file as ehr-fed train wrote it, or "
            "train and save the model again"
        )
    return doc


def _unsigned_message(path: Path, doc: dict[str, Any]) -> str:
    """Why a model file without a checksum is refused, and what to do (retrain with this version)."""
    from ehr_fed import __version__

    by = doc.get("ehr_fed_version")
    return (f"{path} has no checksum: it was written by an ehr-fed from before model files carried one"
            + (f" (the file says ehr-fed {by}, created {doc.get('created', '?')})" if by else "")
            + ", or its checksum was removed, so nothing shows that its coefficients or trees are the ones "
            f"trained. ehr-fed {__version__} only uses checked model files: train the model again with this "
            f"version (ehr-fed train {doc.get('kind', 'logreg')} ... --out {path} --force) and use the new file")


def load_model(path: str | os.PathLike) -> Any:
    """Load a fitted model from a file written by a model's ``save``.

    Raises
    ------
    ModelFormatError
        When the file is not a model file, is too new, or names an unknown kind (the message lists the
        valid kinds).
    """
    doc = read_model_document(path)
    kind = doc["kind"]
    if kind not in _LOADERS and kind in BUILTIN_KINDS:
        try:
            importlib.import_module(BUILTIN_KINDS[kind])
        except ImportError as exc:
            raise ModelFormatError(f"{path}: model kind {kind!r} needs {BUILTIN_KINDS[kind]}, which "
                                   f"cannot be imported ({exc})") from exc
    if kind not in _LOADERS:
        raise ModelFormatError(f"{path}: unknown model kind {kind!r}; valid kinds: {model_kinds()}")
    model = _LOADERS[kind](doc)
    if isinstance(doc.get("dp"), dict):  # a private fit: the privacy it spent stays with the model
        model.dp_ = doc["dp"]
    try:
        training = decode_training(doc.get("training"))
    except (ValueError, TypeError, KeyError, AttributeError):  # a rewritten section: the sites refuse it
        training = None
    if training is not None:  # the fit's signed transcript stays with the model (and in a re-saved file)
        model.transcript_ = training
    return model


def dp_summary(dp: dict[str, Any] | None) -> str | None:
    """One line on the privacy a model spent (None: trained without differential privacy)."""
    if not isinstance(dp, dict) or dp.get("epsilon") is None:
        return None
    planned = dp.get("epsilon_planned")
    budget = f" of a planned {planned:.4g}" if isinstance(planned, int | float) else ""
    return (f"differential privacy: epsilon {dp['epsilon']:.4g}{budget}, delta {dp.get('delta', float('nan')):g} "
            f"spent over {dp.get('releases', '?')} private releases (protects one patient, up to "
            f"{dp.get('events_per_patient', 1)} index event(s), in a site's table)")


def _strict(value: Any) -> Any:
    """Replace non-finite floats by ``None``: model files are strict JSON (readers decode None as NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_strict(v) for v in value]
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    return value

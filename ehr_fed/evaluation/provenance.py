"""Which models a site evaluates: only one it can verify (checked by every evaluation task at the site).

An evaluation request carries a model, and each site scores its own rows with it. A coordinator that could
send any model could send a series of crafted ones (each scoring one patient differently) and difference the
released histograms. So before it scores anything a site requires one of:

1. **A training transcript it verifies.** A model file written after a federated fit carries the fit's signed
   release records (``training`` in the file, :mod:`ehr_fed.models.persistence`). The site checks every
   record's signature against the key it pinned for the signer in the key ceremony (never a key the file
   carries), that the records are of this study and of one session, in order, over one participant set, and
   signed by the decrypting site it agreed to where it contributed to that computation; then it replays the
   training with the code the training-time checks use:

   - logistic regression (:mod:`ehr_fed.models.logreg_transcript`): the design from the released
     preprocessing sums, every Newton step from the released gradient and information, the chain of
     parameter digests; the model's design state must be the derived one and its coefficients the rule's
     final coefficients (the private fit: the mean of its last iterates) within the training checks'
     relative tolerance (``RTOL``, 1e-9);
   - boosting (:mod:`ehr_fed.models.gbdt.transcript`): every level record's link to the training's settings
     and to the record before it; the trees grown from the released splits; the model's trees (routing,
     thresholds, leaf values) and base score must be exactly those, and every tree finished.

2. **An approved digest.** A model trained elsewhere (or a file without a transcript) is evaluated only when
   its digest is in the site's own policy, ``approved_models`` (``privacy: approved_models: ["sha256:..."]``
   in the site YAML). The digest (:func:`approved_digest`) covers what decides the scores (kind, feature
   schema, parameters, fitted state), so re-saving a loaded model keeps it.

Anything else is refused with a :class:`~ehr_fed.privacy.DisclosureError` (rule ``model_provenance``, code
``model_<reason>``) that names the reason and the model's digest (computed from the model, never from the
site's rows). Checked models are remembered per site process by the text's digest.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

#: the policy key listing the digests of approved external models
POLICY_KEY = "approved_models"
#: why a site refuses to evaluate a model (the reason code is ``model_<reason>``)
REASONS = {
    "no_transcript": "the model file carries no training transcript and its digest is not in this site's "
                     "approved_models",
    "malformed": "the model's training transcript is missing fields or malformed",
    "signature": "a release record of the model's training does not verify against the keys this site pinned",
    "session": "the model's training records are of another study, or of more than one session",
    "order": "the model's training records are not in protocol order",
    "chain": "a release record of the model's training was not produced by the request its transcript implies",
    "design": "the model's design (features, imputation, centre, scale) does not follow from the released sums",
    "coefficients": "the model's coefficients are not those its training transcript gives",
    "trees": "the model's trees are not those its training transcript gives",
    "unfinished": "the model's training transcript does not end where the training ends",
}
_OK: OrderedDict[tuple, bool] = OrderedDict()
_OK_SIZE = 64
_LOCK = threading.Lock()


class ModelProvenanceError(Exception):
    """Internal: why a transcript does not give the model (turned into a DisclosureError)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def approved_digest(model: Any) -> str:
    """``"sha256:<hex>"`` of what decides a model's scores: kind, feature schema, parameters and fitted state.

    ``model``: a model file's document (dict), its JSON text, a path, or a fitted model. This is the value a
    site lists under ``approved_models`` to evaluate a model trained outside its federation.
    """
    doc = _document(model)
    body = {k: doc.get(k) for k in ("kind", "feature_schema", "params", "state")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _document(model: Any) -> dict:
    if isinstance(model, dict):
        return model
    from ehr_fed.evaluation.modeljson import model_to_json

    text = model if isinstance(model, str) and model.lstrip().startswith("{") else model_to_json(model)
    return json.loads(text)


def check_evaluated_model(text: str, ctx: Any) -> None:
    """Refuse (DisclosureError) to evaluate the model of ``text`` unless this site can verify it (module
    docstring). ``ctx``: the task's SiteContext."""
    from ehr_fed.privacy import DisclosureError

    approved = tuple(sorted(getattr(ctx.policy, POLICY_KEY, None) or ()))
    key = (ctx.site_id, ctx.study, hashlib.sha256(text.encode()).hexdigest(), approved, id(ctx.peers))
    with _LOCK:
        if key in _OK:
            return
    doc = json.loads(text)
    digest = approved_digest(doc)
    if digest not in approved:
        try:
            verify_training(doc, ctx, text)
        except ModelProvenanceError as exc:
            hint = ("retrain it with this ehr-fed version (model files then carry their transcript)"
                    if exc.reason == "no_transcript" else "evaluate the model file as the federated fit wrote it")
            raise DisclosureError(
                f"site {ctx.site_id} refuses to evaluate the model {digest}: {REASONS[exc.reason]}"
                + (f" ({exc.detail})" if exc.detail else "")
                + f"; {hint}, or ask the site to add the digest to {POLICY_KEY} in its privacy policy "
                  "(rule model_provenance)",
                rule="model_provenance", site_id=ctx.site_id, code=f"model_{exc.reason}") from None
    with _LOCK:
        _OK[key] = True
        while len(_OK) > _OK_SIZE:
            _OK.popitem(last=False)


def verify_training(doc: dict, ctx: Any, text: str | None = None) -> None:
    """Raise :class:`ModelProvenanceError` unless ``doc``'s training transcript gives exactly its model
    (``text``: the model file's text, when at hand)."""
    from ehr_fed.models.persistence import decode_training

    section = doc.get("training")
    if section is None:
        raise ModelProvenanceError("no_transcript")
    try:
        training = decode_training(section)
        if training is None or training.get("kind") != doc.get("kind"):
            raise ModelProvenanceError("malformed", "the training section does not decode to a transcript of "
                                                    "this kind")
        if doc["kind"] == "logreg":
            _check_logreg(doc, training, ctx)
        elif doc["kind"] == "gbdt":
            _check_gbdt(doc, training, ctx, text if text is not None else json.dumps(doc))
        else:
            raise ModelProvenanceError("no_transcript", f"no transcript check for model kind {doc['kind']!r}")
    except ModelProvenanceError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ModelProvenanceError("malformed", type(exc).__name__) from None


# ------------------------------------------------------------------------------------------ records
def _verify_records(records: list[dict], tasks: list[str], ctx: Any) -> list[dict[str, np.ndarray]]:
    """The values of ``records`` (in order, of ``tasks``), each verified against the pinned keys."""
    from ehr_fed.federation.messages import ProtocolError
    from ehr_fed.federation.releases import verify_release

    if not records or not all(isinstance(r, dict) for r in records):
        raise ModelProvenanceError("malformed", "no release records")
    session, parts = records[0].get("session"), sorted(records[0].get("participants") or [])
    values, last = [], None
    for i, (record, task) in enumerate(zip(records, tasks, strict=True)):
        if record.get("study") != ctx.study or record.get("session") != session:
            raise ModelProvenanceError("session", f"record {i}")
        if record.get("task") != task:
            raise ModelProvenanceError("order", f"record {i} should be a release of {task!r}")
        if sorted(record.get("participants") or []) != parts or not parts:
            raise ModelProvenanceError("order", f"record {i} is over another participant set")
        try:
            values.append(verify_release(ctx.peers, record, study=ctx.study, session=session, task=task,
                                         decryptors=getattr(ctx.state, "decryptors", None)))
        except ProtocolError:
            raise ModelProvenanceError("signature", f"record {i} (of {task!r})") from None
        rnd = int(record["round"])
        if last is not None and rnd <= last:
            raise ModelProvenanceError("order", f"record {i} is of round {rnd}, after round {last}")
        last = rnd
    return values


# ------------------------------------------------------------------------------------------ logistic regression
def _check_logreg(doc: dict, training: dict, ctx: Any) -> None:
    from ehr_fed.federation.masks import params_digest
    from ehr_fed.models.base import FeaturePreprocessor, design_state
    from ehr_fed.models.logreg_transcript import (
        NEWTON_TASK,
        PREP_TASK,
        ROW_TASK,
        TranscriptError,
        _check_design,
        _check_rule,
        _close,
        derive_design,
        make_rule,
        newton_params,
    )

    base, path, records = training["base"], training["beta_path"], training["transcript"]
    if not (isinstance(base, dict) and isinstance(path, list) and isinstance(records, list)
            and len(records) >= 3 and len(path) == len(records) - 2):
        raise ModelProvenanceError("malformed", "a logistic regression transcript holds the two setup releases, "
                                                "one record per Newton round and the coefficients of every round")
    try:
        _check_rule(base, ctx.site_id)
    except TranscriptError:
        raise ModelProvenanceError("malformed", "the estimator's settings are invalid") from None
    values = _verify_records(records, [ROW_TASK, PREP_TASK] + [NEWTON_TASK] * len(path), ctx)
    setup = base["setup"]
    if records[0]["params_digest"] != params_digest(setup[ROW_TASK]) or \
            records[1]["params_digest"] != params_digest(setup[PREP_TASK]):
        raise ModelProvenanceError("chain", "the setup releases were computed with other parameters")
    fit_intercept = bool(base["fit_intercept"])
    design = derive_design(values[0], values[1], setup, base["rule"], fit_intercept)
    rule = make_rule(design, base)
    try:
        _check_design(base["preprocess"], design_state(design.prep), ctx.site_id)
        model_prep = design_state(FeaturePreprocessor.from_state(doc["state"]["preprocessor"]))
        _check_design(model_prep, design_state(design.prep), ctx.site_id)
    except TranscriptError:
        raise ModelProvenanceError("design") from None
    names = [f["name"] for f in doc["feature_schema"]]
    if names != [str(n) for n in setup[PREP_TASK]["features"]] or \
            bool(doc["params"].get("fit_intercept", True)) != fit_intercept:
        raise ModelProvenanceError("design", "the model's features or intercept are not the training's")
    for j in range(1, len(path) + 1):  # the chain: every Newton record from the request the transcript implies
        want = params_digest(newton_params(base, path[j - 1], path[:j - 1], records[:j + 1]))
        if records[j + 1]["params_digest"] != want:
            raise ModelProvenanceError("chain", f"Newton round {j}")
    for j in range(1, len(path) + 1):  # the replay: each step from the released aggregates
        if not _close(rule.beta, path[j - 1]):
            raise ModelProvenanceError("coefficients", f"Newton round {j} was computed at other coefficients")
        if rule.finished:
            raise ModelProvenanceError("unfinished", f"the transcript continues after round {j - 1}")
        rule.update(values[j + 1], np.asarray(path[j - 1], dtype=float))
    if not rule.finished:
        raise ModelProvenanceError("unfinished", f"the training would continue after round {len(path)}")
    if "dp" in base:
        average = int(training.get("average_last", 1))
        if not 1 <= average <= len(rule.iterates):
            raise ModelProvenanceError("malformed", "average_last is outside the private fit's rounds")
        final = np.mean(rule.iterates[-average:], axis=0)
    else:
        final = rule.beta
    if not _close(final, doc["state"]["beta_standardized"]):
        raise ModelProvenanceError("coefficients")


# ------------------------------------------------------------------------------------------ boosting
def _check_gbdt(doc: dict, training: dict, ctx: Any, text: str) -> None:
    from ehr_fed.evaluation.modeljson import model_from_json
    from ehr_fed.federation.messages import ProtocolError
    from ehr_fed.models.gbdt.binning import BinMapper
    from ehr_fed.models.gbdt.transcript import (
        TASK,
        _grower,
        _verified,
        decode_record,
        link,
        settings_digest,
    )

    settings, transcript = dict(training["settings"]), training["transcript"]
    if not (isinstance(transcript, list) and transcript and all(isinstance(t, list) and t for t in transcript)):
        raise ModelProvenanceError("malformed", "a boosting transcript holds one non-empty list of records per tree")
    if len(transcript) != int(settings["n_estimators"]):
        raise ModelProvenanceError("unfinished", f"{len(transcript)} trees of the training's "
                                                 f"{int(settings['n_estimators'])}")
    first = decode_record(transcript[0][0])
    session = first.get("session")
    if first.get("study") != ctx.study or first.get("task") != TASK:
        raise ModelProvenanceError("session", "the first record")
    parts = sorted(first.get("participants") or [])
    settings["cuts"] = [np.asarray(c, dtype=np.float64) for c in settings["cuts"]]
    mapper = BinMapper(settings["cuts"], int(settings["max_bin"]))
    sdigest = settings_digest(settings)
    decryptors = getattr(ctx.state, "decryptors", None)
    previous, trees = None, []
    for t, levels in enumerate(transcript):
        grower = _grower(settings, mapper)
        for d, entry in enumerate(levels):
            if grower.done:
                raise ModelProvenanceError("trees", f"tree {t} has a record after it was finished")
            record = decode_record(entry)
            if sorted(record.get("participants") or []) != parts or record.get("session") != session:
                raise ModelProvenanceError("session", f"tree {t}, level {d}")
            try:
                arrays, digest = _verified(entry, ctx.peers, ctx.site_id, ctx.study, session, decryptors)
            except ProtocolError:
                raise ModelProvenanceError("signature", f"tree {t}, level {d}") from None
            if "link" not in arrays or not np.array_equal(arrays["link"], link(sdigest, t, d, previous)):
                raise ModelProvenanceError("chain", f"tree {t}, level {d} does not link to the training's settings "
                                                    "and the record before it")
            grower.apply(arrays["splits"], grower.request().level)
            previous = digest
        if not grower.done:
            raise ModelProvenanceError("unfinished", f"the records of tree {t} do not finish it")
        trees.append(grower.tree)
    model = model_from_json(text)
    names = [f["name"] for f in doc["feature_schema"]]
    if names != [str(f) for f in settings["features"]]:
        raise ModelProvenanceError("trees", "the model's features are not the training's")
    if float(np.float32(model.base_score_)) != float(np.float32(settings["base_score"])):
        raise ModelProvenanceError("trees", "the base score differs")
    got = list(model.trees_)
    if len(got) != len(trees):
        raise ModelProvenanceError("trees", f"{len(got)} trees, the transcript gives {len(trees)}")
    for i, (mine, want) in enumerate(zip(got, trees, strict=True)):
        if not _same_tree(mine, want):
            raise ModelProvenanceError("trees", f"tree {i} (routing, thresholds or leaf values)")


def _same_tree(saved: Any, replayed: Any) -> bool:
    """Same routing, and thresholds and leaf values equal as a model file stores them (float32 in XGBoost
    JSON, which the loaded model scores with)."""
    from ehr_fed.models.gbdt.transcript import routing_payload

    a, b = routing_payload(saved), routing_payload(replayed)
    if sorted(a) != sorted(b) or any(a[k].shape != b[k].shape for k in a):
        return False
    for k in a:
        x, y = a[k], b[k]
        if k in ("threshold", "leaf_value"):
            x, y = x.astype(np.float32), y.astype(np.float32)
        if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            return False
    return True

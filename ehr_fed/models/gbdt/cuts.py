"""Bin cuts a boosting site derives itself, from signed sketch releases it contributed to.

Every ``gbdt.histograms`` request carries ``cut_source`` beside ``cuts`` (both bound by every record's link,
:data:`.transcript.SETTINGS`). Before it computes anything, a site recomputes the cuts from that source with
the function the coordinator used and refuses (``DisclosureError``, rule ``transcript``) cuts that differ:

``{"kind": "sketch", "coarse": record, "coarse_merged": groups, "fine": record, "fine_merged": groups}``
    the federated quantile sketch (:func:`ehr_fed.stats.federated.bin_edge_sketch`): the signed releases of
    the two ``stats.histogram`` passes. The site checks each record's signature against its pinned keys,
    that it belongs to this study and session, that this site contributed to that computation and the record
    is signed by the decrypting site it agreed to then, that it sums exactly the training's participants, and
    that its parameter digest names the request's features over the public coarse grid (coarse pass) and
    over the edges the site recomputes from the coarse release (fine pass). The merged groups are those the
    decrypting site applied, signed in the record with the counts (``suppressed``); the groups the request
    reports (``coarse_merged``, ``fine_merged``) are read only for a record without them. Either way each
    group must be consistent with the signed counts (contiguous bins, the count in the first bin, 0 in the
    others), and a site accepts one set of groups per signed histogram content, ever (restart-safe).
    The cuts are then :func:`ehr_fed.stats.federated.cuts_from_sketch` of the released counts.
``{"kind": "private", "record": record, "grid": edges, "dp_index": i}``
    a private training (:mod:`.private`): the signed release of ``gbdt.dp_bin_counts`` (same checks; its
    digest must name the request's features, this grid and the request's release plan ``dp``); the cuts are
    :func:`.private.private_cuts` of its noisy counts.
``{"kind": "public"}``
    cuts given by the analyst (``bin_edges``). Accepted only in a private training (every histogram release
    is noised for whatever cuts, the guarantee of differential privacy) or by a site without a small-cell
    rule (``min_cell_count`` 1: a local fit of one's own table); any other site refuses them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ehr_fed.federation.checkpoint import params_hash
from ehr_fed.federation.masks import params_digest
from ehr_fed.federation.messages import ProtocolError
from ehr_fed.federation.releases import verify_release

from .binning import normalize_cuts

__all__ = ["SKETCH_TASK", "PRIVATE_TASK", "KINDS", "PUBLIC", "check_cuts"]

SKETCH_TASK = "stats.histogram"
PRIVATE_TASK = "gbdt.dp_bin_counts"
KINDS = ("sketch", "private", "public")
#: the cut source of cuts given by the analyst
PUBLIC = {"kind": "public"}

#: cut checks this process has passed: (site, study, session, participants, digest of the source, the cuts and
#: the settings the check reads)
_PASSED: OrderedDict[tuple, bool] = OrderedDict()
_PASSED_SIZE = 1_000
_LOCK = threading.Lock()


def _record(text: Any, what: str) -> dict:
    try:
        record = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise ProtocolError(f"the cut source's {what} is not a release record (JSON text of an object)")
    return record


def _verified(text: Any, what: str, task: str, ctx: Any) -> tuple[dict, dict[str, np.ndarray]]:
    """A sketch release the site contributed to, signed by the decrypting site it agreed to."""
    record = _record(text, what)
    decryptors = getattr(ctx.state, "decryptors", None)
    if decryptors is None:
        raise ProtocolError("this site keeps no protocol state, so it cannot tell which sketch it contributed to")
    arrays = verify_release(ctx.peers, record, study=ctx.study, session=ctx.session, task=task,
                            decryptors=decryptors)
    if f"{record['study']}/{task}/{record['params_digest']}" not in decryptors:
        raise ProtocolError(f"the {what} is a release of a computation this site did not contribute to")
    if ctx.participants and sorted(record["participants"]) != sorted(ctx.participants):
        raise ProtocolError(f"the {what} sums another set of sites than this training")
    return record, arrays


def _counts(arrays: dict, name: str, n_features: int, what: str) -> np.ndarray:
    a = arrays.get(name)
    if a is None or a.ndim != 3 or a.shape[:2] != (1, n_features):
        raise ProtocolError(f"the {what} holds no ({name}) histogram of one group per feature")
    return a


def _check_merged(counts: np.ndarray, merged: Any, what: str) -> list[list[int]]:
    """The reported merged groups (``(flat_row, first, last)`` runs, :func:`ehr_fed.stats.federated.merged_runs`),
    checked against the signed counts (each group's count in its first bin, 0 in the others); returned as the
    ``[flat_row, bin, bin, ...]`` lists of :class:`ehr_fed.stats.federated.Histogram`."""
    try:
        runs = np.asarray(merged if merged is not None else np.zeros((0, 3)))
        if runs.size and not np.issubdtype(runs.dtype, np.integer):
            raise TypeError
        runs = runs.astype(np.int64).reshape(-1, 3)
    except (TypeError, ValueError):
        raise ProtocolError(f"the merged groups of the {what} must be integer (row, first, last) runs") from None
    n_rows, n_bins = counts.shape[0] * counts.shape[1], counts.shape[2]
    flat = counts.reshape(n_rows, n_bins)
    out, last_end = [], {}
    for row, first, last in sorted(runs.tolist()):
        if not (0 <= row < n_rows and 0 <= first < last < n_bins):
            raise ProtocolError(f"a merged group of the {what} is not a run of two or more of its bins")
        if first <= last_end.get(row, -1):
            raise ProtocolError(f"merged groups of the {what} overlap")
        last_end[row] = last
        if not (np.isnan(flat[row]).all() or (np.nan_to_num(flat[row, first + 1:last + 1]) == 0).all()):
            raise ProtocolError(f"a merged group of the {what} does not match its signed counts")
        out.append([row, *range(first, last + 1)])
    return out


def _merged(record: dict, claimed: Any) -> Any:
    """The merged groups of a sketch release: those its record signs (the decrypting site's own), else the
    groups the request reports (records signed before groups were signed; checked and pinned below)."""
    from ehr_fed.federation.releases import signed_suppressed
    from ehr_fed.stats.federated import merged_runs

    signed = signed_suppressed(record, "hist")
    if signed is None:
        return claimed
    try:
        return merged_runs(signed)
    except (TypeError, ValueError, IndexError):
        raise ProtocolError("the merged groups a sketch release signs are malformed") from None


def _pin_merged(record: dict, merged: list, what: str, ctx: Any) -> None:
    """One set of merged groups per signed histogram content, ever: the first one this site accepted."""
    content = params_hash("gbdt sketch content", record["task"], record["params_digest"],
                          sorted(record["participants"]), record["arrays"])
    prev = ctx.state.record_opening(f"{ctx.study}/gbdt.sketch_groups/{content}",
                                    [params_hash("groups", [[g[0], g[1], g[-1]] for g in merged])])
    if prev is not None:
        raise ProtocolError(f"the merged groups of the {what} differ from those this site accepted for the same "
                            "signed histogram")


def _sketch_cuts(source: dict, params: dict, ctx: Any) -> list[np.ndarray]:
    from ehr_fed.stats.federated import coarse_edges, cuts_from_sketch, histogram_params

    features = [str(f) for f in params["features"]]
    coarse, c_arrays = _verified(source.get("coarse"), "coarse sketch release", SKETCH_TASK, ctx)
    fine, f_arrays = _verified(source.get("fine"), "fine sketch release", SKETCH_TASK, ctx)
    if coarse["params_digest"] != params_digest(histogram_params(features, coarse_edges(len(features)))):
        raise ProtocolError("the coarse sketch release is not of the training's features over the public grid")
    c_counts = _counts(c_arrays, "hist", len(features), "coarse sketch release")
    f_counts = _counts(f_arrays, "hist", len(features), "fine sketch release")
    c_merged = _check_merged(c_counts, _merged(coarse, source.get("coarse_merged")), "coarse sketch release")
    f_merged = _check_merged(f_counts, _merged(fine, source.get("fine_merged")), "fine sketch release")
    edges, cuts = cuts_from_sketch(c_counts, c_merged, f_counts, f_merged, int(params["max_bin"]))
    if fine["params_digest"] != params_digest(histogram_params(features, edges)):
        raise ProtocolError("the fine sketch release is not over the edges that follow from the coarse release")
    _pin_merged(coarse, c_merged, "coarse sketch release", ctx)
    _pin_merged(fine, f_merged, "fine sketch release", ctx)
    return cuts


def _private_cuts(source: dict, params: dict, ctx: Any) -> list[np.ndarray]:
    from .private import private_cuts

    if params.get("dp") is None:
        raise ProtocolError("cuts from private counts belong to a private training (the request has no 'dp')")
    features = [str(f) for f in params["features"]]
    record, arrays = _verified(source.get("record"), "private sketch release", PRIVATE_TASK, ctx)
    grid = np.asarray(source.get("grid"), dtype=np.float64)
    if grid.ndim != 2 or grid.shape[0] != len(features) or grid.shape[1] < 3:
        raise ProtocolError("the private sketch's grid is not one row of edges per feature")
    sketch = {"features": features, "grid": grid, "dp": params["dp"], "dp_index": source.get("dp_index")}
    if record["params_digest"] != params_digest(sketch):
        raise ProtocolError("the private sketch release is not of the training's features, grid and release plan")
    counts = arrays.get("counts")
    if counts is None or counts.size != len(features) * (grid.shape[1] - 1):
        raise ProtocolError("the private sketch release holds no counts for every grid bin")
    return private_cuts(np.rint(counts).reshape(len(features), grid.shape[1] - 1), grid, int(params["max_bin"]))


def _normalized(cuts: Any, max_bin: int) -> list[np.ndarray]:
    return [normalize_cuts(np.asarray(c, dtype=np.float64), max_bin) for c in cuts]


def _check_key(source: dict, params: dict, max_bin: int) -> bytes:
    """A digest of everything a cut check reads (the source's record texts hashed as bytes: cheap per request)."""
    h = hashlib.sha256(b"ehr-fed gbdt cut check v1\x00")
    for key in sorted(source):
        value = source[key]
        h.update(key.encode() + b"\x00")
        if isinstance(value, str):
            h.update(b"s" + hashlib.sha256(value.encode()).digest())
        elif isinstance(value, np.ndarray):
            h.update(b"a" + value.dtype.str.encode() + str(value.shape).encode() + value.tobytes())
        else:
            h.update(b"p" + params_hash(value).encode())
    h.update(params_hash(_normalized(params["cuts"], max_bin), list(params["features"]), max_bin,
                         params.get("dp")).encode())
    return h.digest()


def check_cuts(params: dict, ctx: Any) -> str | None:
    """Why the request's cuts do not follow from its ``cut_source`` (None when they do; module docstring).

    Raises ProtocolError / ValueError / KeyError / TypeError on a malformed source (the caller refuses)."""
    source = params.get("cut_source")
    kind = source.get("kind") if isinstance(source, dict) else None
    if kind not in KINDS:
        return f"its cut_source must be a mapping whose kind is one of {list(KINDS)}"
    if kind == "public":
        if params.get("dp") is not None or ctx.policy.min_cell_count <= 1:
            return None
        return ("its bin cuts are given, not derived from a signed sketch this site contributed to; leave "
                "bin_edges unset (the cuts then come from the federated sketch) or train with differential privacy")
    max_bin = int(params["max_bin"])
    key = (ctx.site_id, ctx.study, ctx.session, tuple(sorted(ctx.participants)),
           _check_key(source, params, max_bin))
    with _LOCK:
        if key in _PASSED:
            return None
    derived = _sketch_cuts(source, params, ctx) if kind == "sketch" else _private_cuts(source, params, ctx)
    want, got = _normalized(derived, max_bin), _normalized(params["cuts"], max_bin)
    if len(want) != len(got) or not all(np.array_equal(a, b) for a, b in zip(want, got, strict=True)):
        return f"its bin cuts do not follow from the signed {kind} release they cite"
    with _LOCK:
        _PASSED[key] = True
        while len(_PASSED) > _PASSED_SIZE:
            _PASSED.popitem(last=False)
    return None

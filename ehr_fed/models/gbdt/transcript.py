"""The boosting transcript: the signed level releases every site replays before it computes a histogram.

Each ``gbdt.histograms`` request carries ``transcript``: per tree (finished trees, then the tree being
grown) the release records of its levels, each signed by the site that decrypted it
(:mod:`ehr_fed.federation.releases`) and carried as its canonical JSON text (:func:`encode_record`). A site

1. checks every record's signature against the identity keys it pinned in the key ceremony, and that it
   belongs to this study, session and task;
2. checks the record's ``link``: a SHA-256 over the training's settings (features, bin cuts, base score,
   split settings, training id ...), the tree and level it answers and the previous record, which the
   decrypting site computed when it released it. Records of another training, another position or another
   order do not link;
3. grows the trees from the released rows itself (:class:`.release.LevelGrower`: thresholds from the
   request's cuts, leaf values from the released sums) and requires that the request's finished trees, the
   partial tree and the nodes it asks for are exactly those.

Anything else is refused (``DisclosureError``, rule ``transcript``): a coordinator cannot steer the sites
into a tree (routing, threshold or leaf value) that the released aggregates do not give.

Bin cuts. The link binds every record of a training to its cuts and to their ``cut_source``. Before it
computes anything a site recomputes the cuts itself (:mod:`.cuts`): from the signed releases of the federated
quantile sketch (the coarse and fine ``stats.histogram`` passes) or, in a private training, of the noisy grid
counts (``gbdt.dp_bin_counts``). Each cited record must verify against the pinned key of the decrypting
site this site agreed to when it contributed to that very computation, in this study and session and over
the training's participants, and its parameter digest must name the training's features (and the edges or
grid the site recomputes); cuts that do not follow are refused. Cuts given by the analyst (``bin_edges``)
are accepted only in a private training or by a site without a small-cell rule (a local fit). On top, a site
pins the cuts of the session: the first boosting request of a session fixes, per features and ``max_bin``,
the digest of its cuts in the site's persistent state (restart-safe); a later request of the session with
other cuts is refused.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ehr_fed.federation.checkpoint import params_hash
from ehr_fed.federation.messages import ProtocolError
from ehr_fed.federation.releases import release_digest, verify_release
from ehr_fed.privacy import DisclosureError

from .binning import BinMapper
from .cuts import check_cuts
from .packing import bin_mask
from .predictor import Tree
from .release import LevelGrower, LevelRequest, noisy_release, split_params

__all__ = ["TASK", "SETTINGS", "DP_SETTINGS", "settings_digest", "link", "routing_payload", "replay", "check_request",
           "last_record", "encode_record", "decode_record"]

TASK = "gbdt.histograms"
#: the request parameters fixed for a whole training (what every record's link binds)
SETTINGS = ("features", "cuts", "cut_source", "max_bin", "precision", "base_score", "channels", "min_count", "training_id",
            "reg_lambda", "gamma", "min_child_weight", "learning_rate", "max_depth", "n_estimators", "sibling")
#: the settings of a private training (``dp`` in the request), bound by the link too; absent without DP, so
#: the settings digest of a training without DP is unchanged
DP_SETTINGS = ("dp", "dp_channel_weights", "dp_max_leaf", "dp_min_hessian_sigmas")


#: records this process has verified (site, study, session, record digest) -> (values, release digest): a record
#: is checked once, not once per later request that carries it
_VERIFIED: OrderedDict[tuple, tuple[dict, bytes]] = OrderedDict()
_VERIFIED_SIZE = 20_000
#: finished trees this process has grown from a transcript, by (site, settings, tree index, digest of the tree's
#: last record): the record's link commits to every record before it, so it names the whole history
_TREES: OrderedDict[tuple, Tree] = OrderedDict()
_TREES_SIZE = 2_000
_LOCK = threading.Lock()


def encode_record(record: dict) -> str:
    """A release record as the canonical JSON text the transcript carries (one string: cheap to check and hash)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def decode_record(text: Any) -> dict:
    """Inverse of :func:`encode_record`; ProtocolError on anything that is not a JSON object."""
    try:
        record = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise ProtocolError("a transcript entry is not a release record (JSON text of an object)")
    return record


def _verified(text: Any, peers: dict, site: str, study: str, session: str,
              decryptors: Any = None) -> tuple[dict, bytes]:
    """The values and release digest of a transcript entry, its signature checked (once per process)."""
    key = (site, study, session, hashlib.sha256(text.encode()).digest() if isinstance(text, str) else None)
    with _LOCK:
        hit = _VERIFIED.get(key) if key[-1] is not None else None
    if hit is not None:
        return hit
    record = decode_record(text)
    arrays = verify_release(peers, record, study=study, session=session, task=TASK, decryptors=decryptors)
    out = (arrays, release_digest(record))
    with _LOCK:
        _VERIFIED[key] = out
        while len(_VERIFIED) > _VERIFIED_SIZE:
            _VERIFIED.popitem(last=False)
    return out


def settings_digest(params: dict) -> bytes:
    """SHA-256 of the training's settings in ``params``."""
    keys = SETTINGS + (DP_SETTINGS if params.get("dp") is not None else ())
    try:
        return bytes.fromhex(params_hash("gbdt settings", {k: params[k] for k in keys}))
    except KeyError as exc:
        raise ProtocolError(f"a boosting request lacks the setting {exc.args[0]!r}") from None


def link(settings: bytes, tree: int, depth: int, previous: bytes | None) -> np.ndarray:
    """The link of the record answering level ``depth`` of tree ``tree`` (8 exact float64 words);
    ``previous``: the release digest of the record before it (None for the first)."""
    h = hashlib.sha256(b"ehr-fed gbdt link v1\x00" + settings + struct.pack("<qq", int(tree), int(depth)))
    h.update(previous if previous is not None else b"first")
    return np.frombuffer(h.digest(), dtype="<u4").astype(np.float64)


def last_record(transcript: list) -> str | None:
    """The most recent entry of a transcript (None before the first release)."""
    for levels in reversed(transcript):
        if levels:
            return levels[-1]
    return None


def routing_payload(tree: Tree) -> dict[str, np.ndarray]:
    """A tree's routing arrays as message-safe numpy arrays."""
    from .predictor import _routing_arrays

    return _routing_arrays(tree.to_routing(), np.float64)


def _grower(params: dict, mapper: BinMapper) -> LevelGrower:
    sibling = str(params["sibling"])
    if sibling not in ("derive", "both"):
        raise ValueError(f"sibling must be 'derive' or 'both', got {sibling!r}")
    noisy = noisy_release(params, bin_mask(mapper.n_cuts(), mapper.n_bins))
    return LevelGrower(split_params(params), int(params["max_depth"]), float(params["learning_rate"]),
                       mapper.threshold, mapper.n_cuts(), sibling, leaf_bound=None if noisy is None else noisy.leaf_bound)


def replay(params: dict, peers: dict, *, study: str, session: str,
           site: str = "", decryptors: Any = None) -> tuple[list[Tree], LevelGrower]:
    """Grow the trees of ``params["transcript"]``; returns the finished trees and the grower of the current one.

    Raises ProtocolError or ValueError naming the first record or tree that does not follow.
    """
    transcript = params.get("transcript")
    if not isinstance(transcript, list) or not transcript or not all(isinstance(t, list) for t in transcript):
        raise ProtocolError("a boosting request carries its transcript as a non-empty list (one list of "
                            "release records per tree)")
    if len(transcript) > int(params["n_estimators"]):
        raise ProtocolError(f"the transcript has {len(transcript)} trees, the training {params['n_estimators']}")
    mapper = BinMapper([np.asarray(c, dtype=np.float64) for c in params["cuts"]], int(params["max_bin"]))
    settings = settings_digest(params)
    previous, finished = None, []
    for t, levels in enumerate(transcript):
        last = t == len(transcript) - 1
        if not last and levels:  # a finished tree grown before from the same history is not grown again
            _, digest = _verified(levels[-1], peers, site, study, session, decryptors)
            key = (site, settings, t, digest)
            with _LOCK:
                tree = _TREES.get(key)
            if tree is not None:
                finished.append(tree)
                previous = digest
                continue
        grower = _grower(params, mapper)
        for d, record in enumerate(levels):
            if grower.done:
                raise ProtocolError(f"tree {t} has a release record after the tree was finished")
            arrays, digest = _verified(record, peers, site, study, session, decryptors)
            if "link" not in arrays or not np.array_equal(arrays["link"], link(settings, t, d, previous)):
                raise ProtocolError(f"the release record of tree {t}, level {d} does not link to this training's "
                                    "settings and the record before it")
            if "splits" not in arrays:
                raise ProtocolError(f"the release record of tree {t}, level {d} holds no splits")
            grower.apply(arrays["splits"], grower.request().level)
            previous = digest
        if last:
            break
        if not grower.done:
            raise ProtocolError(f"tree {t} is followed by another, but its records do not finish it")
        finished.append(grower.tree)
        with _LOCK:
            _TREES[(site, settings, t, previous)] = grower.tree
            while len(_TREES) > _TREES_SIZE:
                _TREES.popitem(last=False)
    if grower.done:
        raise ProtocolError("the transcript's last tree is finished: it needs no further histogram")
    return finished, grower


def _same_routing(got: Any, tree: Tree) -> bool:
    want = routing_payload(tree)
    if not isinstance(got, dict) or sorted(got) != sorted(want):
        return False
    try:
        return all(np.array_equal(np.asarray(got[k], dtype=want[k].dtype), want[k]) for k in want)
    except (TypeError, ValueError):
        return False


def _pin_cuts(params: dict, ctx: Any) -> str | None:
    """Why the request's cuts are not this session's (None when they are, or when first seen)."""
    state = getattr(ctx, "state", None)
    if state is None:
        return None
    scope = params_hash("gbdt cuts scope", list(params["features"]), int(params["max_bin"]))
    cuts = params_hash("gbdt cuts", [np.asarray(c, dtype=np.float64) for c in params["cuts"]])
    prev = state.record_opening(f"{ctx.study}/gbdt.cuts/{ctx.session}/{scope}", [cuts])
    return None if prev is None else "its bin cuts differ from the cuts this session's boosting already used"


def check_request(params: dict, ctx: Any) -> None:
    """Refuse (``DisclosureError``, rule ``transcript``) a histogram request that does not follow from its
    signed transcript (module docstring). ``ctx``: the site's context (study, session, pinned peers)."""
    try:
        finished, grower = replay(params, ctx.peers, study=ctx.study, session=ctx.session, site=ctx.site_id,
                                  decryptors=getattr(ctx.state, "decryptors", None))
        problem = None
        trees = params.get("trees")
        if not isinstance(trees, list) or len(trees) != len(finished):
            problem = "its finished trees are not the trees of its transcript"
        elif not all(_same_routing(got, t) for got, t in zip(trees, finished, strict=True)):
            problem = "a finished tree (routing, thresholds or leaf values) differs from its released splits"
        elif not _same_routing(params.get("tree"), grower.tree):
            problem = "the tree being grown differs from its released splits"
        elif LevelRequest.from_params(params) != grower.request():
            problem = "it asks for nodes other than the next level of the tree"
        else:
            problem = check_cuts(params, ctx) or _pin_cuts(params, ctx)
    except (ProtocolError, ValueError, KeyError, TypeError) as exc:
        problem = f"its transcript does not verify: {exc}"
    if problem:
        raise DisclosureError(f"site {ctx.site_id} refuses a boosting request: {problem} (rule transcript)",
                              rule="transcript", site_id=ctx.site_id)

"""Boosting sites accept only bin cuts they derive themselves from signed sketch releases (issue 13).

The attack: a coordinator crafts the cuts of a fresh session (one age cut; the next session the cut one
value higher). Each root split passes the count rule, but the two released left-child counts differ by the
few patients between the two thresholds. Every boosting request carries the signed sketch releases its cuts
come from; each site verifies them (signer, study, session, contribution, parameters) and recomputes the cuts.
The tests drive the real sites through the real in-process transport (harness of ``test_gbdt_release``).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from ehr_fed.federation import Federation
from ehr_fed.federation.coordinator import FederationError
from ehr_fed.federation.releases import decode_arrays, encode_arrays, sign_release
from ehr_fed.federation.testing import FEATURES, test_ceremony
from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier
from ehr_fed.models.gbdt import transcript as gbdt_transcript
from ehr_fed.models.gbdt.federated import FederatedHistogramSource
from ehr_fed.models.gbdt.predictor import Tree
from ehr_fed.models.gbdt.release import LevelRequest
from ehr_fed.models.gbdt.transcript import SETTINGS

from .conftest import MIN
from .test_gbdt_release import (
    COL,
    FIT,
    SITES,
    _assert_refused,
    _federation,
    _histogram_requests,
    _pooled,
    _resend,
)
from .test_gbdt_release import private_fit as _release_private_fit


@pytest.fixture(scope="module")
def honest():
    fed = _federation(encrypted=True)
    model = FederatedGradientBoostingClassifier(encrypted=True, **FIT).fit(fed)
    yield {"fed": fed, "spy": fed.transport, "model": model}
    fed.close()


def _root(spy):
    return _histogram_requests(spy)[0]


def _record(text: str) -> dict:
    return json.loads(text)


def _text(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


# -- the honest fit -------------------------------------------------------------------------------------------
def test_honest_fit_carries_its_signed_sketch_and_every_site_accepts_it(honest):
    spy, model = honest["spy"], honest["model"]
    requests = _histogram_requests(spy)
    assert requests and all(m.payload["params"]["cut_source"]["kind"] == "sketch" for m in requests)
    source = requests[0].payload["params"]["cut_source"]
    for name in ("coarse", "fine"):
        record = _record(source[name])
        assert record["task"] == "stats.histogram" and record["signer"] == "site_a"
        assert record["participants"] == list(SITES)
    replies = [r for r in spy.replies if r.task == "gbdt.histograms"]
    assert replies and all(r.ok for r in replies)
    assert min(len(c) for c in model.bin_edges_) >= 1
    # the same cuts and source in another training of the session: accepted
    params = copy.deepcopy(requests[0].payload["params"])
    params["training_id"] = "another"
    assert all(rep.ok for rep in _resend(honest["fed"], requests[0], params).values())


# -- crafted cuts -----------------------------------------------------------------------------------------------
def _crafted_pair():
    """Two age cuts a few patients apart near the median: ``(v1, v2, rows in [v1, v2))``."""
    ages = np.sort(_pooled()["age"].to_numpy().astype(np.float32))
    v1 = ages[len(ages) // 2]
    v2 = ages[ages > v1][0]
    between = int(((ages >= v1) & (ages < v2)).sum())
    assert 1 <= between < MIN
    return float(v1), float(v2), between


def _crafted_root(fed, common: dict, age_cut: float, cut_source=None) -> np.ndarray:
    """The root of a training over cuts with one age cut only, through the real secure-sum protocol."""
    cuts = [np.array([age_cut]) if f == "age" else np.zeros(0) for f in FEATURES]
    p = {k: v for k, v in common.items() if k in SETTINGS and k != "training_id"}
    p["cuts"] = cuts
    if cut_source is not None:
        p["cut_source"] = cut_source
    source = FederatedHistogramSource(fed, p, len(_pooled()), FIT["max_bin"] + 1, sites=list(SITES))
    source.begin_tree([])
    return source.release(Tree(), LevelRequest((0,), (0,), ()))


def test_without_the_cut_check_two_fresh_sessions_difference_a_few_patients(honest, monkeypatch):
    """What the check prevents: with it removed, the crafted cuts of two fresh sessions are accepted and the
    released left-child counts differ by 1 .. MIN-1 patients."""
    monkeypatch.setattr(gbdt_transcript, "check_cuts", lambda params, ctx: None)
    common = _root(honest["spy"]).payload["params"]
    v1, v2, between = _crafted_pair()
    inner = _federation(encrypted=False)
    try:
        counts = []
        for cut in (v1, v2):  # two fresh sessions at the same sites
            fed = Federation(inner.transport.inner, encrypted=False, study="s1")
            row = _crafted_root(fed, common, cut, {"kind": "public"})[0]
            assert row[COL["split"]] == 1 and min(row[COL["c_left"]], row[COL["c_right"]]) >= MIN
            counts.append(row[COL["c_left"]])
    finally:
        inner.close()
    assert counts[1] - counts[0] == between


def test_crafted_cuts_in_a_fresh_session_are_refused(honest):
    common = _root(honest["spy"]).payload["params"]
    v1, _, _ = _crafted_pair()
    inner = _federation(encrypted=False)
    try:
        site_nodes = inner.transport.inner
        # given cuts: no site with a small-cell rule takes them
        fed = Federation(site_nodes, encrypted=False, study="s1")
        with pytest.raises(FederationError, match=r"\[transcript\].*bin cuts are given, not derived"):
            _crafted_root(fed, common, v1, {"kind": "public"})
        # crafted cuts beside an honest sketch the attacker ran in this session: the sites recompute the cuts
        from ehr_fed.stats.federated import bin_edge_sketch

        fed = Federation(site_nodes, encrypted=False, study="s1")
        _, source = bin_edge_sketch(fed, FEATURES, FIT["max_bin"])
        with pytest.raises(FederationError, match=r"\[transcript\].*do not follow from the signed sketch release"):
            _crafted_root(fed, common, v1, source)
        # the same sketch in the next session: a release of another session
        fed = Federation(site_nodes, encrypted=False, study="s1")
        with pytest.raises(FederationError, match=r"\[transcript\].*release record is for session"):
            _crafted_root(fed, common, v1, source)
        # no source at all
        fed = Federation(site_nodes, encrypted=False, study="s1")
        params = {k: v for k, v in common.items() if k != "cut_source"}
        with pytest.raises(FederationError, match=r"\[transcript\].*lacks the setting 'cut_source'"):
            _crafted_root(fed, params, v1)
    finally:
        inner.close()


# -- forged and foreign sketch records ---------------------------------------------------------------------------
def _with_fine(msg, record: dict | None = None, **source) -> dict:
    params = copy.deepcopy(msg.payload["params"])
    params["training_id"] = "forged"
    if record is not None:
        params["cut_source"]["fine"] = _text(record)
    params["cut_source"].update(source)
    return params


def _moved(counts: np.ndarray) -> np.ndarray:
    """One patient moved from a non-empty fine bin of age to the next bin (the cuts would shift)."""
    out = counts.copy()
    row = out[0, FEATURES.index("age")]
    i = int(np.flatnonzero(np.nan_to_num(row) > 0)[len(np.flatnonzero(np.nan_to_num(row) > 0)) // 2])
    row[i] -= 1
    row[i + 1] += 1
    return out


def test_altered_forged_and_foreign_sketch_records_are_refused(honest):
    fed, spy = honest["fed"], honest["spy"]
    root = _root(spy)
    fine = _record(root.payload["params"]["cut_source"]["fine"])
    arrays = decode_arrays(fine["arrays"])
    keys, _ = test_ceremony(SITES)
    # the released counts altered: the decrypting site's signature breaks
    altered = dict(fine, arrays=encode_arrays({"hist": _moved(arrays["hist"])}))
    _assert_refused(_resend(fed, root, _with_fine(root, altered)), "does not verify: the values were altered")
    # re-signed by another member (a valid member key, not the decrypting site the contributors agreed to)
    header = {k: fine[k] for k in ("study", "session", "round", "task", "params_digest", "participants")}
    forged = sign_release(keys["site_b"], **header, arrays={"hist": _moved(arrays["hist"])})
    _assert_refused(_resend(fed, root, _with_fine(root, forged)), "agreed to decryption by 'site_a'")
    # signed by the decrypting site, but of a computation no site contributed to (edges of its own choosing)
    invented = sign_release(keys["site_a"], **{**header, "params_digest": "0" * 64},
                            arrays={"hist": _moved(arrays["hist"])})
    _assert_refused(_resend(fed, root, _with_fine(root, invented)), "this site did not contribute to")
    # the coarse release in the fine one's place (a computation they did contribute to, over other edges)
    coarse = root.payload["params"]["cut_source"]["coarse"]
    _assert_refused(_resend(fed, root, _with_fine(root, fine=coarse)), "transcript does not verify")
    # a release of another study
    foreign = sign_release(keys["site_a"], **{**header, "study": "s2"}, arrays=arrays)
    _assert_refused(_resend(fed, root, _with_fine(root, foreign)), "release record is for study 's2'")


def test_the_sketch_records_sign_the_merged_groups(honest):
    """The decrypting site signs the groups it merged with the counts: the cuts are computed from those, and a
    record whose groups were changed no longer verifies."""
    from ehr_fed.stats.federated import merged_runs

    fed, spy = honest["fed"], honest["spy"]
    root = _root(spy)
    source = root.payload["params"]["cut_source"]
    for name in ("coarse", "fine"):
        signed = _record(source[name])["suppressed"]["hist"]
        np.testing.assert_array_equal(merged_runs(signed), np.asarray(source[f"{name}_merged"]).reshape(-1, 3))
    fine = _record(source["fine"])
    groups = fine["suppressed"]["hist"]
    assert groups, "the honest fine sketch merged no bins: the test needs a federation with small bins"
    altered = dict(fine, suppressed={"hist": [g for g in groups if g is not groups[0]] + [[*groups[0], groups[0][-1] + 1]]})
    _assert_refused(_resend(fed, root, _with_fine(root, altered)), "does not verify: the values were altered")


def test_reported_groups_beside_a_signed_record_are_not_read(honest):
    """With the groups signed in the record, another (consistent) grouping reported beside it changes nothing:
    the site reads the signed groups, so the cut check neither follows the report nor sees a second grouping."""
    fed, spy = honest["fed"], honest["spy"]
    root = _root(spy)
    source = root.payload["params"]["cut_source"]
    counts = decode_arrays(_record(source["fine"])["arrays"])["hist"].reshape(len(FEATURES), -1)
    merged = [[int(x) for x in run] for run in np.asarray(source["fine_merged"])]
    row, first = next((r, int(i)) for r in range(len(FEATURES)) for i in np.flatnonzero(counts[r] > 0)
                      if not any(m[0] == r and m[1] <= i <= m[2] for m in merged)
                      and i + 1 < counts.shape[1] and counts[r, i + 1] == 0
                      and not any(m[0] == r and m[1] == i + 1 for m in merged))
    params = copy.deepcopy(root.payload["params"])
    params["cut_source"]["fine_merged"] = np.array(merged + [[row, first, first + 1]])
    for sid, rep in _resend(fed, root, params).items():
        assert rep.ok or ("merged groups" not in rep.error and "cuts" not in rep.error), (sid, rep.error)


def test_merged_groups_must_match_the_signed_counts_and_cannot_be_swapped(honest):
    """For a record that signs no groups (the decrypting site's signature over the counts alone), the groups the
    request reports are read: an inconsistent group is refused, and a consistent other grouping of the same
    signed histogram is refused once the site has accepted one."""
    fed, spy = honest["fed"], honest["spy"]
    root = _root(spy)
    source = dict(root.payload["params"]["cut_source"])
    keys, _ = test_ceremony(SITES)
    bare = {k: v for k, v in _record(source["fine"]).items() if k not in ("suppressed", "signature")}
    header = {k: bare[k] for k in ("study", "session", "round", "task", "params_digest", "participants")}
    bare = sign_release(keys["site_a"], **header, arrays=decode_arrays(bare["arrays"]))
    root = copy.deepcopy(root)
    root.payload["params"]["cut_source"]["fine"] = _text(bare)
    counts = decode_arrays(bare["arrays"])["hist"].reshape(len(FEATURES), -1)
    merged = [[int(x) for x in run] for run in np.asarray(source["fine_merged"])]  # (row, first, last)
    taken = {(row, b) for row, first, last in merged for b in range(first, last + 1)}
    # a group grown over a bin that holds rows: inconsistent with the signed counts
    j = FEATURES.index("age")
    nz = np.flatnonzero(counts[j] > 0)
    bad = [j, int(nz[0]), int(nz[0]) + 1] if counts[j, nz[0] + 1] > 0 else [j, int(nz[1]) - 1, int(nz[1])]
    clean = [r for r in merged if r[0] != j or r[2] < bad[1] or r[1] > bad[2]]
    _assert_refused(_resend(fed, root, _with_fine(root, fine_merged=np.array(clean + [bad]))),
                    "does not match its signed counts")
    # a group grown over an empty bin after it: consistent, but not the grouping the sites accepted
    grown = None
    for row in range(len(FEATURES)):
        for i in np.flatnonzero(counts[row] > 0):
            own = next((r for r in merged if r[0] == row and r[1] == i), [row, int(i), int(i)])
            nxt = own[2] + 1
            if nxt < counts.shape[1] and counts[row, nxt] == 0 and (row, nxt) not in taken:
                grown = (own, [row, own[1], nxt])
                break
        if grown:
            break
    assert grown is not None
    other = np.array([r for r in merged if r != grown[0]] + [grown[1]])
    _assert_refused(_resend(fed, root, _with_fine(root, fine_merged=other)),
                    "differ from those this site accepted for the same signed histogram")
    # a malformed run
    _assert_refused(_resend(fed, root, _with_fine(root, fine_merged=np.array([[j, 5, 5]]))),
                    "is not a run of two or more of its bins")


# -- the private path ----------------------------------------------------------------------------------------------
private_fit = _release_private_fit  # the module-scoped private training, one of its own in this module
def test_private_cuts_follow_from_the_signed_noisy_counts(private_fit):
    fed, spy = private_fit["fed"], private_fit["spy"]
    root = _histogram_requests(spy)[0]
    source = root.payload["params"]["cut_source"]
    assert source["kind"] == "private" and _record(source["record"])["task"] == "gbdt.dp_bin_counts"
    assert all(r.ok for r in spy.replies if r.task == "gbdt.histograms")
    # crafted cuts beside the honest private release
    params = copy.deepcopy(root.payload["params"])
    params["cuts"] = [np.asarray(c, dtype=np.float64) for c in params["cuts"]]
    params["cuts"][FEATURES.index("age")] = np.array([_crafted_pair()[0]])
    _assert_refused(_resend(fed, root, params), "do not follow from the signed private release")
    # another grid than the one the noisy counts were taken on
    params = copy.deepcopy(root.payload["params"])
    params["cut_source"]["grid"] = np.asarray(source["grid"], dtype=np.float64) * 0.5
    _assert_refused(_resend(fed, root, params), "not of the training's features, grid and release plan")
    # the noisy counts altered
    params = copy.deepcopy(root.payload["params"])
    record = _record(source["record"])
    counts = decode_arrays(record["arrays"])["counts"].copy()
    counts[0] += 5
    params["cut_source"]["record"] = _text(dict(record, arrays=encode_arrays({"counts": counts})))
    _assert_refused(_resend(fed, root, params), "does not verify: the values were altered")
    # the private source in a request without the release plan (exact sums over the same cuts)
    params = copy.deepcopy(root.payload["params"])
    for key in ("dp", "dp_index", "dp_channel_weights", "dp_max_leaf", "dp_min_hessian_sigmas"):
        params.pop(key)
    _assert_refused(_resend(fed, root, params), "belong to a private training")


def test_given_cuts_of_a_private_training_are_still_pinned_per_session(private_fit):
    """Cuts given by the analyst pass in a private training, but a session keeps one set of cuts: a second
    training with cuts one value apart is refused (the pin, persistent at every site)."""
    fed, spy = private_fit["fed"], private_fit["spy"]
    root = _histogram_requests(spy)[0]
    params = copy.deepcopy(root.payload["params"])
    params["training_id"], params["cut_source"] = "given", {"kind": "public"}
    params["cuts"] = [np.asarray(c, dtype=np.float64).copy() for c in params["cuts"]]
    j = FEATURES.index("age")
    params["cuts"][j][0] = np.nextafter(np.float32(params["cuts"][j][0]), np.float32(np.inf))
    _assert_refused(_resend(fed, root, params), "bin cuts differ from the cuts this session's boosting already used")

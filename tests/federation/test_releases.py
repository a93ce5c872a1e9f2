"""Signed release records: what the decrypting site released, verifiable by every member."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr_fed.federation import Federation
from ehr_fed.federation.keys import SiteKeys
from ehr_fed.federation.messages import ProtocolError
from ehr_fed.federation.releases import sign_release, verify_release, verify_transcript


def _keys():
    a, b = SiteKeys.generate("a"), SiteKeys.generate("b")
    return a, b, {"a": a.public_bundle(), "b": b.public_bundle()}


def _record(keys, **over):
    fields = dict(study="s", session="x", round=3, task="logreg.newton", params_digest="d0",
                  participants=["b", "a"], arrays={"gradient": np.array([0.1, -2.5, np.nan]),
                                                  "n": 1234.0})
    fields.update(over)
    return sign_release(keys, **fields)


def test_round_trip_is_bit_exact():
    a, _, peers = _keys()
    rec = _record(a)
    values = verify_release(peers, rec, study="s", session="x", task="logreg.newton")
    np.testing.assert_array_equal(values["gradient"], np.array([0.1, -2.5, np.nan]))
    assert values["n"].shape == () and float(values["n"]) == 1234.0
    assert rec["participants"] == ["a", "b"]


@pytest.mark.parametrize("field, value", [("round", 4), ("task", "gbdt.histograms"), ("participants", ["a"]),
                                          ("params_digest", "d1"), ("signer", "b")])
def test_any_altered_field_is_refused(field, value):
    a, _, peers = _keys()
    rec = _record(a)
    rec[field] = value
    with pytest.raises(ProtocolError):
        verify_release(peers, rec)


def test_altered_value_and_foreign_signer_are_refused():
    a, b, peers = _keys()
    rec = _record(a)
    rec["arrays"]["n"]["f8"] = np.array(1235.0, dtype="<f8").tobytes().hex()
    with pytest.raises(ProtocolError, match="does not verify"):
        verify_release(peers, rec)
    stranger = SiteKeys.generate("c")
    with pytest.raises(ProtocolError, match="not a member"):
        verify_release(peers, _record(stranger))
    # a record whose signer claims to be a member but was signed with another key
    forged = _record(stranger)
    forged["signer"] = "a"
    with pytest.raises(ProtocolError, match="does not verify"):
        verify_release(peers, forged)
    with pytest.raises(ProtocolError, match="study"):
        verify_transcript(peers, [_record(b)], study="other", session="x")


def test_decrypting_site_signs_what_it_released():
    rng = np.random.default_rng(3)
    tables = {s: pd.DataFrame({"site_id": s, "person_key": [f"{s}{i}" for i in range(60)],
                               "index_time": pd.Timestamp("2021-01-01"), "label": rng.integers(0, 2, 60),
                               "age": rng.normal(60, 10, 60)}) for s in ("s0", "s1", "s2")}
    with Federation.in_process(tables, encrypted=True, key_bits=1024, allow_insecure=True) as fed:
        res = fed.secure_sum("models.row_count", {}, {"n": (1e6, 3)})
        node = next(iter(fed.transport.nodes.values()))
    assert res.release is not None and res.release["signer"] in tables
    values = verify_release(node.keys.peers, res.release, task="models.row_count")
    assert np.array_equal(values["n"].ravel(), np.asarray(res["n"]).ravel()) and values["n"].sum() == 180.0


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda ch: st.one_of(st.lists(ch, max_size=3), st.dictionaries(st.text(max_size=4), ch, max_size=3)),
    max_leaves=10)


@given(json_values)
@settings(max_examples=200)
def test_signed_statements_hash_the_same_json_text_as_json_dumps(value):
    """Every signed statement (contributions, reveals, releases) hashes exactly the text of
    ``json.dumps(..., sort_keys=True)``, so signatures made by either form verify under the other."""
    import json

    from ehr_fed.federation.signing import canonical_compact_json, canonical_json, compact_json

    assert canonical_json(value) == json.dumps(value, sort_keys=True)
    assert compact_json(value) == json.dumps(value, separators=(",", ":"))
    assert canonical_compact_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))

"""Paillier-encrypted federated logistic regression equals the plaintext federated fit."""

from __future__ import annotations

import numpy as np
import pytest

from ehr_fed.federation import Federation, PrivacyPolicy
from ehr_fed.federation.testing import make_tables, test_ceremony
from ehr_fed.models import FederatedLogisticRegression


@pytest.fixture(scope="module")
def tables():
    return make_tables((300, 400, 350), seed=5)


@pytest.fixture(scope="module")
def fits(tables, tmp_path_factory):
    keys, _ = test_ceremony(tuple(tables))  # one cached 1024-bit ceremony (tests only)
    policy = PrivacyPolicy(max_params_fraction=0.5)
    audit = tmp_path_factory.mktemp("audit")
    enc_fed = Federation.in_process(tables, policy=policy, encrypted=True, site_keys=keys, audit_dir=audit)
    plain_fed = Federation.in_process(tables, policy=policy, encrypted=False)
    out = {}
    for penalty in ("none", "l2"):
        enc = FederatedLogisticRegression(penalty=penalty, C=0.2).fit(enc_fed)
        plain = FederatedLogisticRegression(penalty=penalty, C=0.2, encrypted=False).fit(plain_fed)
        out[penalty] = enc, plain
    return out, audit


@pytest.mark.parametrize("penalty", ["none", "l2"])
def test_encrypted_fit_equals_plaintext_fit(fits, tables, penalty):
    enc, plain = fits[0][penalty]
    assert list(enc.terms_) == list(plain.terms_)
    assert enc.n_iter_ == plain.n_iter_
    np.testing.assert_allclose(enc.coef_, plain.coef_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(enc.intercept_, plain.intercept_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(enc.covariance_, plain.covariance_, rtol=0, atol=1e-9)
    assert enc.loglik_ == pytest.approx(plain.loglik_, abs=1e-9)
    np.testing.assert_allclose(enc.summary().to_numpy(), plain.summary().to_numpy(), rtol=1e-9, atol=1e-9)
    for table in tables.values():
        np.testing.assert_allclose(enc.predict_proba(table), plain.predict_proba(table), rtol=0, atol=1e-10)


def test_sites_released_only_ciphertexts(fits, tables):
    from ehr_fed.privacy import AuditLog

    _, audit = fits
    for site in tables:
        entries = AuditLog.read(audit / f"{site}.audit.jsonl")
        sums = [e for e in entries if e["action"] == "secure_sum"]
        assert {e["task"] for e in sums} == {"models.row_count", "models.preprocess_sums", "logreg.newton"}
        for e in sums:
            assert e["encrypted"] is True
            assert all("bytes" in v for v in e["sizes"]["arrays"].values()), e["sizes"]
        # the only plaintext reply is the list of feature column names
        # plaintext replies: the schema, and the pre-flight check of the policy rules
        assert {e["task"] for e in entries if e["action"] == "query"} <= {"models.schema", "models.preflight"}

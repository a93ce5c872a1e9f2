"""Leave-one-site-out validation on subset views, and the local-only comparison."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ehr_fed.evaluation import SubsetTransport, compare_local_only, leave_one_site_out, subset_federation
from ehr_fed.federation import Federation
from ehr_fed.models import FederatedLogisticRegression

from .conftest import FEATURES, POLICY, make_sites, site_table

pytestmark = pytest.mark.filterwarnings("ignore:terms left out of the model")


def test_loso_is_not_permitted_because_it_would_difference_out_each_site():
    tables = make_sites((250, 300, 280, 260))
    est = FederatedLogisticRegression(encrypted=False, features=FEATURES)
    with Federation.in_process(tables, policy=POLICY, encrypted=False) as fed:
        FederatedLogisticRegression(encrypted=False, features=FEATURES).fit(fed)   # the model on all sites
        out = leave_one_site_out(fed, est)
        assert fed.site_ids == list(tables)  # the parent federation is untouched
        assert list(out.index) == list(tables) and (out["status"] == "not permitted").all()
        assert "differencing" in out.loc["site_b", "note"] and out["auc"].isna().all()
        # a coordinator that runs the splits anyway is refused by the sites themselves
        forced = leave_one_site_out(fed, est, allow_differencing=True)
    assert (forced["status"] == "failed").all()
    assert all("[differencing]" in note or "differenc" in note for note in forced["note"])
    assert forced["auc"].isna().all()


def test_loso_below_min_sites_is_not_permitted_and_says_why(plain_fed):
    out = leave_one_site_out(plain_fed, FederatedLogisticRegression(encrypted=False, features=FEATURES),
                             allow_differencing=True)
    assert (out["status"] == "not permitted").all() and out["auc"].isna().all()
    assert out.loc["site_a", "note"].startswith(
        "not permitted by the privacy policy: training without site_a would combine 2 site(s), the policy "
        "requires min_sites=3")
    assert plain_fed.policy.min_sites == 3  # not weakened


def test_subset_view_reaches_only_its_sites(plain_fed):
    sub = subset_federation(plain_fed, ["site_c", "site_a"])
    assert sub.site_ids == ["site_a", "site_c"]
    replies = sub.query("stats.count", {})
    assert sorted(replies) == ["site_a", "site_c"]
    sub.close()
    assert plain_fed.query("stats.count", {}).keys() == {"site_a", "site_b", "site_c"}
    with pytest.raises(KeyError, match=r"no such site\(s\) \['site_z'\] in the federation"):
        SubsetTransport(plain_fed.transport, ["site_z"])


def test_local_only_cv_auc_equals_a_local_sklearn_fit(plain_fed, tables, logreg, result):
    out = compare_local_only(plain_fed, logreg, k=5, federated=result.per_site)
    t = tables["site_b"]
    pipe = make_pipeline(SimpleImputer(add_indicator=True), StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    oof = cross_val_predict(pipe, t[FEATURES].to_numpy(float), t["label"].to_numpy(), cv=cv,
                            method="predict_proba")[:, 1]
    assert out.loc["site_b", "local_cv_auc"] == pytest.approx(roc_auc_score(t["label"], oof), abs=1e-12)
    assert out.loc["site_b", "federated_auc"] == result.per_site.loc["site_b", "auc"]
    np.testing.assert_allclose(out["difference"], out["federated_auc"] - out["local_cv_auc"])
    assert (out["local_model"] == "logreg").all()


def test_local_only_is_suppressed_at_a_site_with_few_events(logreg):
    tables = make_sites((300, 400))
    small = site_table("site_c", 150, 9)
    small["label"] = np.int8(0)
    small.loc[:6, "label"] = np.int8(1)
    tables["site_c"] = small
    # the model was trained in another federation (other keys): these sites evaluate it as an approved model
    from ehr_fed.evaluation.provenance import approved_digest

    policy = {**POLICY, "approved_models": [approved_digest(logreg)]}
    with Federation.in_process(tables, policy=policy, encrypted=False) as fed:
        out = compare_local_only(fed, logreg, local_model="gbdt", k=3)
        with pytest.raises(Exception, match="local_model 'svm' is not one of"):
            from ehr_fed.evaluation.tasks import _local_estimator

            _local_estimator("svm", 0)
    assert np.isnan(out.loc["site_c", "local_cv_auc"]) and np.isnan(out.loc["site_c", "federated_auc"])
    assert "suppressed: fewer than 10 positive or negative" in out.loc["site_c", "note"]
    assert out.loc["site_a", "local_cv_auc"] > 0.5

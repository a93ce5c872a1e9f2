"""The demo's pooled and local-only logistic regressions are the federated model's specification.

A reference row that differs from the federated model by its penalty (not only its features) would make the
comparison table of ``ehr-fed demo`` compare two different models. The tables here have what made it differ
before: a lab missing for most rows and a rare count, whose scales are far from 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr_fed import demo
from ehr_fed.federation import Federation
from ehr_fed.models import FederatedLogisticRegression

FEATURES = ["age", "prior_inpatient_365d", "lab_glucose", "cond_ckd"]


def table(site: str, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(65, 15, n)
    prior = (rng.random(n) < 0.01).astype(float) * rng.integers(1, 4, n)  # rare: scale about 0.1
    glucose = np.where(rng.random(n) < 0.9, np.nan, rng.normal(120, 35, n))  # 90 % missing
    ckd = (rng.random(n) < 0.1).astype(float)
    eta = -3 + 0.02 * age + 1.0 * prior + 0.8 * ckd + 0.01 * np.nan_to_num(glucose - 120)
    label = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype("int8")
    return pd.DataFrame({"site_id": site, "person_key": [f"{seed:02x}{i:012x}" for i in range(n)],
                         "index_time": pd.Timestamp("2023-01-01"), "label": label, "age": age,
                         "prior_inpatient_365d": prior, "lab_glucose": glucose, "cond_ckd": ckd})


@pytest.mark.parametrize("C", [1.0, 0.05])
def test_the_pooled_reference_is_the_federated_model(C):
    tables = {f"site_{s}": table(f"site_{s}", n, 40 + i) for i, (s, n) in enumerate(zip("abc", (400, 300, 250), strict=True))}
    cfg = demo.DemoConfig(C=C)
    with Federation.in_process(tables, policy={"min_cell_count": 5, "min_sites": 3}, encrypted=False) as fed:
        fed_model = FederatedLogisticRegression(encrypted=False, features=FEATURES, penalty="l2", C=C).fit(fed)
    pooled = pd.concat(tables.values(), ignore_index=True)
    ref = demo._sk_logreg(cfg).fit(pooled[FEATURES], pooled["label"])
    p_ref = ref.predict_proba(pooled[FEATURES])[:, 1]
    p_fed = fed_model.predict_proba(pooled)[:, 1]
    assert np.abs(p_ref - p_fed).max() < 1e-6
    np.testing.assert_allclose(ref[-1].coef_.ravel()[:len(FEATURES)],
                               fed_model.coef_.ravel()[[list(fed_model.terms_).index(f) for f in FEATURES]],
                               rtol=1e-5, atol=1e-7)


def test_the_reference_rows_use_the_federated_models_features(tmp_path):
    tables = {f"site_{s}": table(f"site_{s}", n, 50 + i) for i, (s, n) in enumerate(zip("abc", (300, 300, 300), strict=True))}
    train, test = demo.split_tables(tables, 0.3)
    refs = demo.reference_models(train, test, {"logreg": FEATURES[:2], "gbdt": FEATURES}, demo.DemoConfig())
    assert set(refs.loc[refs["model"] == "logreg", "features"]) == {2}
    assert set(refs.loc[refs["model"] == "gbdt", "features"]) == {4}

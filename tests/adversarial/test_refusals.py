"""The refusal channel: a refusal leaves the site, so it carries a reason code and the rule, never a value
computed from the site's rows (its row count, a count, a sum)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ehr_fed.federation import SiteContext, site_task
from ehr_fed.privacy import PrivacyPolicy

from .conftest import MaliciousCoordinator


@site_task("test.adversarial_gradient", kind="gradient")
def _gradient(table: pd.DataFrame, params: dict, ctx: SiteContext):
    k = int(params.get("k", 2))
    x = np.nan_to_num(table[["age", "los_days"]].to_numpy(float))[:, :1].repeat(k, axis=1)
    return {"gradient": x.sum(axis=0)}


def _site_values(table: pd.DataFrame) -> set[str]:
    """Numbers a refusal must not print: rows, positives, negatives, a fraction of the rows."""
    n, pos = len(table), int(table["label"].sum())
    vals = {n, pos, n - pos}
    return {str(v) for v in vals if v > 3} | {f"{0.1 * n:g}", f"{0.33 * n:g}"}


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", text))


def _check(err: str, code: str, rule: str, table: pd.DataFrame) -> None:
    assert f"[{code}]" in err and rule in err, err
    public = {"10", "3", "2", "0.1"}  # the policy's own settings and the request's numbers
    leaked = (_numbers(err) - public) & _site_values(table)
    assert not leaked, (leaked, err)


def test_refusals_carry_code_and_rule_never_site_values(small_site_tables):
    from ehr_fed.federation import Federation, FederationError

    tables = small_site_tables
    policy = PrivacyPolicy(max_params_fraction=0.1, allowed_tasks=["stats.*", "gbdt.*", "test.*", "evaluation.*"])
    with Federation.in_process(tables, policy=policy, encrypted=False) as fed:
        res = fed.secure_sum("test.adversarial_gradient", {"k": 2}, {"gradient": (1e9, 4)})
        assert set(res.missing) == {"site_d"}  # 2 parameters > 0.1 x its rows
        _check(res.missing["site_d"], "too_many_parameters", "max_params_fraction", tables["site_d"])
        with pytest.raises(FederationError) as exc:  # boosting leaves below the minimum: every site refuses
            fed.secure_sum("gbdt.histograms", {"min_count": 3}, {"hist": (1e9, 4)})
        for sid in tables:
            line = next((x for x in str(exc.value).splitlines() if x.strip().startswith(f"{sid}:")), str(exc.value))
            _check(line, "small_cell", "min_cell_count", tables[sid])
    m = MaliciousCoordinator(tables, PrivacyPolicy(allowed_tasks=["gbdt.*", "evaluation.*"]))
    try:
        other = m.query("stats.count", {})  # not an allowed task
        plain = m.query("evaluation.score_histograms", {})  # a secure-sum-only task asked in plaintext
    finally:
        m.close()
    for sid, rep in other.items():
        assert rep.error_kind == "disclosure"
        _check(rep.error, "task_not_allowed", "allowed_tasks", tables[sid])
    for rep in plain.values():
        assert not rep.ok and "[release_mode]" in rep.error


def test_disclosure_error_has_a_reason_code():
    from ehr_fed.privacy import DisclosureError

    err = DisclosureError("site x refuses", rule="min_sites")
    assert err.code == "too_few_sites" and str(err).startswith("[too_few_sites] ")
    assert str(DisclosureError(str(err), rule="min_sites")).count("[too_few_sites]") == 1

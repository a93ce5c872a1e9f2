"""Figures, tables and the HTML / JSON report of an evaluation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from ehr_fed.evaluation.plots import importance_figure  # noqa: E402
from ehr_fed.evaluation.report import (  # noqa: E402
    build_report,
    model_table,
    model_terms_note,
    odds_ratio_table,
    write_html,
    write_json,
)


def test_plot_roc_draws_the_histogram_curve(result):
    fig = result.plot_roc()
    line = fig.axes[0].lines[0]
    fpr, tpr = result.roc_curve()
    np.testing.assert_array_equal(line.get_xdata(), fpr)
    np.testing.assert_array_equal(line.get_ydata(), tpr)
    assert f"AUC {result.overall['auc']:.3f}" in line.get_label()
    ax = fig.axes[0]
    # every legend entry is a line that is drawn; the LACE AUC (a number, no curve) is written on the plot
    drawn = {ln.get_label() for ln in ax.lines if len(ln.get_xdata())}
    assert {t.get_text() for t in ax.get_legend().get_texts()} <= drawn
    assert not any("LACE" in t.get_text() for t in ax.get_legend().get_texts())
    assert any(t.get_text() == f"LACE index alone: AUC {result.lace['auc']:.3f}" for t in ax.texts)
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_xlim() == (0, 1)


def test_plot_calibration_draws_the_merged_bins(result):
    fig = result.plot_calibration()
    line = fig.axes[0].lines[1]
    np.testing.assert_allclose(line.get_xdata(), [c["mean_predicted"] for c in result.calibration_curve])
    np.testing.assert_allclose(line.get_ydata(), [c["observed"] for c in result.calibration_curve])


def test_frame_html_and_json(result):
    df = result.to_frame()
    assert df.loc["AUC (c-statistic)", "value"] == result.overall["auc"]
    assert df.loc["LACE index AUC (baseline)", "value"] == result.lace["auc"]
    assert "<h4>Per site</h4>" in result._repr_html_()
    data = json.loads(result.to_json())
    assert data["overall"]["brier"] == result.overall["brier"]
    assert data["per_site"][0]["site_id"] == "site_a"
    assert data["roc_curve"]["fpr"][0] == 0.0 and data["roc_curve"]["tpr"][-1] == 1.0
    assert len(data["roc_curve"]["fpr"]) <= 1000


def test_model_table_is_odds_ratios_for_logreg_without_the_intercept(logreg):
    title, table = model_table(logreg)
    assert title.startswith("odds ratios") and "odds_ratio" in table.columns
    assert "intercept" not in table.index and list(table.index) == list(logreg.terms_)
    np.testing.assert_allclose(table.loc["age", "odds_ratio"], np.exp(table.loc["age", "coef"]))


def test_odds_ratio_table_formats_and_names_terms(logreg):
    from ehr_fed.mapping import load_study

    study = load_study(Path(__file__).resolve().parents[2] / "mappings/studies/readmission_30d.yaml")
    summary = logreg.summary()
    shown = odds_ratio_table(summary, study)
    assert "intercept" not in " ".join(shown.index).lower()
    assert "Age (years)" in shown.index and "Creatinine missing" in shown.index
    r = summary.loc["age"]
    assert shown.loc["Age (years)", "odds ratio"] == f"{r['odds_ratio']:.2f}"
    assert shown.loc["Age (years)", "95 % CI"] == f"{r['or_ci_lower']:.2f} to {r['or_ci_upper']:.2f}"
    note = model_terms_note(logreg, study)
    assert note.startswith(f"The model uses 5 of the study's {len(study.feature_names)} features")
    assert "6 terms are 5 features and 1 missing-value indicator" in note and "indicators" not in note and "LACE index" in note


def test_importance_figure_shows_used_features_with_a_labelled_axis():
    fig = importance_figure(["a", "b", "c", "d"], np.array([0.5, 0.0, 0.3, 0.2]), "t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["d", "c", "a"]  # largest on top, zero left out
    assert ax.get_xlabel() == "share of the model's total gain"
    assert [t.get_text() for t in ax.texts] == ["1 feature not used by any split: b"]  # named, not only counted


@pytest.fixture(scope="module")
def report(plain_fed, logreg, result):
    return build_report(plain_fed, logreg, result=result, k=3, evaluated_on="the test rows")


def test_report_html_is_self_contained(report, tmp_path):
    path = write_html(report, tmp_path / "r.html")
    text = path.read_text()
    assert text.count("data:image/png;base64,") == 2  # ROC and calibration
    assert "<h2>Per site</h2>" in text and "Model: odds ratios" in text and "Table 1" in text
    assert "Baseline: the LACE index alone as a risk score has AUC" in text
    assert "Comparison with local-only models" in text and "3-fold CV AUC" in text
    n = report["result"].overall["n"]
    assert f"Evaluated on the test rows: {int(n)} index events" in text
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched from elsewhere
    assert text.count("<style>") == 1


def test_report_reads_without_help(report, tmp_path):
    text = write_html(report, tmp_path / "r.html").read_text()
    res = report["result"]
    assert f"<td>{int(res.overall['n'])}</td>" in text and f"<td>{int(res.overall['positives'])}</td>" in text
    assert not re.search(r">\d{2,}\.0+<", text)  # no count written as a decimal
    assert "<th>intercept</th>" not in text.lower() and "not available" not in text
    assert "coef" not in text and "odds_ratio" not in text  # reader's headings, not the data's keys
    assert f"Fitted on {int(report['model'].n_samples_)} index events" in text and "Newton rounds" in text


def test_report_json(report, tmp_path):
    data = json.loads(write_json(report, tmp_path / "r.json").read_text())
    assert data["evaluation"]["overall"]["auc"] == report["result"].overall["auc"]
    assert data["evaluation"]["local_only"][0]["k"] == 3
    assert "N" in data["table_one"] and data["model_table"]["title"].startswith("odds ratios")


def test_gbdt_report_shows_feature_importances(plain_fed, tmp_path):
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    model = FederatedGradientBoostingClassifier(n_estimators=3, max_depth=2, encrypted=False).fit(plain_fed)
    rep = build_report(plain_fed, model, local_only=False, table_one=False, lace=False, n_bins=500)
    title, table = rep["model_title"], rep["model_table"]
    assert title.startswith("feature importances") and table["importance"].sum() == pytest.approx(1.0)
    text = write_html(rep, tmp_path / "g.html").read_text()
    assert text.count("data:image/png;base64,") == 3 and "LACE" not in text
    # the importances are the model's, shown in its section (the evaluation's figures are ROC and calibration)
    model_part = text.split("<h2>Model: gradient boosting</h2>")[1]
    assert model_part.count("data:image/png;base64,") == 1 and "Feature importances" in model_part
    # only sections with data: no local-only comparison, no Table 1, nothing "not available"
    assert "local-only" not in text and "Table 1" not in text and "not available" not in text
    assert "Evaluated on every row of the sites&#x27; tables (no held-out split given)" in text


def test_report_of_a_private_model_states_its_epsilon_and_delta(report, tmp_path):
    import copy

    from ehr_fed.evaluation.report import dp_facts

    assert report["dp"] is None and "Differential privacy" not in write_html(report, tmp_path / "a.html").read_text()
    model = copy.copy(report["model"])
    model.dp_ = {"epsilon": 1.9734, "delta": 1e-7, "epsilon_planned": 2.0, "releases": 7, "events_per_patient": 1,
                 "protects": "the presence of one patient in a site's table", "noise": {"large": "record"}}
    facts = dp_facts(model)
    assert facts["epsilon"] == 1.9734 and "noise" not in facts  # the report keeps the headline facts only
    private = {**report, "model": model, "dp": facts}
    text = write_html(private, tmp_path / "p.html").read_text()
    assert ("spent epsilon 1.973 (planned 2), delta 1e-07 over 7 private releases; it protects the presence of "
            "one patient in a site&#x27;s table") in text or "spent epsilon 1.973 (planned 2), delta 1e-07" in text
    data = json.loads(write_json(private, tmp_path / "p.json").read_text())
    assert data["dp"] == facts

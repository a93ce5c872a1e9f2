"""Figures, tables and the HTML / JSON report of an evaluation."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from ehr_fed.evaluation.report import build_report, model_table, write_html, write_json  # noqa: E402


def test_plot_roc_draws_the_histogram_curve(result):
    fig = result.plot_roc()
    line = fig.axes[0].lines[0]
    fpr, tpr = result.roc_curve()
    np.testing.assert_array_equal(line.get_xdata(), fpr)
    np.testing.assert_array_equal(line.get_ydata(), tpr)
    assert f"AUC {result.overall['auc']:.3f}" in line.get_label()
    assert any("LACE" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


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


def test_model_table_is_odds_ratios_for_logreg(logreg):
    title, table = model_table(logreg)
    assert title.startswith("odds ratios") and "odds_ratio" in table.columns
    np.testing.assert_allclose(table.loc["age", "odds_ratio"], np.exp(table.loc["age", "coef"]))


@pytest.fixture(scope="module")
def report(plain_fed, logreg, result):
    return build_report(plain_fed, logreg, result=result, k=3)


def test_report_html_is_self_contained(report, tmp_path):
    path = write_html(report, tmp_path / "r.html")
    text = path.read_text()
    assert text.count("data:image/png;base64,") == 2  # ROC and calibration
    assert "<h2>Per site</h2>" in text and "odds_ratio" in text and "Table 1" in text
    assert "LACE index as a score: AUC" in text and "local_cv_auc" in text
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched from elsewhere


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
    assert text.count("data:image/png;base64,") == 3 and "LACE index as a score" not in text

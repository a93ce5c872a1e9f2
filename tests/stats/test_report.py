"""Table 1 and the statistics report as a clinician reads them: names and units from the study, the summary
chosen per variable type, integer counts, missing rows only where values are missing, labelled histograms."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from ehr_fed.federation import Federation  # noqa: E402
from ehr_fed.mapping import load_study  # noqa: E402
from ehr_fed.stats import report as stats_report  # noqa: E402
from ehr_fed.stats import table_one  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["age", "sex_female", "los_days", "charlson", "lab_creatinine"]


def _site(sid: str, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(66, 12, n)
    creat = rng.lognormal(0, 0.3, n)
    creat[rng.random(n) < 0.2] = np.nan
    los = rng.exponential(4, n)
    label = (rng.random(n) < 1 / (1 + np.exp(-(-3 + 0.03 * age + 0.1 * los)))).astype("int8")
    return pd.DataFrame({"site_id": sid, "person_key": [f"{sid}-{i}" for i in range(n)],
                         "index_time": pd.Timestamp("2022-01-01"), "label": label, "age": age,
                         "sex_female": (rng.random(n) < 0.5).astype(float), "los_days": los,
                         "charlson": rng.integers(0, 8, n).astype(float), "lab_creatinine": creat})


@pytest.fixture(scope="module")
def tables():
    return {sid: _site(sid, n, seed) for sid, n, seed in (("site_a", 400, 1), ("site_b", 300, 2),
                                                          ("site_c", 350, 3))}


@pytest.fixture(scope="module")
def fed(tables):
    study = load_study(PROJECT_ROOT / "mappings/studies/readmission_30d.yaml")
    f = Federation.in_process(tables, policy={"min_cell_count": 10}, encrypted=False, study=study)
    yield f
    f.close()


@pytest.fixture(scope="module")
def t1(fed):
    return table_one(fed, COLUMNS)


def test_table_one_layout(t1, tables):
    pooled = pd.concat(tables.values(), ignore_index=True)
    assert list(t1.columns) == ["Overall", "Not readmitted", "Readmitted within 30 days"]
    assert list(t1.index) == [
        "N", "Age (years), mean (SD)", "Female sex, n (%)", "Length of stay (days), median [IQR]",
        "Charlson comorbidity index, median [IQR]", "Creatinine (mg/dL), mean (SD)",
        "Creatinine missing, n (%)"]  # a missing row only for the one variable with missing values
    assert t1.attrs["sub_rows"] == ["Creatinine missing, n (%)"]
    assert t1.loc["N", "Overall"] == str(len(pooled))
    assert t1.loc["N", "Readmitted within 30 days"] == str(int(pooled["label"].sum()))
    assert t1.loc["Age (years), mean (SD)", "Overall"] == f"{pooled['age'].mean():.1f} ({pooled['age'].std():.1f})"
    n_f = int(pooled["sex_female"].sum())
    assert t1.loc["Female sex, n (%)", "Overall"] == f"{n_f} ({100 * n_f / len(pooled):.1f})"
    n_miss = int(pooled["lab_creatinine"].isna().sum())
    assert t1.loc["Creatinine missing, n (%)", "Overall"] == f"{n_miss} ({100 * n_miss / len(pooled):.1f})"


def test_table_one_medians_match_the_pooled_quartiles(t1, tables):
    pooled = pd.concat(tables.values(), ignore_index=True)
    cell = t1.loc["Length of stay (days), median [IQR]", "Overall"]
    med, q1, q3 = map(float, re.fullmatch(r"([\d.]+) \[([\d.]+), ([\d.]+)\]", cell).groups())
    expected = pooled["los_days"].quantile([0.5, 0.25, 0.75]).to_numpy()
    np.testing.assert_allclose([med, q1, q3], expected, atol=0.15)  # histogram resolution + 1 decimal
    # a whole-number score: exact whole-number quartiles (bins centred on whole numbers)
    q = np.quantile(pooled["charlson"], [0.5, 0.25, 0.75], method="inverted_cdf").astype(int)
    assert t1.loc["Charlson comorbidity index, median [IQR]", "Overall"] == f"{q[0]} [{q[1]}, {q[2]}]"
    for label, name in ((0, "Not readmitted"), (1, "Readmitted within 30 days")):
        sub = pooled.loc[pooled["label"] == label, "charlson"]
        q = np.quantile(sub, [0.5, 0.25, 0.75], method="inverted_cdf").astype(int)
        assert t1.loc["Charlson comorbidity index, median [IQR]", name] == f"{q[0]} [{q[1]}, {q[2]}]"
    group = t1.loc["Length of stay (days), median [IQR]", "Readmitted within 30 days"]
    readm = pooled.loc[pooled["label"] == 1, "los_days"].median()
    assert abs(float(group.split(" ")[0]) - readm) < 0.15


def test_cohort_quartiles_agree_with_the_groups(t1):
    """The cohort's median lies between its outcome groups' medians (same bins, same merges)."""
    for row in ("Length of stay (days), median [IQR]", "Charlson comorbidity index, median [IQR]"):
        med = [float(t1.loc[row, c].split(" ")[0]) for c in t1.columns]
        assert min(med[1:]) <= med[0] <= max(med[1:]), (row, med)


def test_table_one_without_a_study_keeps_column_names(tables):
    f = Federation.in_process(tables, policy={"min_cell_count": 10}, encrypted=False)
    t = table_one(f, ["age", "sex_female"])
    f.close()
    assert list(t.index) == ["N", "age, mean (SD)", "sex_female, n (%)"]
    assert list(t.columns) == ["Overall", "label=0", "label=1"]


def test_display_edges_are_round_and_centre_whole_numbers():
    from ehr_fed.stats.describe import display_edges

    np.testing.assert_allclose(display_edges(0, 200, 32), np.arange(0, 201, 10))
    np.testing.assert_allclose(display_edges(0.5, 50, 32), np.arange(0, 51, 2))
    np.testing.assert_allclose(display_edges(0, 20, 32, integer=True), np.arange(-0.5, 21, 1))
    np.testing.assert_allclose(display_edges(0, 0.001, 32, integer=True), [-0.5, 0.5, 1.5])


@pytest.fixture(scope="module")
def report(fed):
    return stats_report.build_report(fed, COLUMNS)


def test_histograms_are_labelled_and_span_the_data(report, tables):
    pooled = pd.concat(tables.values(), ignore_index=True)
    assert set(report["histograms"]) >= {"age", "los_days", "charlson", "lab_creatinine"}
    hist = report["histograms"]["age"]
    left, width, height = stats_report.histogram_bars(hist)
    assert len(left) and np.all(height > 0)
    # every bar holds data: the axis ends where the data do, not at the robust grid's next edge (200 years)
    assert left.min() <= pooled["age"].min() + width.max() and (left + width).max() < 150
    fig = stats_report.histogram_figure("Age (years)", hist, "years")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Age (years)" and ax.get_ylabel() == "index events per bin"
    assert ax.get_xlim()[1] < 150
    # bar areas add up to the released counts (merged groups drawn as one wide bar of the same area)
    bin_w = np.diff(hist["edges"])[0]
    assert (height * width / bin_w).sum() == pytest.approx(sum(hist["counts"]))


def test_html_report_reads_without_help(report, tmp_path):
    text = stats_report.write_html(report, tmp_path / "s.html").read_text()
    assert "<h2>Table 1</h2>" in text and "Readmitted within 30 days" in text and "Creatinine (mg/dL)" in text
    assert "label=0" not in text and "label=1" not in text and "lab_creatinine" not in text
    assert not re.search(r">\d{2,}\.0+<", text)  # no count written as a decimal (1201.0000)
    assert text.count("data:image/png;base64,") == 4  # age, los, charlson, creatinine; no yes/no histogram
    assert text.count("<style>") == 1 and "http" not in text


def test_json_report(report, tmp_path):
    data = json.loads(stats_report.write_json(report, tmp_path / "s.json").read_text())
    assert data["table_one"]["N"]["Overall"] == "1050"
    assert data["names"]["lab_creatinine"] == "Creatinine (mg/dL)" and data["kinds"]["sex_female"] == "binary"

"""The whole ehr-fed pipeline on synthetic hospitals: what ``ehr-fed demo`` (``make demo``) runs.

Steps, each a function so notebooks and tests can run them one by one:

1. :func:`make_federation` - synthetic hospitals as FHIR bulk exports (cached: generated once).
2. :func:`harmonize_sites` - every site's source -> the study's feature table, with what was found
   (index events, positives, quarantined records).
3. :func:`split_tables` - each site keeps 70 % of its patients for training, 30 % for testing.
4. :func:`key_ceremony`, :func:`open_federation` - Paillier keys held by the sites; in-process federation.
5. :func:`federated_statistics` - Table 1 under the disclosure policy.
6. :func:`train_models` - encrypted federated logistic regression and gradient boosting.
7. :func:`evaluate_models` - federated evaluation on the test split (no patient score leaves a site).
8. :func:`reference_models` - local-only and pooled models (scikit-learn / xgboost). The pooled model
   needs every row in one place: the demo computes it only as a reference, because all of its data is
   synthetic and local. A real federation never does this.
9. :func:`comparison_table`, :func:`write_report` - the table printed at the end and the HTML report.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

Echo = Callable[[str], None]

#: the logistic regression's features per shipped study: demographics, utilisation, comorbidity, a few labs
LR_FEATURES = {
    "readmission_30d": ("age", "sex_female", "los_days", "prior_inpatient_365d", "prior_ed_180d", "charlson",
                        "cond_diabetes", "cond_heart_failure", "cond_copd", "cond_ckd", "cond_cancer",
                        "lab_hemoglobin", "lab_sodium", "n_active_meds"),
    # no lab_hba1c: in the synthetic hospitals no HbA1c precedes the index finding (the feature is all missing)
    "t2d_progression": ("age", "sex_female", "prior_inpatient_365d", "charlson", "cond_hypertension",
                        "cond_heart_failure", "cond_ckd", "lab_glucose", "lab_creatinine", "n_active_meds"),
}


@dataclass
class DemoConfig:
    """Sizes and settings of a demo run (defaults: ``make demo``)."""

    n_sites: int = 3
    n_patients: int = 3000
    seed: int = 0
    study: str = "readmission_30d"
    key_bits: int = 2048
    allow_insecure: bool = False  # only for keys below 2048 bits (tests)
    test_fraction: float = 0.3
    penalty: str = "l2"
    C: float = 1.0
    gbdt: dict[str, Any] = field(default_factory=lambda: {
        "n_estimators": 30, "max_depth": 3, "learning_rate": 0.2, "max_bin": 32})
    #: features of the logistic regression (None: :data:`LR_FEATURES` of the study, else all of its features)
    lr_features: list[str] | None = None
    #: PrivacyPolicy overrides (none: the defaults every site ships with)
    policy: dict[str, Any] = field(default_factory=dict)
    cache_dir: Path = Path(".cache")
    out_dir: Path = Path(".cache/demo")
    progress: bool = True


@dataclass
class SiteData:
    """A harmonized site: its feature table and what the pipeline found."""

    table: pd.DataFrame
    summary: dict[str, Any]


# -- 1-3: data -------------------------------------------------------------------------------------------
def make_federation(cfg: DemoConfig, echo: Echo = print) -> Path:
    """Generate (or reuse) ``<cache_dir>/demo-federation``; return its ``federation.yaml``."""
    from ehr_fed.synth import generate_federation
    from ehr_fed.synth.generate import is_generated

    out = Path(cfg.cache_dir) / "demo-federation"
    if is_generated(out, cfg.n_sites, cfg.n_patients, cfg.seed, "fhir", cfg.study):
        echo(f"  reusing {out}")
        return out / "federation.yaml"
    bar = _bar(cfg, total=cfg.n_sites * cfg.n_patients, desc="  patients", unit="pt")
    try:
        path = generate_federation(out, cfg.n_sites, cfg.n_patients, cfg.seed, "fhir", study=cfg.study,
                                   progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    echo(f"  wrote {out}")
    return path


def harmonize_sites(fed_yaml: Path, echo: Echo = print) -> dict[str, SiteData]:
    """Harmonize every site of the federation (cached beside it, keyed by the generator manifest)."""
    import yaml

    from ehr_fed.cohort import harmonize
    from ehr_fed.cohort.table import use_test_secret

    use_test_secret()  # synthetic hospitals: the public test secret for person keys, unless one is set

    base = Path(fed_yaml).parent
    cfg = yaml.safe_load(Path(fed_yaml).read_text())
    study = base / cfg["study"]
    stamp = hashlib.sha256((base / "synth-manifest.json").read_bytes() + study.read_bytes()).hexdigest()[:16]
    cache = base / ".demo-tables"
    sites = {}
    for entry in cfg["sites"]:
        sid = entry["id"]
        table_file, summary_file = cache / f"{sid}-{stamp}.parquet", cache / f"{sid}-{stamp}.json"
        if table_file.exists() and summary_file.exists():
            data = SiteData(pd.read_parquet(table_file), json.loads(summary_file.read_text()))
        else:
            ft = harmonize(entry["source"], base / entry["input"], base / entry["mapping"], study)
            data = SiteData(ft.table, _jsonable_summary(ft.summary))
            cache.mkdir(exist_ok=True)
            data.table.to_parquet(table_file, index=False)
            summary_file.write_text(json.dumps(data.summary, sort_keys=True))
        s = data.summary
        quarantined = sum((s.get("quarantined") or {}).values())
        echo(f"  {sid}: {s.get('index_events')} index events, {s.get('positives')} positives, "
             f"{s.get('persons')} persons, {quarantined} quarantined records {s.get('quarantined') or ''}".rstrip())
        sites[sid] = data
    return sites


def split_tables(tables: dict[str, pd.DataFrame], test_fraction: float = 0.3
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Split every site's table by patient (a hash of ``person_key``): (train, test)."""
    train, test = {}, {}
    for sid, t in tables.items():
        u = t["person_key"].map(lambda k: int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) / 2**32)
        is_test = (u < test_fraction).to_numpy()
        train[sid] = t[~is_test].reset_index(drop=True)
        test[sid] = t[is_test].reset_index(drop=True)
    return train, test


# -- 4-6: federation, statistics, training ------------------------------------------------------------------
def key_ceremony(site_ids: list[str], cfg: DemoConfig) -> dict[str, Any]:
    """Site key material from one Paillier key ceremony (reused by the train and test federations)."""
    from ehr_fed.federation.keys import SiteKeys, run_ceremony

    keys = {sid: SiteKeys.generate(sid) for sid in site_ids}
    run_ceremony(keys, n_length=cfg.key_bits, allow_insecure=cfg.allow_insecure)
    return keys


def open_federation(tables: dict[str, pd.DataFrame], keys: dict[str, Any], study: Any, cfg: DemoConfig):
    """An encrypted in-process federation of ``tables`` using the sites' existing keys."""
    from ehr_fed.federation import Federation
    from ehr_fed.privacy import PrivacyPolicy

    policy = PrivacyPolicy(**cfg.policy) if cfg.policy else None
    return Federation.in_process(tables, policy=policy, encrypted=True, site_keys=keys, study=study)


def federated_statistics(fed) -> pd.DataFrame:
    """The cohort's Table 1, named from the federation's study (suppressed cells say so)."""
    from ehr_fed.stats import table_one

    return table_one(fed)


def model_features(study: Any, cfg: DemoConfig) -> dict[str, list[str]]:
    """The features of each model, in the study's order: ``{"logreg": [...], "gbdt": [...]}`` (boosting: all
    of the study's).

    Raises ValueError naming the features of ``cfg.lr_features`` that the study does not have.
    """
    names = list(study.feature_names)
    if cfg.lr_features is not None:
        unknown = [f for f in cfg.lr_features if f not in names]
        if unknown:
            raise ValueError(f"DemoConfig.lr_features: {unknown} are not features of the study "
                             f"{study.study_id!r}; its features are {names}")
        chosen = set(cfg.lr_features)
    else:
        chosen = set(LR_FEATURES.get(study.study_id, names))
    # in the study's (the tables') column order: the sites score a model on its features in that order
    return {"logreg": [f for f in names if f in chosen], "gbdt": names}


def train_models(fed, cfg: DemoConfig, echo: Echo = print, features: dict[str, list[str]] | None = None
                 ) -> dict[str, Any]:
    """Encrypted federated logistic regression and gradient boosting: ``{"logreg": ..., "gbdt": ...}``.

    ``features["logreg"]`` (from :func:`model_features`) gives the logistic regression's features (default
    ``cfg.lr_features``); boosting uses every feature of the sites' tables."""
    from ehr_fed.models import FederatedLogisticRegression
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    t0 = time.perf_counter()

    def on_round(entry: dict[str, Any]) -> None:
        done = ", converged" if entry.get("converged") else ""
        echo(f"    Newton round {entry['round']:>2}: log-likelihood {entry['loglik']:.4f}, "
             f"largest step {entry['step']:.2g}{done}")

    features = features or {"logreg": cfg.lr_features}
    lr = FederatedLogisticRegression(penalty=cfg.penalty, C=cfg.C, features=features["logreg"])
    lr.fit(fed, callback=on_round)
    echo(f"  logistic regression: {lr.n_iter_} rounds, {time.perf_counter() - t0:.1f} s; "
         f"{len(lr.feature_names_in_)} features, {len(lr.terms_)} terms (with missing-value indicators)")
    t1 = time.perf_counter()
    gb = FederatedGradientBoostingClassifier(**cfg.gbdt).fit(fed, progress=bool(cfg.progress))  # every feature
    echo(f"  gradient boosting: {cfg.gbdt.get('n_estimators')} trees, {time.perf_counter() - t1:.1f} s")
    return {"logreg": lr, "gbdt": gb}


# -- 7-8: evaluation ---------------------------------------------------------------------------------------
def evaluate_models(fed, models: dict[str, Any]) -> dict[str, Any]:
    """Federated evaluation (:func:`ehr_fed.evaluation.evaluate`) of each model on ``fed``."""
    from ehr_fed.evaluation import evaluate

    return {name: evaluate(fed, model) for name, model in models.items()}


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, AUPRC, Brier score and calibration slope of local scores (reference models only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y, p = np.asarray(y), np.clip(np.asarray(p, dtype=float), 1e-12, 1 - 1e-12)
    if y.min() == y.max():
        return {"n": float(len(y)), "auc": np.nan, "auprc": np.nan, "brier": np.nan, "calibration_slope": np.nan}
    logit = np.log(p / (1 - p))[:, None]
    slope = LogisticRegression(C=np.inf).fit(logit, y).coef_[0, 0]
    return {"n": float(len(y)), "auc": roc_auc_score(y, p), "auprc": average_precision_score(y, p),
            "brier": brier_score_loss(y, p), "calibration_slope": float(slope)}


def _sk_logreg(cfg: DemoConfig):
    """The federated logistic regression's specification in scikit-learn: mean imputation with missing
    indicators, then ``LogisticRegression`` on the original scale (the federated ridge penalizes the
    original-scale coefficients, as scikit-learn does without a scaler; a ``StandardScaler`` in front would
    penalize another model). Newton-Cholesky, as the federated Newton rounds."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    lr = LogisticRegression(C=cfg.C if cfg.penalty == "l2" else np.inf, solver="newton-cholesky", tol=1e-10,
                            max_iter=1000)
    return make_pipeline(SimpleImputer(add_indicator=True, keep_empty_features=True), lr)


def _xgb(cfg: DemoConfig):
    from xgboost import XGBClassifier

    g = cfg.gbdt
    return XGBClassifier(n_estimators=g.get("n_estimators", 100), max_depth=g.get("max_depth", 6),
                         learning_rate=g.get("learning_rate", 0.3), max_bin=g.get("max_bin", 256),
                         tree_method="hist", n_jobs=1, random_state=0)


def reference_models(train: dict[str, pd.DataFrame], test: dict[str, pd.DataFrame],
                     features: dict[str, list[str]], cfg: DemoConfig) -> pd.DataFrame:
    """Local-only (each site alone) and pooled models, evaluated on the test split.

    ``features`` maps each model family (``logreg``, ``gbdt``) to the features of the federated model the
    references are compared with (``list(model.feature_names_in_)``): a reference row uses exactly those.
    Returns a DataFrame with columns ``model, trained_on, evaluated_on``, ``features`` (their number) and
    the :func:`metrics`.
    """
    rows = []
    pooled_train, pooled_test = pd.concat(train.values()), pd.concat(test.values())
    for family, make in (("logreg", _sk_logreg), ("gbdt", _xgb)):
        cols = list(features[family])
        model = make(cfg).fit(pooled_train[cols], pooled_train["label"])
        p = model.predict_proba(pooled_test[cols])[:, 1]
        rows.append({"model": family, "trained_on": "pooled (reference)", "evaluated_on": "all sites",
                     "features": len(cols), **metrics(pooled_test["label"], p)})
        for sid in train:
            if train[sid]["label"].nunique() < 2:
                continue
            local = make(cfg).fit(train[sid][cols], train[sid]["label"])
            p = local.predict_proba(test[sid][cols])[:, 1]
            rows.append({"model": family, "trained_on": f"{sid} only", "evaluated_on": sid,
                         "features": len(cols), **metrics(test[sid]["label"], p)})
    return pd.DataFrame(rows)


def comparison_table(evaluations: dict[str, Any], references: pd.DataFrame) -> pd.DataFrame:
    """Federated models (overall and per site) beside the local-only and pooled references."""
    rows = []
    n_features = dict(zip(references["model"], references["features"], strict=False)) \
        if "features" in references else {}
    for family, res in evaluations.items():
        o = res.overall
        rows.append({"model": family, "trained_on": "federated (encrypted)", "evaluated_on": "all sites",
                     "features": n_features.get(family),
                     **{k: o.get(k) for k in ("n", "auc", "auprc", "brier", "calibration_slope")}})
        if res.per_site is not None:
            for sid, r in res.per_site.iterrows():
                rows.append({"model": family, "trained_on": "federated (encrypted)", "evaluated_on": sid,
                             "features": n_features.get(family),
                             **{k: r.get(k) for k in ("n", "auc", "auprc", "brier", "calibration_slope")}})
    table = pd.concat([pd.DataFrame(rows), references], ignore_index=True)
    table["site_order"] = table["evaluated_on"].ne("all sites")
    table = table.sort_values(["site_order", "evaluated_on", "model", "trained_on"], kind="mergesort")
    return table.drop(columns="site_order").set_index(["evaluated_on", "model", "trained_on"])


def format_table(df: pd.DataFrame) -> str:
    """Plain-text rendering with 3 decimals (and integer counts)."""
    shown = df.copy()
    for c in ("n", "features"):
        if c in shown:
            shown[c] = shown[c].map(lambda v: "-" if pd.isna(v) else f"{int(v)}")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 200):
        return shown.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-")


# -- 9: report -------------------------------------------------------------------------------------------
def site_summary(sites: dict[str, SiteData]) -> pd.DataFrame:
    """What harmonization found at each site."""
    rows = {sid: {"index events": d.summary.get("index_events"), "positives": d.summary.get("positives"),
                  "persons": d.summary.get("persons"),
                  "quarantined": sum((d.summary.get("quarantined") or {}).values())}
            for sid, d in sites.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


MODEL_NAMES = {"logreg": "logistic regression", "gbdt": "gradient boosting"}


def comparison_html_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """The comparison as a reader wants it: integer counts, 3-decimal metrics, plain column names."""
    from ehr_fed.stats.page import fmt_int, fmt_num

    rows = []
    for (on, model, trained), r in comparison.iterrows():
        rows.append({"evaluated on": on, "model": MODEL_NAMES.get(model, model), "trained on": trained,
                     "features": fmt_int(r.get("features")), "index events": fmt_int(r.get("n")),
                     "AUC": fmt_num(r.get("auc")), "AUPRC": fmt_num(r.get("auprc")),
                     "Brier": fmt_num(r.get("brier")), "calibration slope": fmt_num(r.get("calibration_slope"), 2)})
    return pd.DataFrame(rows)


def write_evaluation_reports(folder: Path, fed, models: dict[str, Any], evaluations: dict[str, Any],
                             evaluated_on: str | None = None) -> dict[str, Path]:
    """One ``ehr-fed evaluate`` report per model (:mod:`ehr_fed.evaluation.report`), reusing the evaluations,
    with the Table 1 of the evaluated (test) rows."""
    from ehr_fed.evaluation.report import build_report, write_html

    paths = {}
    for name, model in models.items():
        report = build_report(fed, model, result=evaluations[name], local_only=False, table_one=True,
                              evaluated_on=evaluated_on)
        paths[name] = write_html(report, Path(folder) / f"evaluation_{name}.html")
    return paths


def split_description(cfg: DemoConfig) -> str:
    return (f"the test split: the {round(100 * cfg.test_fraction)} % of each site's patients held out from "
            "training (split by patient)")


def write_report(path: Path, *, sites: dict[str, SiteData], table1: pd.DataFrame, models: dict[str, Any],
                 evaluations: dict[str, Any], comparison: pd.DataFrame, cfg: DemoConfig,
                 links: dict[str, Path] | None = None, study: Any = None) -> Path:
    """A self-contained HTML report (figures embedded as PNG), linking the per-model evaluation reports."""
    from ehr_fed.evaluation.report import evaluation_sections, model_sections, model_table
    from ehr_fed.stats import display
    from ehr_fed.stats.page import esc, page, table

    outcome = display.outcome_name(study) if study is not None else "the label"
    parts = [
        f"<h1>ehr-fed demo: {esc(getattr(study, 'description', '') or cfg.study)}</h1>",
        f"<p>{cfg.n_sites} synthetic hospitals, about {cfg.n_patients} patients each, predicting "
        f"{esc(outcome)}. Paillier keys of {cfg.key_bits} bits; models trained on "
        f"{100 - round(100 * cfg.test_fraction)} % of each site's patients and evaluated on the rest. Pooled "
        "models are a reference only the demo can compute (all of its data is synthetic and local).</p>",
        *([("<p>Evaluation reports: " + ", ".join(
            f'<a href="{esc(p.name)}">{esc(MODEL_NAMES.get(n, n))}</a>' for n, p in links.items()) + "</p>")]
          if links else []),
        "<h2>Sites</h2>", table(site_summary(sites), index_label="site"),
        "<h2>Table 1 (federated, training split)</h2>",
        table(table1, index_label="", sub_rows=table1.attrs.get("sub_rows", [])),
        "<p class='note'>n (%) for yes/no variables, mean (SD) for measurements, median [IQR] for counts, "
        "scores and durations; \"suppressed\": fewer rows than the minimum cell count, or a cell that would "
        "reveal one.</p>",
        "<h2>Model comparison (test split)</h2>",
        table(comparison_html_table(comparison), index=False, left=["evaluated on", "model", "trained on"]),
        "<p class='note'>Every row of one model family uses the same features as the federated model it is "
        "compared with (\"features\").</p>",
    ]
    for name, res in evaluations.items():
        model = models.get(name)
        title, mtable = model_table(model)
        parts += [f"<h2>Federated {esc(MODEL_NAMES.get(name, name))}</h2>",
                  *evaluation_sections(res, model, study, level=3),
                  *model_sections(model, title, mtable, study, level=3)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(f"ehr-fed demo: {cfg.study}", parts), encoding="utf-8")
    return path


# -- the whole run ---------------------------------------------------------------------------------------------
@dataclass
class DemoResult:
    sites: dict[str, SiteData]
    table1: pd.DataFrame
    models: dict[str, Any]
    evaluations: dict[str, Any]
    comparison: pd.DataFrame
    report: Path
    timings: dict[str, float]


def run_demo(cfg: DemoConfig | None = None, echo: Echo = print) -> DemoResult:
    """Run every step, print progress with ``echo``; return what was computed."""
    from ehr_fed.mapping import load_study

    cfg = cfg or DemoConfig()
    timings: dict[str, float] = {}
    clock = _Clock(echo, timings)
    with clock("1/6 synthetic hospitals"):
        fed_yaml = make_federation(cfg, echo)
    with clock("2/6 harmonize every site"):
        sites = harmonize_sites(fed_yaml, echo)
    study = load_study(fed_yaml.parent / f"{cfg.study}.yaml")
    train, test = split_tables({s: d.table for s, d in sites.items()}, cfg.test_fraction)
    with clock(f"3/6 key ceremony ({cfg.key_bits}-bit Paillier) and federated statistics"):
        keys = key_ceremony(list(sites), cfg)
        fed, test_fed = open_federation(train, keys, study, cfg), open_federation(test, keys, study, cfg)
        p = fed.policy
        echo(f"  sites hold the private key; privacy policy: min_cell_count={p.min_cell_count}, "
             f"min_sites={p.min_sites}, max_params_fraction={p.max_params_fraction}")
        echo(f"  training split {sum(map(len, train.values()))} index events, "
             f"test split {sum(map(len, test.values()))}")
        table1 = federated_statistics(fed)
        echo(table1.head(12).to_string())
    with clock("4/6 encrypted federated training"):
        features = model_features(study, cfg)
        echo(f"  logistic regression on {len(features['logreg'])} of the study's {len(study.feature_names)} "
             f"features: {', '.join(features['logreg'])}; gradient boosting on all of them")
        models = train_models(fed, cfg, echo, features)
    with clock("5/6 federated evaluation, local-only and pooled references"):
        evaluations = evaluate_models(test_fed, models)
        # each reference row uses exactly the features of the federated model it is compared with
        used = {name: [str(f) for f in m.feature_names_in_] for name, m in models.items()}
        references = reference_models(train, test, used, cfg)
        comparison = comparison_table(evaluations, references)
    with clock("6/6 reports"):
        links = write_evaluation_reports(Path(cfg.out_dir), test_fed, models, evaluations,
                                         evaluated_on=split_description(cfg))
        report = write_report(Path(cfg.out_dir) / "report.html", sites=sites, table1=table1, models=models,
                              evaluations=evaluations, comparison=comparison, cfg=cfg, links=links, study=study)
        echo(format_table(comparison))
        echo(f"  report: {report} (evaluation reports: {', '.join(str(p) for p in links.values())})")
    fed.close()
    test_fed.close()
    return DemoResult(sites, table1, models, evaluations, comparison, report, timings)


class _Clock:
    """``with clock("step"):`` prints the step's name, then its wall time."""

    def __init__(self, echo: Echo, timings: dict[str, float]):
        self.echo, self.timings = echo, timings

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def step():
            self.echo(f"== {name}")
            t0 = time.perf_counter()
            yield
            self.timings[name] = time.perf_counter() - t0
            self.echo(f"   ({self.timings[name]:.1f} s)")

        return step()


def _bar(cfg: DemoConfig, **kwargs):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(**kwargs)


def _jsonable_summary(summary: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(summary, default=lambda v: v.item() if hasattr(v, "item") else str(v)))

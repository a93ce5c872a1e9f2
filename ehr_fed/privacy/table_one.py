"""A differentially private Table 1: counts, means and standard deviations with the noise beside each figure.

The private form of ``stats.moments`` (one release, group ``stats``): per label group and feature, each site
releases its number of rows and of observed values and the sums ``sum round(Q u)`` and ``sum round(Q u^2)``
of every value clipped to its public range ``[lo, hi]`` (``u = (x - c) / r``, ``c`` the centre and ``r`` the
half-width of the range), each plus its Skellam noise share. One patient moves the row count by 1 and each
feature's count and sums by at most 1 and ``Q``. :func:`private_table_one` is the coordinator's side: it
reports each figure with the standard deviation that the noise leaves on it and a 95 % interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ehr_fed.privacy.dp import (
    OutputSensitivity,
    Release,
    ReleasePlan,
    calibrate,
    dp_task,
    field_width,
    noise_room,
    spent_record,
)

#: per-row integer range of a quantised, clipped value
QUANTUM = 1 << 10
#: public bound of a pooled row count, from which the integer fields are sized
ROW_BOUND = 1e9
ZERO_OUTPUTS = ("n_ones", "n_zeros")


def _sens(params: dict) -> list[OutputSensitivity]:
    d, q = len(params["columns"]), float(params["dp_clip"]["quantum"])
    rd = math.sqrt(d)
    return [OutputSensitivity("n_rows", 1, 1, 0.5), OutputSensitivity("n", d, rd, 1.0),
            OutputSensitivity("sum", d * q, rd * q, 2.0), OutputSensitivity("sumsq", d * q, rd * q, 1.5)]


def private_moments(table: pd.DataFrame, params: dict, ctx: Any, rel: Release) -> dict[str, np.ndarray]:
    """Site side: the noised, clipped, quantised moments of ``params['columns']`` (module docstring)."""
    cols = list(params["columns"])
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"the feature table has no columns {missing}")
    x = table[cols].to_numpy(dtype=np.float64, na_value=np.nan)
    bounds = np.asarray(params["dp_clip"]["feature_bounds"], dtype=np.float64)
    q = float(params["dp_clip"]["quantum"])
    c, r = bounds.mean(axis=1), (bounds[:, 1] - bounds[:, 0]) / 2.0
    if params.get("by") == "label":
        lab = table["label"].to_numpy()
        groups = [lab == 0, lab == 1]
    else:
        groups = [np.ones(len(table), dtype=bool)]
    d = len(cols)
    out: dict[str, list] = {k: [] for k in ("n", "sum", "sumsq", "n_rows", "n_missing", *ZERO_OUTPUTS)}
    for mask in groups:
        xs = x[mask]
        ok = ~np.isnan(xs)
        u = np.where(ok, (np.clip(xs, bounds[:, 0], bounds[:, 1]) - c) / r, 0.0)
        n_rows = int(mask.sum()) + int(rel.noise("n_rows", 1)[0])
        n = ok.sum(axis=0).astype(np.int64) + rel.noise("n", d)
        out["n_rows"].append(np.full(d, n_rows, dtype=np.int64))  # one noised count, repeated per column
        out["n"].append(n)
        # n_missing is not released (0): the reader takes rows - n, and a noisy small difference would only
        # trigger small-cell suppression of the counts it depends on
        out["n_missing"].append(np.zeros(d, dtype=np.int64))
        out["sum"].append(np.rint(u * q).astype(np.int64).sum(axis=0) + rel.noise("sum", d))
        out["sumsq"].append(np.rint(u * u * q).astype(np.int64).sum(axis=0) + rel.noise("sumsq", d))
        for k in ZERO_OUTPUTS:
            out[k].append(np.zeros(d, dtype=np.int64))
    return {k: np.array(v, dtype=np.int64).reshape(-1, d) for k, v in out.items()}


dp_task("stats.moments", "stats", _sens, private_moments)


def _layout(params: dict, noise: dict, n_groups: int, n_sites: int) -> dict[str, dict]:
    d, q = len(params["columns"]), float(params["dp_clip"]["quantum"])
    bound = {"n_rows": ROW_BOUND, "n": ROW_BOUND, "sum": ROW_BOUND * q, "sumsq": ROW_BOUND * q}
    widths = {k: field_width(b + noise_room(noise[k])) for k, b in bound.items()}
    widths.update({k: 2 for k in (*ZERO_OUTPUTS, "n_missing")})
    return {k: {"widths": [[n_groups * d, [w]]], "max_terms": int(n_sites)} for k, w in widths.items()}


def private_table_one(fed: Any, columns: Sequence[str], dp: Any, *, by: str | None = "label",
                      feature_bounds: dict[str, Sequence[float]] | None = None, study: Any = None) -> pd.DataFrame:
    """Table 1 under differential privacy: one private release of ``stats.moments``.

    Returns one row per (feature, group) with ``n`` (observed values), ``mean``, ``sd`` and, beside each,
    the standard deviation the noise leaves on it (``n_noise_sd``, ``mean_noise_sd``) and the 95 % half-width
    of the mean's noise (``mean_noise_ci95``); ``rows`` is the noisy group size. ``df.attrs["dp"]`` is the
    record of what was spent. ``feature_bounds`` are the public clipping ranges (defaults from the study's
    feature kinds, as for private logistic regression).
    """
    from ehr_fed.privacy.bounds import default_feature_bounds
    from ehr_fed.privacy.dp import DPConfig

    cfg = DPConfig.parse(dp)
    if cfg is None or not cfg.enabled:
        raise ValueError("private_table_one needs a finite epsilon (dp={'epsilon': ...})")
    cols = list(columns)
    study = study if study is not None else getattr(fed, "study", None)
    bounds = default_feature_bounds(study, cols, feature_bounds)
    plan = ReleasePlan(**cfg.model_dump(), releases={"stats": 1})
    params = {"columns": cols, "by": by, "dp": plan.to_params(),
              "dp_clip": {"feature_bounds": bounds, "quantum": QUANTUM}}
    noise = calibrate(plan, "stats", _sens(params), "stats.moments")
    n_groups = 2 if by == "label" else 1
    raw = fed.secure_sum("stats.moments", params, _layout(params, noise, n_groups, len(fed.site_ids)))
    s = {k: np.asarray(v, dtype=float).reshape(n_groups, len(cols)) for k, v in raw.items()}
    b = np.asarray(bounds)
    c, r = b.mean(axis=1), (b[:, 1] - b[:, 0]) / 2.0
    sig_n, sig_s, sig_q = noise["n"].sigma, noise["sum"].sigma, noise["sumsq"].sigma
    rows = []
    for g in range(n_groups):
        n = np.maximum(s["n"][g], 1.0)
        dev = r * s["sum"][g] / QUANTUM / n  # mean - c
        mean = c + dev
        m2 = r * r * s["sumsq"][g] / QUANTUM / n
        sd = np.sqrt(np.maximum(m2 - dev * dev, 0.0))
        mean_noise = np.sqrt((r * sig_s / QUANTUM) ** 2 + (dev * sig_n) ** 2) / n
        var_noise = np.sqrt((r * r * sig_q / QUANTUM) ** 2 + (2 * dev * r * sig_s / QUANTUM) ** 2) / n
        # delta method sd(sqrt(V)) = sd(V) / (2 sqrt(V)); near 0 the noise of V itself bounds the sd's noise
        sd_noise = np.where(sd * sd > var_noise, var_noise / (2 * np.maximum(sd, 1e-300)), np.sqrt(var_noise))
        for j, name in enumerate(cols):
            rows.append({"feature": name, "group": (f"label={g}" if by == "label" else "all"),
                         "rows": float(s["n_rows"][g, j]), "n": float(s["n"][g, j]), "n_noise_sd": sig_n,
                         "mean": float(mean[j]), "mean_noise_sd": float(mean_noise[j]),
                         "mean_noise_ci95": float(1.96 * mean_noise[j]), "sd": float(sd[j]),
                         "sd_noise_sd": float(sd_noise[j]), "clip_range": list(bounds[j])})
    df = pd.DataFrame(rows).set_index(["feature", "group"])
    rec = {"task": "stats.moments", "rho": sum(o.rho for o in noise.values()),
           "xi": sum(o.xi for o in noise.values())}
    df.attrs["dp"] = spent_record(plan, [rec], quantum=QUANTUM,
                                  feature_bounds=dict(zip(cols, bounds, strict=True)))
    return df

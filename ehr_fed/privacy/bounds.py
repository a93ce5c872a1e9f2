"""Public clipping ranges of study features for private releases (canonical units).

A private release clips every raw value to a public range before summing, so that one patient moves a sum
by at most the range's half-width. The defaults follow the study spec's feature kinds (and labs); a study
whose features are not listed, or an analyst who knows better, gives ``feature_bounds`` explicitly.
"""

from __future__ import annotations

import math
from typing import Any

#: plausible ranges of the study feature kinds (canonical units) used to clip private preprocessing sums
KIND_BOUNDS = {
    "age": (0.0, 110.0), "sex_female": (0.0, 1.0), "length_of_stay": (0.0, 60.0), "prior_visits": (0.0, 20.0),
    "charlson": (0.0, 24.0), "condition_flag": (0.0, 1.0), "active_medications": (0.0, 40.0), "lace": (0.0, 19.0),
}
LAB_BOUNDS = {
    "creatinine": (0.0, 15.0), "hemoglobin": (3.0, 22.0), "sodium": (100.0, 180.0), "glucose": (20.0, 800.0),
    "hba1c": (3.0, 20.0), "egfr": (0.0, 200.0),
}


def default_feature_bounds(study: Any, names: list[str], overrides: dict | None = None) -> list[list[float]]:
    """Clipping range of every feature: ``overrides``, else the study spec's kind / lab default."""
    overrides = dict(overrides or {})
    feats = {}
    for f in getattr(study, "features", None) or []:
        feats[getattr(f, "name", None)] = f
    out, missing = [], []
    for n in names:
        if n in overrides:
            lo, hi = (float(v) for v in overrides[n])
        else:
            f = feats.get(n)
            kind = getattr(f, "kind", None)
            b = LAB_BOUNDS.get(getattr(f, "lab", "")) if kind == "last_lab" else KIND_BOUNDS.get(kind)
            if b is None:
                missing.append(n)
                continue
            lo, hi = b
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"dp feature_bounds of {n!r} must be finite with hi > lo, got [{lo}, {hi}]")
        out.append([lo, hi])
    if missing:
        raise ValueError(f"no clipping range is known for features {missing}; give them in "
                         "dp={'feature_bounds': {name: [lo, hi], ...}} (public ranges in canonical units)")
    return out

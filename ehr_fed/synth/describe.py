"""The data-generating process as data (for notebooks, reports and tests)."""

from __future__ import annotations

from dataclasses import asdict

from ehr_fed.synth import model
from ehr_fed.synth.patients import PERIOD_END, PERIOD_START, T2D_HORIZON_YEARS
from ehr_fed.synth.profiles import default_profiles


def describe(n_sites: int = 3) -> dict:
    """The synthetic federation's data-generating process.

    Returns
    -------
    dict
        ``period`` (UTC seconds), ``models`` (the readmission and T2D formulas and the features
        they read), ``lab_reference`` (values taken for missing labs), ``t2d_horizon_years`` and
        ``sites``: for each site id its profile (archetype, coding, case mix, ``risk_shift``,
        ``t2d_shift``, ...).
    """
    doc = model.__doc__ or ""
    return {
        "period": {"start": PERIOD_START, "end": PERIOD_END},
        "models": {
            "readmission_30d": {"features": list(model.READMISSION_FEATURES),
                                "formula": doc.split("Readmission")[1].split("T2D progression")[0].strip()},
            "t2d_progression": {"features": list(model.T2D_FEATURES),
                                "formula": doc.split("T2D progression")[1].strip()},
        },
        "lab_reference": dict(model.LAB_REFERENCE),
        "t2d_horizon_years": T2D_HORIZON_YEARS,
        "sites": {p.site_id: asdict(p) for p in default_profiles(n_sites)},
    }

"""Simulate one patient's history at one synthetic hospital (format-free).

A :class:`Patient` holds visits, diagnoses, lab results, drug orders and procedures with
times in integer seconds since 1970 (UTC). The writers turn it into FHIR resources and OMOP
rows; :func:`simulate_patient` is deterministic given its ``random.Random``.

The steps (see :mod:`ehr_fed.synth` for the whole process):

1. Demographics, a latent frailty, chronic conditions (prevalent at entry or incident later),
   glycaemic status (normal, prediabetic, diabetic) and baseline lab values.
2. Outpatient visits (with labs, diagnoses and chronic drug renewals) and ED visits.
3. T2D progression: at the first prediabetes finding the true risk is computed and the
   progression (T2D diagnosis and HbA1c >= 6.5 %) is drawn within the horizon or not at all.
4. Inpatient stays, sequentially: at each discharge the true 30-day readmission risk is
   computed from the state at discharge and the next admission drawn within 30 days with that
   probability, else more than 30 days later (or never); deaths only after follow-up.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

from ehr_fed.synth.codes import ACUTE, CHRONIC, CHRONIC_DRUG, CONDITIONS, DISCHARGE_DRUGS
from ehr_fed.synth.model import readmission_risk, t2d_risk
from ehr_fed.synth.profiles import SiteProfile
from ehr_fed.synth.sitecodes import lab_value

DAY = 86_400
HOUR = 3_600
YEAR = 365.25 * DAY
#: the simulated calendar: 2018-01-01 to 2024-01-01 (UTC)
PERIOD_START = 1_514_764_800
PERIOD_END = 1_704_067_200
#: T2D progression horizon of the t2d_progression study
T2D_HORIZON_YEARS = 3.0

# chronic condition base logits at age 65 and slope per decade of age
_PREVALENCE = {
    "diabetes": (-1.7, 0.15), "heart_failure": (-3.0, 0.45), "copd": (-2.6, 0.25), "ckd": (-2.9, 0.40),
    "hypertension": (-0.5, 0.40), "cancer": (-3.0, 0.30), "mi": (-3.3, 0.30), "stroke": (-3.4, 0.40),
    "dementia": (-4.0, 0.85),
}


@dataclass(slots=True)
class Visit:
    kind: str            # "IP", "ED", "OP"
    start: int
    end: int
    emergency: bool = False
    reason: str | None = None
    index: int = -1      # position after sorting


@dataclass(slots=True)
class Patient:
    """One simulated patient (see the module docstring); times are UTC seconds."""

    key: str                       # Patient.id / person_source_value
    female: bool
    birth: int                     # midnight UTC of the birth date
    death: int | None = None
    visits: list[Visit] = field(default_factory=list)
    conditions: list[tuple] = field(default_factory=list)   # (key, onset, visit)
    labs: list[tuple] = field(default_factory=list)         # (lab, time, visit, canonical, site value)
    drugs: list[tuple] = field(default_factory=list)        # (drug, start, end, visit)
    procedures: list[tuple] = field(default_factory=list)   # (procedure, time, visit)
    truth: list[dict] = field(default_factory=list)         # one per index event
    race: str = "white"            # codes.RACES key
    ethnicity: str = "not_hispanic"  # codes.ETHNICITIES key

    def finish(self) -> None:
        """Sort visits by start and give them their final positions."""
        self.visits.sort(key=lambda v: (v.start, v.kind))
        for i, v in enumerate(self.visits):
            v.index = i


def _sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _egfr(creat: float, age: float, female: bool) -> float:
    """CKD-EPI 2021 creatinine equation (mL/min/1.73 m2)."""
    k, a = (0.7, -0.241) if female else (0.9, -0.302)
    r = creat / k
    return 142.0 * min(r, 1.0) ** a * max(r, 1.0) ** -1.2 * 0.9938 ** age * (1.012 if female else 1.0)


class _State:
    """The latent state of a patient while simulating."""

    def __init__(self, rng: random.Random, profile: SiteProfile):
        self.rng = rng
        self.profile = profile
        self.onset: dict[str, int] = {}          # chronic condition -> onset time
        self.glycemia = "normal"
        self.a1c = 5.2
        self.progression: int | None = None      # time of T2D diagnosis (prediabetics)


def _age_at(p: Patient, t: int) -> float:
    return (t - p.birth) / YEAR


def _completed_years(p: Patient, t: int) -> float:
    """Age as the cohort stage computes it: floor(calendar days since birth / 365.25)."""
    return float(math.floor((t // DAY - p.birth // DAY) / 365.25))


def _has(st: _State, key: str, t: int) -> bool:
    onset = st.onset.get(key)
    return onset is not None and onset <= t


def _charlson(st: _State, t: int) -> int:
    return sum(CONDITIONS[c].charlson for c in CHRONIC if _has(st, c, t))


def simulate_patient(rng: random.Random, profile: SiteProfile, key: str) -> Patient:
    """Simulate one patient of ``profile`` (see the module docstring)."""
    st = _State(rng, profile)
    female = rng.random() < 0.52
    if rng.random() < 0.72:
        age0 = min(100.0, max(18.0, rng.gauss(67.0 + profile.age_shift, 13.0)))
    else:
        age0 = rng.uniform(18.0, 65.0)
    birth = PERIOD_START - int(age0 * YEAR)
    birth -= birth % DAY
    p = Patient(key=key, female=female, birth=birth)
    p.race, p.ethnicity = _race_ethnicity(key)
    frailty = rng.gauss(0.0, 1.0)
    st.frailty = frailty
    _chronic_conditions(p, st, age0)
    _baseline_labs(p, st, age0)
    entry = PERIOD_START + int(rng.uniform(0, 60) * DAY) + int(rng.uniform(8, 17) * HOUR)
    _outpatient_history(p, st, entry)
    _ed_visits(p, st, entry)
    _stays(p, st, entry)
    p.finish()
    return p


def _race_ethnicity(key: str) -> tuple[str, str]:
    """Race (78 % white) and ethnicity (12 % Hispanic) from the patient id, not the random stream.

    They enter no outcome model; deriving them from the id keeps every other draw unchanged.
    """
    h = hashlib.sha256(key.encode("ascii")).digest()
    return ("white" if h[0] < 200 else "black"), ("hispanic" if h[1] < 31 else "not_hispanic")


def _chronic_conditions(p: Patient, st: _State, age0: float) -> None:
    rng, prof = st.rng, st.profile
    odds = math.log(prof.comorbidity) + 0.5 * st.frailty
    for c in CHRONIC:
        a, b = _PREVALENCE[c]
        z = a + b * (age0 - 65) / 10 + odds
        if c == "ckd":
            z += 0.8 * ("diabetes" in st.onset) + 0.5 * ("hypertension" in st.onset)
        if c == "heart_failure":
            z += 0.6 * ("hypertension" in st.onset) + 0.9 * ("mi" in st.onset)
        prob = _sig(z)
        u = rng.random()
        if u < prob:
            st.onset[c] = PERIOD_START - int(rng.uniform(0.5, 12.0) * YEAR)
        elif c != "diabetes" and u < prob * 1.3:
            st.onset[c] = PERIOD_START + int(rng.uniform(0.2, 5.5) * YEAR)
    if "diabetes" in st.onset:
        st.glycemia = "diabetic"
        st.a1c = min(12.5, 6.6 + rng.expovariate(1 / 1.1))
    elif rng.random() < _sig(-1.3 + 0.025 * (age0 - 55) + 0.4 * ("hypertension" in st.onset)):
        st.glycemia = "prediabetic"
        st.a1c = rng.uniform(5.7, 6.35)
    else:
        st.a1c = rng.uniform(4.6, 5.5)


def _baseline_labs(p: Patient, st: _State, age0: float) -> None:
    rng = st.rng
    ckd = "ckd" in st.onset
    st.creat = (0.75 if p.female else 0.95) * math.exp(rng.gauss(0, 0.15)) * (2.0 if ckd else 1.0)
    st.hgb = (13.3 if p.female else 14.8) - 1.3 * ckd - 1.0 * ("cancer" in st.onset) + rng.gauss(0, 0.9)
    st.na = 140.0 - 2.0 * ("heart_failure" in st.onset) + rng.gauss(0, 2.0)
    if st.glycemia == "diabetic":
        st.glu = 130 + 22 * (st.a1c - 7)
    else:
        st.glu = 90 + 9 * (st.glycemia == "prediabetic")
    st.glu += rng.gauss(0, 8)


def _lab_value(st: _State, lab: str, t: int, p: Patient, acute: bool) -> float:
    rng = st.rng
    diabetic = st.glycemia == "diabetic" or (st.progression is not None and t >= st.progression)
    if lab == "hba1c":
        if diabetic:
            v = max(6.5, st.a1c if st.glycemia == "diabetic" else rng.uniform(6.5, 7.8))
            v += abs(rng.gauss(0, 0.3))
        elif st.glycemia == "prediabetic":
            v = min(6.4, max(5.7, st.a1c + rng.gauss(0, 0.12)))
        else:
            v = min(5.6, st.a1c + rng.gauss(0, 0.15))
        return round(v, 1)
    if lab in ("creatinine", "egfr"):
        c = st.creat * math.exp(rng.gauss(0.15, 0.2) if acute else rng.gauss(0, 0.08))
        if lab == "creatinine":
            return round(c, 2)
        return float(round(_egfr(c, _age_at(p, t), p.female)))
    if lab == "hemoglobin":
        return round(st.hgb + (rng.gauss(-0.6, 1.1) if acute else rng.gauss(0, 0.4)), 1)
    if lab == "sodium":
        return float(round(st.na + (rng.gauss(-1.0, 3.5) if acute else rng.gauss(0, 1.5))))
    if lab == "glucose":
        g = st.glu + (30 if diabetic and st.glycemia != "diabetic" else 0)
        return float(round(max(55.0, g + (rng.gauss(15, 25) if acute else rng.gauss(0, 10)))))
    raise KeyError(lab)


def _add_lab(p: Patient, st: _State, lab: str, t: int, visit: Visit, acute: bool) -> float:
    site_value, canonical = lab_value(st.profile, lab, _lab_value(st, lab, t, p, acute))
    p.labs.append((lab, t, visit, canonical, site_value))
    return canonical


def _visit_drugs(p: Patient, st: _State, visit: Visit, t: int, days: float) -> None:
    seen = set()
    for c in CHRONIC:
        drug = CHRONIC_DRUG.get(c)
        if drug and drug not in seen and _has(st, c, t):
            seen.add(drug)
            p.drugs.append((drug, t, t + int(days * DAY), visit))
    if st.progression is not None and t >= st.progression and "metformin" not in seen:
        p.drugs.append(("metformin", t, t + int(days * DAY), visit))


def _outpatient_history(p: Patient, st: _State, entry: int) -> None:
    """Outpatient visits, the first prediabetes finding and the T2D progression draw.

    Visits come at random (about two a year) and on the onset date of every incident
    condition, which is diagnosed at that visit (so a condition's record carries its onset).
    """
    rng = st.rng
    rate = 1.0 * (1.0 + 0.15 * len(st.onset))
    pending = sorted((onset, c) for c, onset in st.onset.items() if onset > entry)
    t = entry
    first = True
    finding_done = st.glycemia != "prediabetic"
    while True:
        diagnoses = [c for onset, c in pending if onset == t]
        if not diagnoses and t >= PERIOD_END:
            break
        v = Visit("OP", t, t + int(rng.uniform(0.25, 1.0) * HOUR))
        p.visits.append(v)
        if first:
            for c, onset in st.onset.items():
                if onset <= t:
                    p.conditions.append((c, onset, v))
        for c in diagnoses:
            p.conditions.append((c, t, v))
        lab_t = t + 600
        if "diabetes" in diagnoses and st.glycemia == "prediabetic":
            _add_lab(p, st, "hba1c", lab_t, v, False)
            measured = False
        else:
            a1c_p = {"diabetic": 0.8, "prediabetic": 0.65, "normal": 0.1}[st.glycemia]
            measured = rng.random() < a1c_p
            if measured:
                _add_lab(p, st, "hba1c", lab_t, v, False)
        if rng.random() < 0.5:
            _add_lab(p, st, "glucose", lab_t, v, False)
        if rng.random() < 0.4:
            _add_lab(p, st, "creatinine", lab_t, v, False)
            _add_lab(p, st, "egfr", lab_t, v, False)
        if not finding_done:
            coded = rng.random() < st.profile.prediabetes_dx
            if measured or coded:
                if coded:
                    p.conditions.append(("prediabetes", lab_t, v))
                _t2d_index(p, st, lab_t, v)
                finding_done = True
                if st.progression is not None:
                    pending.append((st.progression, "diabetes"))
                    pending.sort()
        if first or rng.random() < 0.4:
            _visit_drugs(p, st, v, t, 365)
        first = False
        nxt = t + int(rng.expovariate(rate / YEAR)) + DAY
        upcoming = [onset for onset, _ in pending if onset > t]
        if upcoming and (upcoming[0] <= nxt or nxt >= PERIOD_END):
            nxt = upcoming[0]
        elif nxt >= PERIOD_END:
            break
        t = nxt


def _t2d_index(p: Patient, st: _State, t: int, visit: Visit) -> None:
    """At the first prediabetes finding: true risk, then draw the progression."""
    rng = st.rng
    # the features look strictly before the index; the finding's own HbA1c is not among them,
    # so the model reads the patient's latent HbA1c level (truth.parquet: latent_hba1c)
    feats = {
        "age": _completed_years(p, t), "sex_female": float(p.female), "latent_hba1c": st.a1c,
        "cond_hypertension": float(_has(st, "hypertension", t)), "charlson": float(_charlson(st, t)),
    }
    shift = st.profile.t2d_shift
    risk = float(t2d_risk(feats, shift))
    label = rng.random() < risk
    if label:
        st.progression = t + int(rng.uniform(0.15, T2D_HORIZON_YEARS - 0.2) * YEAR)
        st.onset["diabetes"] = st.progression
    p.truth.append({"study": "t2d_progression", "index_time": t, "risk": risk, "label": int(label),
                    "censored": False, "site_shift": shift, **feats})


def _ed_visits(p: Patient, st: _State, entry: int) -> None:
    rng = st.rng
    rate = 0.15 * math.exp(0.5 * st.frailty + 0.12 * len(st.onset))
    t = entry + int(rng.expovariate(rate / YEAR))
    while t < PERIOD_END:
        v = Visit("ED", t, t + int(rng.uniform(2, 8) * HOUR), reason=rng.choice(ACUTE))
        p.visits.append(v)
        p.conditions.append((v.reason, t, v))
        if rng.random() < 0.5:
            for lab in ("creatinine", "sodium", "hemoglobin", "glucose"):
                _add_lab(p, st, lab, t + HOUR, v, True)
        t = v.end + int(rng.expovariate(rate / YEAR)) + DAY


def _admission_rate(p: Patient, st: _State, t: int) -> float:
    n = sum(1 for c in CHRONIC if _has(st, c, t))
    age = _age_at(p, t)
    return 0.035 * st.profile.admission_rate * math.exp(0.6 * st.frailty + 0.2 * n + 0.02 * (age - 65))


def _stays(p: Patient, st: _State, entry: int) -> None:
    rng = st.rng
    t = entry + int(rng.expovariate(_admission_rate(p, st, entry) / YEAR)) + DAY
    readmission = False
    while t < PERIOD_END or readmission:
        stay = _one_stay(p, st, t)
        risk, feats = _discharge_state(p, st, stay)
        # a stay starting after the end of the period ends the history: censored, label 0
        censored = stay.start >= PERIOD_END
        readmission = not censored and rng.random() < risk
        shift = st.profile.risk_shift
        p.truth.append({"study": "readmission_30d", "index_time": stay.end, "risk": risk,
                        "label": int(readmission), "censored": censored, "site_shift": shift, **feats})
        if censored:
            return
        if readmission:
            t = stay.end + int(rng.uniform(0.5, 29.5) * DAY)
            continue
        gap = rng.expovariate(_admission_rate(p, st, stay.end) / YEAR)
        t = stay.end + int((31 + rng.uniform(0, 30)) * DAY + gap)
        age = _age_at(p, stay.end)
        if rng.random() < _sig(-4.2 + 0.06 * (age - 65) + 0.5 * st.frailty):
            death = stay.end + int(rng.uniform(35, 365) * DAY)
            if death < t and (st.progression is None or death > st.progression):
                p.death = death - death % 60
                _truncate_after_death(p)
                return


def _truncate_after_death(p: Patient) -> None:
    d = p.death
    p.visits = [v for v in p.visits if v.end < d]
    keep = {id(v) for v in p.visits}
    p.conditions = [c for c in p.conditions if id(c[2]) in keep]
    p.labs = [x for x in p.labs if id(x[2]) in keep]
    p.drugs = [x for x in p.drugs if id(x[3]) in keep]
    p.procedures = [x for x in p.procedures if id(x[2]) in keep]
    p.truth = [x for x in p.truth if x["index_time"] < d]


def _one_stay(p: Patient, st: _State, t: int) -> Visit:
    rng, prof = st.rng, st.profile
    n = sum(1 for c in CHRONIC if _has(st, c, t))
    age = _age_at(p, t)
    median = 3.2 * prof.los_factor * math.exp(0.08 * n + 0.01 * (age - 65))
    los = max(0.3, median * math.exp(rng.gauss(0, 0.6)))
    emergency = rng.random() < 0.7
    if emergency:
        ed_start = t - int(rng.uniform(2, 8) * HOUR)
        reason = rng.choice(ACUTE)
        ed = Visit("ED", ed_start, t, reason=reason)
        p.visits.append(ed)
        p.conditions.append((reason, ed_start, ed))
    else:
        reason = rng.choice(ACUTE)
    if n and rng.random() < 0.35:
        reason = rng.choice([c for c in CHRONIC if _has(st, c, t)])
    stay = Visit("IP", t, t + int(los * DAY), emergency=emergency, reason=reason)
    p.visits.append(stay)
    p.conditions.append((reason, t, stay))
    for c in CHRONIC:
        if _has(st, c, t) and c != reason:
            p.conditions.append((c, t, stay))
    panel_t = t + int(rng.uniform(1, 4) * HOUR)
    for lab in ("creatinine", "egfr", "hemoglobin", "sodium", "glucose"):
        if rng.random() >= prof.missing_lab:
            _add_lab(p, st, lab, panel_t, stay, True)
    if st.glycemia == "diabetic" and rng.random() < 0.5:
        _add_lab(p, st, "hba1c", panel_t, stay, True)
    if los > 1.5 and rng.random() < 0.6:
        late = stay.end - int(rng.uniform(4, 12) * HOUR)
        _add_lab(p, st, "creatinine", late, stay, False)
        _add_lab(p, st, "sodium", late, stay, False)
    for proc in rng.sample(("chest_xray", "ecg", "ct_head", "echo"), k=rng.randint(0, 2)):
        p.procedures.append((proc, min(t + int(rng.uniform(2, 20) * HOUR), stay.end - 60), stay))
    if _has(st, "ckd", t) and rng.random() < 0.2:
        p.procedures.append(("dialysis", t + 6 * HOUR, stay))
    _visit_drugs(p, st, stay, stay.end - HOUR, 90)
    for drug in rng.sample(DISCHARGE_DRUGS, k=rng.randint(0, 2)):
        p.drugs.append((drug, stay.end - HOUR, stay.end + int(rng.uniform(5, 30) * DAY), stay))
    return stay


def _discharge_state(p: Patient, st: _State, stay: Visit) -> tuple[float, dict]:
    """The study features at discharge (as the cohort stage computes them) and the true risk."""
    t, a = stay.end, stay.start
    prior_ip = sum(1 for v in p.visits if v.kind == "IP" and a - 365 * DAY <= v.start < a)
    prior_ed = sum(1 for v in p.visits if v.kind == "ED" and a - 180 * DAY <= v.start < a)
    last: dict[str, tuple[int, float]] = {}
    for lab, lt, v, val, _ in p.labs:
        known = lt < t or (v is stay and lt <= t)
        if known and lt >= t - 365 * DAY and (lab not in last or lt >= last[lab][0]):
            last[lab] = (lt, val)
    n_meds = len({d for d, s, e, _ in p.drugs if s < t and e >= t})
    feats = {
        "age": _completed_years(p, t), "sex_female": float(p.female), "los_days": (stay.end - stay.start) / DAY,
        "prior_inpatient_365d": float(prior_ip), "prior_ed_180d": float(prior_ed),
        "charlson": float(_charlson(st, t)),
    }
    for c in ("diabetes", "heart_failure", "copd", "ckd", "hypertension", "cancer"):
        feats[f"cond_{c}"] = float(_has(st, c, t))
    for lab in ("creatinine", "hemoglobin", "sodium", "glucose", "hba1c", "egfr"):
        feats[f"lab_{lab}"] = last[lab][1] if lab in last else math.nan
    feats["n_active_meds"] = float(n_meds)
    return float(readmission_risk(feats, st.profile.risk_shift)), feats

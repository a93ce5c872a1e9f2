"""Differentially private forms of the logistic-regression site tasks (see :mod:`ehr_fed.privacy.dp`).

With a private release active, every output is an exact integer field holding the site's clipped,
quantised sum plus its Skellam noise share. The bounds that make the sensitivity hold are enforced here,
at the site, from the request's public ``dp_clip`` parameters:

``models.row_count``       ``n``: one row counts 1.
``models.preprocess_sums`` each feature ``x_j`` is clipped to its declared range ``[lo_j, hi_j]``; with
                           ``c_j`` its centre and ``r_j`` its half-width, the site sums ``round(Q (x - c) / r)``
                           and ``round(Q ((x - c) / r)^2)`` (``Q`` = ``dp_clip["quantum"]``, one row moves
                           each by at most ``Q``) and counts ``n``, ``n_pos`` and ``n_obs`` (1 per row).
``logreg.newton``          each standardized design row ``z`` (intercept included) is clipped to L2 norm
                           ``C`` (``z <- z min(1, C / |z|)``); gradient ``sum z (y - p)`` (one row: L2 <= C)
                           and Hessian triangle ``sum p (1 - p) z z'``, its off-diagonal entries times
                           ``sqrt(2)`` (:func:`pack_information`: the triangle's L2 norm is then the matrix's
                           Frobenius norm, one row: ``p (1 - p) |z|^2 <= C^2 / 4``), are scaled by
                           ``scale_g`` / ``scale_h`` and rounded once per site; rounding adds at most 1 per
                           coordinate, so the integer sensitivities are ``scale_g C + sqrt(d)`` and
                           ``scale_h C^2 / 4 + sqrt(T)`` (L2), ``sqrt(d)`` / ``sqrt(T)`` times the first term
                           plus ``d`` / ``T`` (L1). The log-likelihood (for the record only) sums row terms
                           clipped to ``[-LOGLIK_CLIP, 0]``. A round at or after
                           ``dp_clip["information_rounds"]`` releases no Hessian triangle (and puts the
                           gradient's share of the round on the gradient alone); ``information_clip_norm``,
                           when set, clips the rows of the Hessian term tighter (``C_h^2 / 4`` in its bound).

The rounds are exact Newton steps of the logistic regression on the clipped rows (the linear predictor
uses the clipped row ``c_i z_i``, ``c_i = min(1, C / |z_i|)``), so they converge as the non-private ones do
(without noise they reach the clipped-row fit, which the benchmark finds within 0.001 AUC of the
non-private one); the fitted model then scores unclipped rows. Using the unclipped linear predictor instead
(a weighted score with ``c_i^2`` in the Hessian) overshoots and diverges when little noise is added.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import expit

from ehr_fed.models.logreg_newton import pack_upper, triangle_size
from ehr_fed.privacy.bounds import KIND_BOUNDS, LAB_BOUNDS, default_feature_bounds  # noqa: F401 (re-exported)
from ehr_fed.privacy.dp import OutputSensitivity, Release, dp_task, field_width, noise_room

#: per-row integer range of the quantised preprocessing sums
PREPROCESS_QUANTUM = 1 << 10
#: per-row integer range of a clipped gradient / Hessian term
NEWTON_QUANTUM = 1 << 12
#: default row clip norm of a private Newton round, in units of sqrt(number of terms) (see :func:`newton_clip`)
CLIP_FACTOR = 1.5
#: a row's log-likelihood term is clipped to [-LOGLIK_CLIP, 0] in a private Newton round
LOGLIK_CLIP = 20.0
#: preprocessing outputs that carry no information in the private form (always 0)
UNUSED_PREPROCESS = ("n_nonbinary", "n_one", "n_one_pos", "n_obs_pos", "n_miss_pos")

# ----------------------------------------------------------------------------------- sensitivities
def _row_count_sens(params: dict) -> list[OutputSensitivity]:
    return [OutputSensitivity("n", 1.0, 1.0)]


def _preprocess_sens(params: dict) -> list[OutputSensitivity]:
    d = len(params["features"])
    q = float(params["dp_clip"]["quantum"])
    rd = math.sqrt(d)
    return [OutputSensitivity("n", 1, 1, 0.5), OutputSensitivity("n_pos", 1, 1, 0.5),
            OutputSensitivity("n_obs", d, rd, 1.0), OutputSensitivity("sum", d * q, rd * q, 2.0),
            OutputSensitivity("sumsq", d * q, rd * q, 2.0)]


def releases_information(params: dict) -> bool:
    """Whether the Newton round of ``params`` releases the information matrix: the rounds before
    ``dp_clip["information_rounds"]`` do (every round when the key is absent), the later ones release the
    gradient and log-likelihood only."""
    k = params["dp_clip"].get("information_rounds")
    return k is None or int(params.get("dp_index", 0)) < int(k)


def _newton_sens(params: dict) -> list[OutputSensitivity]:
    clip = params["dp_clip"]
    d = len(params["beta"])
    t = triangle_size(d)
    c, sg, sh = float(clip["clip_norm"]), float(clip["scale_g"]), float(clip["scale_h"])
    ch = float(clip.get("information_clip_norm", c))
    info = releases_information(params)
    wg = float(clip.get("weight_gradient", 0.5)) if info else 1.0
    g2, h2, l2 = sg * c, sh * ch * ch / 4.0, float(clip["scale_l"]) * LOGLIK_CLIP + 1.0
    out = [OutputSensitivity("gradient", math.sqrt(d) * g2 + d, g2 + math.sqrt(d), wg)]
    if info:
        out.append(OutputSensitivity("hessian", math.sqrt(t) * h2 + t, h2 + math.sqrt(t), 1.0 - wg))
    return [*out, OutputSensitivity("loglik", l2, l2, float(clip.get("weight_loglik", 0.02)))]


dp_task("models.row_count", "preprocess", _row_count_sens)
dp_task("models.preprocess_sums", "preprocess", _preprocess_sens)
dp_task("logreg.newton", "model", _newton_sens, row_weights=True)  # rows weighted per patient: private_newton


# ----------------------------------------------------------------------------------- site side
def private_row_count(n_rows: int, rel: Release) -> dict[str, np.ndarray]:
    return {"n": np.array([n_rows], dtype=np.int64) + rel.noise("n", 1)}


def private_preprocess_sums(X: np.ndarray, y: np.ndarray, params: dict, rel: Release) -> dict[str, np.ndarray]:
    """Clipped, quantised, noised preprocessing sums of one site (module docstring)."""
    bounds = np.asarray(params["dp_clip"]["feature_bounds"], dtype=np.float64)
    if bounds.shape != (X.shape[1], 2):
        raise ValueError(f"dp_clip feature_bounds must have shape ({X.shape[1]}, 2), got {bounds.shape}")
    q = float(params["dp_clip"]["quantum"])
    c, r = bounds.mean(axis=1), (bounds[:, 1] - bounds[:, 0]) / 2.0
    obs = ~np.isnan(X)
    u = np.where(obs, (np.clip(X, bounds[:, 0], bounds[:, 1]) - c) / r, 0.0)
    d = X.shape[1]
    out = {
        "n": np.array([X.shape[0]], dtype=np.int64) + rel.noise("n", 1),
        "n_pos": np.array([int(np.sum(y == 1.0))], dtype=np.int64) + rel.noise("n_pos", 1),
        "n_obs": obs.sum(axis=0).astype(np.int64) + rel.noise("n_obs", d),
        "sum": np.rint(u * q).astype(np.int64).sum(axis=0) + rel.noise("sum", d),
        "sumsq": np.rint(u * u * q).astype(np.int64).sum(axis=0) + rel.noise("sumsq", d),
    }
    for name in UNUSED_PREPROCESS:
        out[name] = np.zeros(d, dtype=np.int64)
    return out


#: weight of the off-diagonal entries in the released information triangle (see :func:`pack_information`)
OFF_DIAGONAL_WEIGHT = math.sqrt(2.0)


def _triangle_weights(d: int) -> np.ndarray:
    i, j = np.triu_indices(d)
    return np.where(i == j, 1.0, OFF_DIAGONAL_WEIGHT)


def pack_information(H: np.ndarray) -> np.ndarray:
    """Upper triangle of a symmetric ``H`` with its off-diagonal entries times ``sqrt(2)``.

    The L2 norm of this vector is the Frobenius norm of ``H``, so one row's term ``p (1 - p) z z'`` moves it by
    at most ``p (1 - p) |z|^2 <= C^2 / 4``: the bound of the plain triangle, whose worst case (one coordinate
    carries the whole norm) is the same. Every entry gets the same noise, so after unpacking
    (:func:`unpack_information`) an off-diagonal entry keeps ``1 / sqrt(2)`` of the noise standard deviation it
    would have in the plain triangle, at the same privacy cost: the noise matrix is Wigner-like with spectral
    norm about ``sqrt(2) sigma sqrt(d)`` instead of ``2 sigma sqrt(d)``.
    """
    return pack_upper(H) * _triangle_weights(H.shape[0])


def unpack_information(tri: np.ndarray, d: int) -> np.ndarray:
    """Inverse of :func:`pack_information`."""
    from ehr_fed.models.logreg_newton import unpack_upper

    return unpack_upper(np.asarray(tri, dtype=float).ravel() / _triangle_weights(d), d)


def clip_rows(Z: np.ndarray, clip_norm: float) -> np.ndarray:
    """Per-row factors ``min(1, C / |z|)``."""
    norms = np.sqrt(np.einsum("ij,ij->i", Z, Z))
    return np.minimum(1.0, clip_norm / np.maximum(norms, 1e-300))


def private_newton(Z: np.ndarray, y: np.ndarray, beta: np.ndarray, params: dict, rel: Release,
                   weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Clipped, quantised, noised gradient and Hessian triangle of one site (module docstring).

    ``weights``: per-row weights in ``[0, 1]`` whose sum over one patient's rows is at most the plan's
    ``events_per_patient`` (:func:`ehr_fed.privacy.budget.patient_weights`); every term is weighted, so one
    patient moves each unrounded sum by at most ``events_per_patient`` times the one-row bound, the bound the
    calibration assumes. None: every row weighs 1 (the table holds at most ``events_per_patient`` rows per
    patient).
    """
    clip = params["dp_clip"]
    w = np.ones(Z.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (Z.shape[0],) or not (np.all(w >= 0.0) and np.all(w <= 1.0)):
        raise ValueError(f"private Newton row weights must be {Z.shape[0]} numbers in [0, 1]")
    Zc = Z * clip_rows(Z, float(clip["clip_norm"]))[:, None]
    eta = Zc @ beta
    p = expit(eta)
    grad = Zc.T @ (w * (np.asarray(y, dtype=float) - p))
    ll = (w * np.clip(np.asarray(y, dtype=float) * eta - np.logaddexp(0.0, eta), -LOGLIK_CLIP, 0.0)).sum()
    g = np.rint(grad * float(clip["scale_g"])).astype(np.int64)
    lq = np.rint(np.array([ll]) * float(clip["scale_l"])).astype(np.int64)
    out = {"gradient": g + rel.noise("gradient", g.size), "loglik": lq + rel.noise("loglik", 1)}
    if releases_information(params):
        ch = clip.get("information_clip_norm")  # the information matrix may clip its rows tighter
        Zh = Zc if ch is None else Zc * clip_rows(Zc, float(ch))[:, None]
        A = Zh * np.sqrt(w * p * (1.0 - p))[:, None]
        h = np.rint(pack_information(A.T @ A) * float(clip["scale_h"])).astype(np.int64)
        out["hessian"] = h + rel.noise("hessian", h.size)
    return out


# ----------------------------------------------------------------------------------- coordinator side
def newton_clip(d: int, clip_norm: float | None, weight_gradient: float = 0.85,
                information_rounds: int | None = None, information_clip: float | None = None
                ) -> dict[str, float]:
    """The public ``dp_clip`` of a Newton round: row norm ``C`` (default ``CLIP_FACTOR sqrt(d)``) and the scales.

    A standardized row has norm about ``sqrt(d)``; clipping at ``sqrt(d)`` clips about half the rows and biases
    the fit (on one benchmark federation by 0.016 test AUC even at epsilon 1000); ``1.5 sqrt(d)`` clips the
    outlying rows only. The noise of the gradient scales with ``C`` and that of the information matrix with
    ``C^2``: on the benchmark federation (:mod:`benchmarks.dp_utility`, 5 data seeds, 8 fits each, one noise
    stream) at epsilon 1000 the test AUC gap was 0.0037 at ``1.5 sqrt(d)``, 0.0039 at ``2 sqrt(d)`` and 0.0053
    at ``1.25 sqrt(d)``; at epsilon 2 the median gap was 0.0071 to 0.0079 at ``1.5 sqrt(d)`` against 0.0080 to
    0.0108 at ``2 sqrt(d)`` (0.0089 at ``1.75``, 0.0090 at ``1.25``).
    """
    c = float(clip_norm) if clip_norm is not None else CLIP_FACTOR * math.sqrt(d)
    ch = c if information_clip is None else min(c, float(information_clip))
    return {"clip_norm": c, "scale_g": NEWTON_QUANTUM / c, "scale_h": NEWTON_QUANTUM / (ch * ch / 4.0),
            "scale_l": NEWTON_QUANTUM / LOGLIK_CLIP, "weight_gradient": float(weight_gradient),
            **({} if information_rounds is None else {"information_rounds": int(information_rounds)}),
            **({} if information_clip is None else {"information_clip_norm": ch})}


def int_layout(name_bounds: dict[str, tuple[int, float]], n_sites: int) -> dict[str, dict]:
    """Integer-field layout ``{name: {"widths", "max_terms"}}`` from (size, |pooled value| bound) pairs."""
    return {name: {"widths": [[int(size), [field_width(bound)]]], "max_terms": int(n_sites)}
            for name, (size, bound) in name_bounds.items()}


def row_count_layout(plan: Any, n_sites: int, row_bound: float) -> dict[str, dict]:
    from ehr_fed.privacy.dp import calibrate

    noise = calibrate(plan, "preprocess", _row_count_sens({}))
    return int_layout({"n": (1, row_bound + noise_room(noise["n"]))}, n_sites)


def preprocess_layout(plan: Any, params: dict, n_bound: float, n_sites: int) -> dict[str, dict]:
    from ehr_fed.privacy.dp import calibrate

    noise = calibrate(plan, "preprocess", _preprocess_sens(params), "models.preprocess_sums",
                      int(params.get("dp_index", 0)))
    d, q = len(params["features"]), float(params["dp_clip"]["quantum"])
    sizes = {"n": (1, n_bound), "n_pos": (1, n_bound), "n_obs": (d, n_bound), "sum": (d, n_bound * q),
             "sumsq": (d, n_bound * q)}
    bounds = {k: (s, b + noise_room(noise[k])) for k, (s, b) in sizes.items()}
    bounds.update({k: (d, 1.0) for k in UNUSED_PREPROCESS})
    return int_layout(bounds, n_sites)


def newton_layout(plan: Any, params: dict, n_bound: float, n_sites: int) -> tuple[dict[str, dict], dict]:
    """Layout of a private Newton round and the noise of its outputs."""
    from ehr_fed.privacy.dp import calibrate

    noise = calibrate(plan, "model", _newton_sens(params), "logreg.newton", int(params.get("dp_index", 0)))
    d = len(params["beta"])
    bound = n_bound * NEWTON_QUANTUM + math.sqrt(d) + 1.0
    sizes = {"gradient": (d, bound + noise_room(noise["gradient"])),
             "loglik": (1, bound + noise_room(noise["loglik"]))}
    if "hessian" in noise:
        sizes["hessian"] = (triangle_size(d), bound + noise_room(noise["hessian"]))
    return int_layout(sizes, n_sites), noise


def decode_preprocess(raw: dict[str, Any], params: dict, noise: dict) -> dict[str, np.ndarray]:
    """Pooled sums in the form of :func:`ehr_fed.models.base.site_preprocessing_sums` from a private release.

    Noisy counts are clipped to ``[0, n]``; a feature whose observed count is within three noise standard
    deviations of ``n`` counts as never missing (no indicator is made of noise), one within three of 0 as
    never observed; no feature is treated as
    binary (its binary cell counts are not released). For a request that carries its release plan and index
    (``dp``, ``dp_index``) the noise is calibrated here from them, as the sites calibrated it; ``noise`` is
    used otherwise.
    """
    if "dp" in params and "dp_index" in params:
        from ehr_fed.privacy.dp import ReleasePlan, calibrate

        noise = calibrate(ReleasePlan.model_validate(params["dp"]), "preprocess", _preprocess_sens(params),
                          "models.preprocess_sums", int(params["dp_index"]))
    bounds = np.asarray(params["dp_clip"]["feature_bounds"], dtype=np.float64)
    q = float(params["dp_clip"]["quantum"])
    c, r = bounds.mean(axis=1), (bounds[:, 1] - bounds[:, 0]) / 2.0
    s = {k: np.asarray(v, dtype=float).ravel() for k, v in raw.items()}
    n = max(float(s["n"][0]), 1.0) if np.isfinite(s["n"][0]) else float("nan")
    n_obs = np.clip(s["n_obs"], 0.0, n)
    n_obs = np.where(n_obs > n - 3.0 * noise["n_obs"].sigma, n, n_obs)
    n_obs = np.where(n_obs < 3.0 * noise["n_obs"].sigma, 0.0, n_obs)  # within noise of 0: never observed
    su, sq = r * s["sum"] / q, r * r * s["sumsq"] / q
    total = su + c * n_obs
    sumsq = np.maximum(sq + 2.0 * c * su + c * c * n_obs, 0.0)
    # a noisy variance can come out near 0 or negative: floor the standard deviation at r / 16 (the scale
    # only conditions the design; the model is fitted on whatever public standardization results)
    mean = np.divide(total, n_obs, out=np.zeros_like(total), where=n_obs > 0)
    sumsq = np.maximum(sumsq, n_obs * (mean * mean + (r / 16.0) ** 2))
    d = bounds.shape[0]
    # a noisy positive count below the policy's min_cell_count is hidden (NaN) by the decrypting site: take 1,
    # the lower end of the clip (it only sets the Newton start and the reported count)
    n_pos = float(s["n_pos"][0]) if np.isfinite(s["n_pos"][0]) else 1.0
    out = {"n": np.array([n]), "n_pos": np.array([float(np.clip(n_pos, 1.0, n - 1.0))]),
           "n_obs": n_obs, "sum": total, "sumsq": sumsq, "n_nonbinary": np.ones(d)}
    for k in ("n_one", "n_one_pos", "n_obs_pos", "n_miss_pos"):
        out[k] = np.zeros(d)
    return out


def decode_newton(raw: dict[str, Any], clip: dict, d: int) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Gradient (d,), the noisy information matrix (d, d; None: the round released none) and the
    log-likelihood of a private Newton round."""
    g = np.asarray(raw["gradient"], dtype=float).ravel() / clip["scale_g"]
    H = (unpack_information(np.asarray(raw["hessian"], dtype=float).ravel() / clip["scale_h"], d)
         if "hessian" in raw else None)
    loglik = min(float(np.asarray(raw["loglik"], dtype=float).ravel()[0]) / clip["scale_l"], 0.0)
    return g, H, loglik


#: eigenvalue floor of the smoothed information matrix, in units of the spectral norm of its noise
FLOOR_FACTOR = 1.0


def smoothed_information(hessians: list[np.ndarray], clip: dict, sigmas: list[float]) -> np.ndarray:
    """Upper triangle of the mean of the rounds' noisy information matrices, made positive definite.

    Near the solution the information changes little from round to round, so the mean of ``R`` noisy
    matrices has ``1 / sqrt(R)`` of the noise. The noise of one matrix is symmetric with independent entries,
    of standard deviation ``sigma`` on the diagonal and ``sigma / sqrt(2)`` off it (:func:`pack_information`),
    so its spectral norm is about ``2 (sigma / sqrt(2)) sqrt(d)``; the eigenvalues of the mean are floored at
    that norm of the mean's noise (``sqrt(2) sigma sqrt(d / R)``), so every step is defined and no direction
    whose information noise alone could make up is stepped along as if it were known. ``sigmas``: the noise
    standard deviation (integer units) of each matrix's release; the mean's is ``sqrt(sum sigma^2) / R``.
    Post-processing: no privacy cost.
    """
    H = np.mean(hessians, axis=0)
    d = H.shape[0]
    # the noise of the mean: sqrt(sum sigma_r^2) / R per diagonal entry (sigmas: integer units, one per matrix)
    sigma_off = math.sqrt(sum(float(s) ** 2 for s in sigmas)) / len(hessians) / clip["scale_h"] / OFF_DIAGONAL_WEIGHT
    floor = FLOOR_FACTOR * 2.0 * sigma_off * math.sqrt(d)
    vals, vecs = np.linalg.eigh(H)
    return pack_upper((vecs * np.maximum(vals, floor)) @ vecs.T)

"""Statistics around the metrics: multiplicity, power, agreement, rank correlation, judge accuracy, calibration.

Pure numpy and the standard library (no scipy): the normal quantile is computed here, to about 1e-15.
Rates are percentages (0-100) like in ``metrics``; ``wilson_interval`` alone returns fractions.
Bootstrap intervals are seeded 95% percentile intervals, resampling items (pairs) with replacement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import HHAlignError

# Cap on the integers held by one bootstrap block (n_boot x n), so large inputs do not need gigabytes.
_BLOCK_CELLS = 2_000_000

# Acklam's rational approximation of the normal quantile (relative error < 1.15e-9 before refinement).
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
      1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
      6.680131188771972e01, -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
      -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425


# --- normal distribution ---------------------------------------------------------------------------------------

def norm_cdf(x: float) -> float:
    """Standard normal CDF, via erfc so the lower tail keeps its relative accuracy."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    """Standard normal quantile (inverse CDF): Acklam's approximation plus one Halley step (error ~1e-15).

    ``norm_ppf(0)`` is ``-inf`` and ``norm_ppf(1)`` is ``inf``; outside [0, 1] (or NaN) raises.
    """
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also catches NaN
        raise HHAlignError(f"norm_ppf needs a probability in [0, 1], got {p}")
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    # Work in the lower half, where p itself (not 1 - p) carries the precision; the upper half is symmetric.
    if p > 0.5:
        return -_lower_ppf(1.0 - p)
    return _lower_ppf(p)


def _lower_ppf(p: float) -> float:
    if p < _P_LOW:
        q = math.sqrt(-2.0 * math.log(p))
        x = ((((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5])
             / ((((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1.0))
    else:
        q = p - 0.5
        r = q * q
        x = ((((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]) * q
             / (((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0))
    # One Halley step on cdf(x) - p = 0 takes the 1e-9 approximation to machine precision.
    pdf = math.exp(-x * x / 2.0) / math.sqrt(2.0 * math.pi)
    if pdf == 0.0:  # only for p below ~1e-320, where the approximation is all there is
        return x
    u = (norm_cdf(x) - p) / pdf
    return x - u / (1.0 + x * u / 2.0)


# --- multiplicity ----------------------------------------------------------------------------------------------

def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input's order.

    Reject hypothesis i at family-wise level alpha when ``holm(p)[i] < alpha`` (or <=, as the caller's tests do).
    """
    p = np.asarray(list(p_values), dtype=float)
    if p.size == 0:
        return []
    if not np.all((p >= 0) & (p <= 1)):  # also catches NaN
        raise HHAlignError(f"holm needs p-values in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    # The k-th smallest (0-based) is multiplied by m - k; the running max keeps the adjusted values monotone.
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(v) for v in adjusted]


# The family-wise level every test and claim is judged at.
ALPHA = 0.05


def tests_of(comparisons: Sequence[Mapping]) -> list[tuple[Mapping, str, str, Mapping]]:
    """Every test in ``comparisons`` as (comparison, category, metric key, test), in a fixed order."""
    found = []
    for c in comparisons:
        for category, metric in (("harmful", "HmR"), ("helpful", "HpR")):
            if category in c:
                found += [(c, category, key, c[category][key]) for key in (metric, "mean_reward")]
    return found


def add_holm(comparisons: list[dict], alpha: float = ALPHA) -> list[dict]:
    """Put ``p_holm`` and ``significant_holm`` beside every ``p_value``: Holm's correction over all these tests."""
    tests = tests_of(comparisons)
    for (_, _, _, test), adjusted in zip(tests, holm([t["p_value"] for *_, t in tests])):
        test["p_holm"] = adjusted
        test["significant_holm"] = adjusted < alpha
    return comparisons


# --- power: smallest detectable differences ---------------------------------------------------------------------

def _z_alpha_power(alpha: float, power: float) -> tuple[float, float]:
    if not 0.0 < alpha < 1.0:
        raise HHAlignError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.5 <= power < 1.0:
        raise HHAlignError(f"power must be in [0.5, 1), got {power}")
    return norm_ppf(1.0 - alpha / 2.0), norm_ppf(power)


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise HHAlignError(f"n must be a positive integer (number of paired prompts), got {n!r}")


def min_detectable_difference_mean(n: int, sd_diff: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest paired mean difference (same units as ``sd_diff``, e.g. reward logits) detectable on n pairs.

    Normal approximation of the paired (two-sided) test: ``(z_{1-alpha/2} + z_power) * sd_diff / sqrt(n)``,
    where ``sd_diff`` is the standard deviation of the per-prompt differences.
    """
    _check_n(n)
    if not (math.isfinite(sd_diff) and sd_diff >= 0):
        raise HHAlignError(f"sd_diff must be a finite standard deviation >= 0, got {sd_diff}")
    z_a, z_b = _z_alpha_power(alpha, power)
    return (z_a + z_b) * sd_diff / math.sqrt(n)


def min_detectable_difference_paired_binary(n: int, p_discordant: float | None = None, alpha: float = 0.05,
                                            power: float = 0.8) -> float:
    """Smallest difference in percentage points between two rates on the same n prompts that McNemar detects.

    Connor's (1987, Biometrics 43:207) normal approximation for McNemar's test: with discordant proportion
    ``pd = p10 + p01`` and difference ``d = p10 - p01``, the pairs needed are
    ``n = (z_{1-alpha/2} * sqrt(pd) + z_power * sqrt(pd - d^2))^2 / d^2``; this solves it for d.

    ``p_discordant`` is the share of prompts on which the two labels differ: pass the observed
    ``(only_a + only_b) / n`` from ``metrics.mcnemar_exact``. ``None`` assumes 0.5, the discordance of two
    independent labels at 50% each (the most discordant case for two independent labels with equal rates).
    The difference can never exceed ``pd``; when even ``d = pd`` is out of reach, returns ``inf``.
    """
    _check_n(n)
    pd = 0.5 if p_discordant is None else float(p_discordant)
    if not 0.0 < pd <= 1.0:
        raise HHAlignError(f"p_discordant must be in (0, 1], got {p_discordant}")
    z_a, z_b = _z_alpha_power(alpha, power)
    root_n = math.sqrt(n)

    def excess(d: float) -> float:  # > 0 while d is too small to detect; decreasing in d because z_b >= 0
        return (z_a * math.sqrt(pd) + z_b * math.sqrt(max(pd - d * d, 0.0))) / d - root_n

    if excess(pd) > 0:
        return math.inf
    lo, hi = 0.0, pd
    for _ in range(200):  # bisection: excess(lo) > 0 >= excess(hi)
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if excess(mid) > 0:
            lo = mid
        else:
            hi = mid
    return hi * 100.0


def _log_factorials(n: int) -> np.ndarray:
    """log(k!) for k = 0..n (a running sum of logs: relative error ~1e-13 at n = 10**4, plenty for a power)."""
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=float)))])


def _mcnemar_rejections(n: int, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (D, k) where the exact two-sided McNemar test (``metrics.mcnemar_exact``: p = min(1, 2 P(Bin(D, 1/2)
    <= k)) rejects at p < alpha, with D discordant pairs of which the smaller side has k; and log C(D, k)."""
    logf = _log_factorials(n)
    ds, ks, logc = [], [], []
    for d in range(1, n + 1):
        k = np.arange(0, d // 2 + 1)
        lc = logf[d] - logf[k] - logf[d - k]
        p = 2.0 * np.cumsum(np.exp(lc - d * math.log(2.0)))
        inside = int(np.searchsorted(p >= alpha, True))  # p rises with k: the first k that does not reject
        ds.append(np.full(inside, d))
        ks.append(k[:inside])
        logc.append(lc[:inside])
    return np.concatenate(ds), np.concatenate(ks), np.concatenate(logc)


def _power_curve(n: int, pd: float, alpha: float) -> Callable[[float], float]:
    """The exact McNemar power on n pairs with discordant share ``pd`` as a function of the difference (fractions):
    the number of discordant pairs D is Binomial(n, pd); given D, the pairs won by the second model are
    Binomial(D, (pd + diff) / (2 pd)); the power sums the rejection region (:func:`_mcnemar_rejections`) over both.
    Region cells whose D has probability below 1e-18 are dropped (they cannot move a power by more than that)."""
    ds, ks, logc = _mcnemar_rejections(n, alpha)
    logf = _log_factorials(n)
    with np.errstate(divide="ignore"):
        log_pd = ds * math.log(pd)
        log_rest = (n - ds) * math.log1p(-pd) if pd < 1 else np.where(ds == n, 0.0, -np.inf)
    base = logf[n] - logf[ds] - logf[n - ds] + log_pd + log_rest + logc  # log P(D) + log C(D, k)
    keep = base - logc > math.log(1e-18)
    ds, ks, base = ds[keep], ks[keep], base[keep]

    def power(diff: float) -> float:
        q = (pd + abs(diff)) / (2 * pd)

        def tail(win: float) -> np.ndarray:  # P(D discordant, of which the side winning with ``win`` has only k)
            with np.errstate(divide="ignore", invalid="ignore"):
                lw = np.where(ks > 0, ks * math.log(win) if win > 0 else -np.inf, 0.0)
                ll = np.where(ds - ks > 0, (ds - ks) * math.log1p(-win) if win < 1 else -np.inf, 0.0)
            return np.exp(base + lw + ll)

        # Either side may be the smaller one; k < D/2 in the region, so the two events never overlap.
        return float(min(1.0, tail(q).sum() + tail(1.0 - q).sum())) if ds.size else 0.0

    return power


def mcnemar_exact_power(n: int, p_discordant: float, diff: float, alpha: float = 0.05) -> float:
    """The probability that the exact McNemar test rejects (p < alpha) on n pairs when a share ``p_discordant`` of
    pairs is discordant and the two rates differ by ``diff`` (fractions: p10 - p01 = diff, p10 + p01 = pd). Exact
    (binomial sums, see :func:`_power_curve`), no normal approximation."""
    _check_n(n)
    pd, d = float(p_discordant), abs(float(diff))
    if not 0.0 < pd <= 1.0 or d > pd:
        raise HHAlignError(f"mcnemar_exact_power needs 0 < p_discordant <= 1 and |diff| <= p_discordant, got "
                           f"{p_discordant}, {diff}")
    return _power_curve(n, pd, alpha)(d)


def min_detectable_difference_mcnemar_exact(n: int, p_discordant: float | None = None, alpha: float = 0.05,
                                            power: float = 0.8) -> float:
    """Smallest difference in percentage points between two rates on the same n prompts that the exact McNemar
    test detects with ``power`` at level ``alpha`` (:func:`mcnemar_exact_power`, solved for the difference by
    bisection to 1e-4 points); ``inf`` when even ``diff = p_discordant`` is out of reach. ``p_discordant`` as in
    :func:`min_detectable_difference_paired_binary` (None: 0.5). At the study's 50 prompts and p<0.05 the normal
    approximation is 0.7 points optimistic (21.2 vs 21.9 at 30% discordant); at Holm's strictest step for 24 tests
    it is 1.6 points pessimistic (29.3 vs 27.8)."""
    _check_n(n)
    pd = 0.5 if p_discordant is None else float(p_discordant)
    if not 0.0 < pd <= 1.0:
        raise HHAlignError(f"p_discordant must be in (0, 1], got {p_discordant}")
    _z_alpha_power(alpha, power)  # the same checks of alpha and power
    curve = _power_curve(n, pd, alpha)
    if curve(pd) < power:
        return math.inf
    lo, hi = 0.0, pd
    while hi - lo > 1e-6:  # curve(lo) < power <= curve(hi); the power rises with the difference
        mid = (lo + hi) / 2
        if curve(mid) >= power:
            hi = mid
        else:
            lo = mid
    return hi * 100.0


# --- bootstrap helpers -----------------------------------------------------------------------------------------

def _percentile_ci(samples: np.ndarray, alpha: float = 0.05) -> list[float]:
    """Percentile interval over the finite samples (undefined resamples, e.g. constant ones, are dropped)."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return [math.nan, math.nan]
    return [float(np.quantile(finite, alpha / 2)), float(np.quantile(finite, 1 - alpha / 2))]


def _boot_blocks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Index arrays (rows = resamples of n items), in blocks so n_boot x n never has to fit at once."""
    if n_boot < 1:
        raise HHAlignError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    rows = max(1, _BLOCK_CELLS // max(n, 1))
    for start in range(0, n_boot, rows):
        yield rng.integers(0, n, size=(min(rows, n_boot - start), n))


def _paired(a: Sequence, b: Sequence, what: str) -> tuple[list, list]:
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise HHAlignError(f"{what} needs two sequences of the same length, got {len(a)} and {len(b)}")
    if not a:
        raise HHAlignError(f"{what} needs at least one pair, got none")
    return a, b


# --- agreement: Cohen's kappa ----------------------------------------------------------------------------------

def _label_codes(a: list, b: list) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes for any hashable labels, shared by both raters (first-appearance order)."""
    codes: dict[Hashable, int] = {}
    ca = np.array([codes.setdefault(x, len(codes)) for x in a], dtype=np.int64)
    cb = np.array([codes.setdefault(x, len(codes)) for x in b], dtype=np.int64)
    return ca, cb, len(codes)


def _kappa_from_counts(n: int, agree: np.ndarray, chance: np.ndarray, undefined: float = 1.0) -> np.ndarray:
    """kappa = (n*agree - chance) / (n^2 - chance), in integers; chance = sum over labels of count_a * count_b.

    When both raters used one and the same label throughout, expected agreement is 1 and kappa is 0/0; the
    observed agreement is then necessarily 1 too, and we return ``undefined``: 1.0 (perfect agreement) for the
    estimate, NaN for a bootstrap resample (left out of the interval, as :func:`spearman_ci` does).
    """
    num = n * agree - chance
    den = n * n - chance
    out = np.full(num.shape, undefined, dtype=float)
    ok = den != 0
    out[ok] = num[ok] / den[ok]
    return out


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa between two raters' labels for the same items (labels: any hashable values).

    1.0 when expected agreement is 1 (both raters always gave the same single label); see ``_kappa_from_counts``.
    """
    a, b = _paired(a, b, "cohen_kappa")
    ca, cb, k = _label_codes(a, b)
    chance = np.bincount(ca, minlength=k) @ np.bincount(cb, minlength=k)
    return float(_kappa_from_counts(len(a), np.atleast_1d((ca == cb).sum()), np.atleast_1d(chance))[0])


def kappa_ci(a: Sequence[Hashable], b: Sequence[Hashable], n_boot: int = 2000, seed: int = 0) -> dict:
    """Cohen's kappa with a seeded 95% percentile-bootstrap interval over items, and the raw agreement (percent).

    Resamples where kappa is 0/0 (both raters one and the same label throughout) have no kappa and are left out of
    the interval; counting them as 1 would pull the upper end to 1.
    """
    a, b = _paired(a, b, "kappa_ci")
    ca, cb, k = _label_codes(a, b)
    n = len(a)
    boots = []
    for idx in _boot_blocks(n, n_boot, seed):
        ra, rb = ca[idx], cb[idx]
        offset = np.arange(idx.shape[0])[:, None] * k  # per-resample label counts in one bincount
        count_a = np.bincount((ra + offset).ravel(), minlength=idx.shape[0] * k).reshape(-1, k)
        count_b = np.bincount((rb + offset).ravel(), minlength=idx.shape[0] * k).reshape(-1, k)
        boots.append(_kappa_from_counts(n, (ra == rb).sum(axis=1), (count_a * count_b).sum(axis=1), math.nan))
    return {
        "kappa": cohen_kappa(a, b),
        "ci95": _percentile_ci(np.concatenate(boots)),
        "n": n,
        "agreement": float((ca == cb).mean() * 100),
    }


# --- rank correlation: Spearman ---------------------------------------------------------------------------------

def rankdata(values: Sequence[float]) -> np.ndarray:
    """1-based ranks with ties given their average rank (like scipy's ``rankdata(method="average")``)."""
    x = np.asarray(list(values), dtype=float)
    if x.size and not np.isfinite(x).all():
        raise HHAlignError("rankdata needs finite values (NaN or infinite found)")
    return _row_ranks(x[None, :])[0]


def _row_ranks(rows: np.ndarray) -> np.ndarray:
    """Average ranks within each row of a 2-D array, all rows at once.

    Rows are told apart by offsetting each row's dense value codes by row * (number of distinct values), so one
    sort and two searchsorted calls give every value's count of smaller (left) and <= (right) values in its row.
    """
    n_rows, n = rows.shape
    uniq, codes = np.unique(rows, return_inverse=True)
    keys = codes.reshape(rows.shape) + np.arange(n_rows)[:, None] * max(uniq.size, 1)
    flat = np.sort(keys.ravel())
    start = np.arange(n_rows)[:, None] * n
    below = np.searchsorted(flat, keys, side="left") - start
    upto = np.searchsorted(flat, keys, side="right") - start
    return (below + 1 + upto) / 2.0  # mean of the 1-based positions below+1 .. upto


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation per row; NaN where a row is constant (correlation undefined)."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    out = np.full(x.shape[0], math.nan)
    ok = den > 0
    out[ok] = (xc * yc).sum(axis=1)[ok] / den[ok]
    return np.clip(out, -1.0, 1.0)  # rounding can step just past +/-1


def _finite_pair(x: Sequence[float], y: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _paired(x, y, what)
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise HHAlignError(f"{what} needs finite values (NaN or infinite found)")
    return xa, ya


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of average ranks (ties handled); NaN when either side is constant."""
    xa, ya = _finite_pair(x, y, "spearman")
    return float(_row_pearson(_row_ranks(xa[None, :]), _row_ranks(ya[None, :]))[0])


def spearman_ci(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Spearman's rho with a seeded 95% percentile-bootstrap interval over pairs.

    Resamples where x or y is constant have no rho and are left out of the interval.
    """
    xa, ya = _finite_pair(x, y, "spearman_ci")
    boots = [_row_pearson(_row_ranks(xa[idx]), _row_ranks(ya[idx])) for idx in _boot_blocks(xa.size, n_boot, seed)]
    return {"rho": spearman(xa, ya), "ci95": _percentile_ci(np.concatenate(boots)), "n": int(xa.size)}


# --- judge accuracy ---------------------------------------------------------------------------------------------

def wilson_interval(k: int, n: int, alpha: float = 0.05) -> list[float]:
    """Wilson score interval for k successes in n trials, as fractions [lo, hi].

    With n = 0 there is no information and the interval is the whole range [0, 1].
    """
    if n < 0 or not 0 <= k <= max(n, 0):
        raise HHAlignError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < alpha < 1.0:
        raise HHAlignError(f"alpha must be in (0, 1), got {alpha}")
    if n == 0:
        return [0.0, 1.0]
    z = norm_ppf(1.0 - alpha / 2.0)
    z2 = z * z
    centre = (k + z2 / 2.0) / (n + z2)
    half = z / (n + z2) * math.sqrt(k * (n - k) / n + z2 / 4.0)
    # Pin the ends exactly when k is 0 or n (rounding would leave a 1e-17 gap).
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return [lo, hi]


def accuracy_ci(correct: int, ties: int, n: int, alpha: float = 0.05) -> dict:
    """A judge's accuracy on n preference pairs where it may tie (percent), with a Wilson interval.

    ``accuracy`` = correct / (n - ties), ties left out; ``accuracy_ties_as_half`` = (correct + ties/2) / n.
    ``ci95`` is the Wilson interval (level 1 - alpha) for the first, in percent. With every pair tied, accuracy
    is NaN and the interval is [0, 100].
    """
    if min(correct, ties, n) < 0 or correct + ties > n:
        raise HHAlignError(f"accuracy_ci needs correct + ties <= n, all >= 0; got {correct=}, {ties=}, {n=}")
    decided = n - ties
    lo, hi = wilson_interval(correct, decided, alpha)
    return {
        "accuracy": correct / decided * 100 if decided else math.nan,
        "accuracy_ties_as_half": (correct + 0.5 * ties) / n * 100 if n else math.nan,
        "n": n,
        "ties": ties,
        "ci95": [lo * 100, hi * 100],
    }


# --- threshold calibration --------------------------------------------------------------------------------------

def _rewards(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        raise HHAlignError(f"calibrate_threshold needs at least one {what} reward")
    if not np.isfinite(arr).all():
        raise HHAlignError(f"{what} rewards contain NaN or infinite values")
    return arr


def balanced_accuracy(chosen: Sequence[float], rejected: Sequence[float], threshold: float) -> float:
    """Mean of the share of chosen rewards >= threshold and the share of rejected rewards < threshold (0-1)."""
    c, r = _rewards(chosen, "chosen"), _rewards(rejected, "rejected")
    return float(((c >= threshold).mean() + (r < threshold).mean()) / 2)


def calibrate_threshold(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """The reward cut-off t that best separates chosen (good: reward >= t) from rejected (bad: reward < t).

    Maximises balanced accuracy over every cut between adjacent distinct sorted rewards (the only places where
    it changes) and returns the midpoint of that gap, never a reward itself. When several cuts tie for the best,
    the middle one (the lower of the two middles) is taken, so t sits inside the optimal range, not at its edge.
    Cuts below or above all rewards are not candidates; raises when no cut beats calling everything one class
    (balanced accuracy 0.5), e.g. when rejected rewards are all above chosen ones.
    """
    c = np.sort(_rewards(chosen, "chosen"))
    r = np.sort(_rewards(rejected, "rejected"))
    values = np.unique(np.concatenate([c, r]))
    if values.size < 2:
        raise HHAlignError("calibrate_threshold needs at least two distinct rewards to place a cut")
    below = values[:-1]  # the cut between below[i] and values[i + 1]
    good = c.size - np.searchsorted(c, below, side="right")  # chosen >= values[i + 1]
    bad = np.searchsorted(r, below, side="right")  # rejected <= values[i], i.e. < values[i + 1]
    # Balanced accuracy times 2 * n_c * n_r, in integers so equal scores tie exactly.
    score = good * r.size + bad * c.size
    if score.max() <= c.size * r.size:  # balanced accuracy <= 0.5
        raise HHAlignError("no reward cut-off separates chosen from rejected better than chance "
                           "(best balanced accuracy <= 0.5): check the reward model and the pairs")
    best = np.flatnonzero(score == score.max())
    i = int(best[(best.size - 1) // 2])
    return float((values[i] + values[i + 1]) / 2)

"""hhalign.stats.inference: normal quantiles, Holm, detectable differences, kappa, Spearman, Wilson, threshold
calibration.

Expected values are hand-computed tables or independent computations in the test (statistics.NormalDist, closed
forms, brute force), never the module's own output.
"""

import math
import subprocess
import sys
from statistics import NormalDist

import numpy as np
import pytest

from conftest import ROOT
from hhalign.errors import HHAlignError
from hhalign.stats import inference as st

Z = NormalDist()  # the standard library's quantile (Wichura AS241): an independent reference


def test_import_is_light():
    code = ("import sys, hhalign.stats.inference; heavy = [m for m in ('torch', 'transformers', 'scipy', 'pandas') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


# --- normal distribution ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("p", "x"),
    [
        (0.975, 1.959963985),
        (0.8, 0.841621234),
        (0.5, 0.0),
        (0.025, -1.959963985),
        (0.995, 2.575829304),
        (0.9, 1.281551566),
        (0.05, -1.644853627),
        (1e-10, -6.361340902),
    ],
)
def test_norm_ppf_known_quantiles(p, x):
    assert st.norm_ppf(p) == pytest.approx(x, abs=1e-9)


def test_norm_ppf_matches_the_standard_library_across_the_range():
    grid = [1e-300, 1e-50, 1e-12, 1e-6, 0.001, 0.0242, 0.02425, 0.0243, 0.2, 0.4999, 0.5001, 0.77, 0.97575,
            0.999, 1 - 1e-9]
    for p in grid:
        assert st.norm_ppf(p) == pytest.approx(Z.inv_cdf(p), rel=1e-12, abs=1e-12), p


def test_norm_ppf_inverts_norm_cdf():
    # Up to x = 3 only: above, cdf(x) is within 1e-3 of 1 and the double itself has lost the digits.
    for x in np.linspace(-8, 3, 45):
        assert st.norm_ppf(st.norm_cdf(x)) == pytest.approx(x, abs=1e-9)
    for p in (0.0625, 0.25, 0.375):  # 1 - p is exact for these, so the symmetry is too
        assert st.norm_ppf(p) == -st.norm_ppf(1 - p)


@pytest.mark.parametrize(("x", "p"), [(0.0, 0.5), (1.96, 0.9750021048517795), (-1.0, 0.15865525393145707),
                                      (-10.0, 7.619853024160527e-24)])
def test_norm_cdf(x, p):
    assert st.norm_cdf(x) == pytest.approx(p, rel=1e-12)
    assert st.norm_cdf(x) == pytest.approx(Z.cdf(x), rel=1e-12)


def test_norm_ppf_ends_and_bad_input():
    assert st.norm_ppf(0.0) == -math.inf and st.norm_ppf(1.0) == math.inf
    for bad in (-0.1, 1.1, math.nan):
        with pytest.raises(HHAlignError, match="probability"):
            st.norm_ppf(bad)


# --- Holm ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("p", "adjusted"),
    [
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        ([], []),
        ([0.5], [0.5]),
        ([0.2, 0.6], [0.4, 0.6]),
        ([0.6, 0.2], [0.6, 0.4]),
        ([0.3, 0.4, 0.5], [0.9, 0.9, 0.9]),  # monotone: the largest may not drop below the ones before it
        ([0.4, 0.5, 0.9], [1.0, 1.0, 1.0]),  # capped at 1
        ([0.01, 0.01, 0.04], [0.03, 0.03, 0.04]),  # tied p-values
        ([0.0, 1.0], [0.0, 1.0]),
    ],
)
def test_holm_tables(p, adjusted):
    assert st.holm(p) == pytest.approx(adjusted)


def test_holm_matches_its_definition_on_random_p_values():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.2, 12)
    m = p.size
    rank = np.argsort(np.argsort(p))  # 0-based rank of each p (no ties in continuous draws)
    expected = [min(1.0, max((m - rank[k]) * p[k] for k in range(m) if rank[k] <= rank[i])) for i in range(m)]
    assert st.holm(p.tolist()) == pytest.approx(expected)
    assert all(a >= b for a, b in zip(st.holm(p.tolist()), p))


@pytest.mark.parametrize("bad", [[0.1, 1.5], [-0.01], [math.nan, 0.2]])
def test_holm_refuses_non_probabilities(bad):
    with pytest.raises(HHAlignError, match="p-values"):
        st.holm(bad)


# --- detectable differences ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "sd", "alpha", "power"),
                         [(50, 2.0, 0.05, 0.8), (100, 1.0, 0.05, 0.9), (10, 3.0, 0.01, 0.8)])
def test_min_detectable_difference_mean(n, sd, alpha, power):
    expected = (Z.inv_cdf(1 - alpha / 2) + Z.inv_cdf(power)) * sd / math.sqrt(n)
    assert st.min_detectable_difference_mean(n, sd, alpha, power) == pytest.approx(expected, rel=1e-12)


def test_min_detectable_difference_mean_by_hand():
    # (1.959964 + 0.841621) * 2 / sqrt(50) = 0.79241
    assert st.min_detectable_difference_mean(50, 2.0) == pytest.approx(0.792408, abs=1e-6)
    assert st.min_detectable_difference_mean(50, 0.0) == 0.0


def _connor_d(n: int, pd: float, alpha: float, power: float) -> float:
    """Connor's n = (za sqrt(pd) + zb sqrt(pd - d^2))^2 / d^2 solved for d in closed form (a quadratic in d)."""
    a, b = Z.inv_cdf(1 - alpha / 2) * math.sqrt(pd), Z.inv_cdf(power)
    # sqrt(n) d - a = b sqrt(pd - d^2)  =>  (n + b^2) d^2 - 2 a sqrt(n) d + (a^2 - b^2 pd) = 0, larger root.
    qa, qb, qc = n + b * b, -2 * a * math.sqrt(n), a * a - b * b * pd
    return (-qb + math.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)


@pytest.mark.parametrize(
    ("n", "pd", "alpha", "power"),
    [(50, 0.3, 0.05, 0.8), (50, 0.5, 0.05, 0.8), (200, 0.1, 0.05, 0.8), (100, 0.4, 0.01, 0.9),
     (1000, 0.05, 0.05, 0.5)],
)
def test_min_detectable_difference_paired_binary_solves_connors_formula(n, pd, alpha, power):
    d = st.min_detectable_difference_paired_binary(n, pd, alpha, power)
    assert d == pytest.approx(_connor_d(n, pd, alpha, power) * 100, rel=1e-9)
    # Feeding d back into the sample-size formula gives n again.
    za, zb, f = Z.inv_cdf(1 - alpha / 2), Z.inv_cdf(power), d / 100
    assert (za * math.sqrt(pd) + zb * math.sqrt(pd - f * f)) ** 2 / f**2 == pytest.approx(n, rel=1e-9)


def test_min_detectable_difference_paired_binary_by_hand():
    # 50 prompts, 30% discordant: 1.96*sqrt(.3) + 0.8416*sqrt(.3 - d^2) = sqrt(50) d gives d = 0.2119.
    assert st.min_detectable_difference_paired_binary(50, 0.3) == pytest.approx(21.19, abs=0.01)
    # Unknown discordance means 0.5.
    assert st.min_detectable_difference_paired_binary(50) == st.min_detectable_difference_paired_binary(50, 0.5)


def test_detectable_differences_shrink_with_n_and_grow_with_power():
    for fn in (lambda n, pw: st.min_detectable_difference_paired_binary(n, 0.3, power=pw),
               lambda n, pw: st.min_detectable_difference_mean(n, 1.5, power=pw)):
        by_n = [fn(n, 0.8) for n in (20, 50, 100, 400, 1000)]
        assert all(a > b for a, b in zip(by_n, by_n[1:]))
        by_power = [fn(100, pw) for pw in (0.5, 0.8, 0.9, 0.99)]
        assert all(a < b for a, b in zip(by_power, by_power[1:]))
    # More discordance, more noise: a larger difference is needed.
    by_pd = [st.min_detectable_difference_paired_binary(100, pd) for pd in (0.1, 0.3, 0.6, 1.0)]
    assert all(a < b for a, b in zip(by_pd, by_pd[1:]))


def test_min_detectable_difference_paired_binary_out_of_reach():
    # With every pair discordant (pd = 1) the largest possible difference is 100 points; 3 pairs cannot show it
    # (1.96 > sqrt(3)), 4 can (1.96 < 2).
    assert st.min_detectable_difference_paired_binary(3, 1.0) == math.inf
    assert st.min_detectable_difference_paired_binary(4, 1.0) <= 100


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be"),
        ({"n": 2.5}, "n must be"),
        ({"n": 10, "p_discordant": 0.0}, "p_discordant"),
        ({"n": 10, "p_discordant": 1.2}, "p_discordant"),
        ({"n": 10, "alpha": 0.0}, "alpha"),
        ({"n": 10, "power": 0.3}, "power"),
        ({"n": 10, "power": 1.0}, "power"),
    ],
)
def test_min_detectable_difference_refuses_bad_input(kwargs, match):
    with pytest.raises(HHAlignError, match=match):
        st.min_detectable_difference_paired_binary(**kwargs)


def test_min_detectable_difference_mean_refuses_bad_sd():
    with pytest.raises(HHAlignError, match="sd_diff"):
        st.min_detectable_difference_mean(10, -1.0)


# --- Cohen's kappa ---------------------------------------------------------------------------------------------

def _table(yy: int, yn: int, ny: int, nn: int) -> tuple[list, list]:
    """Two raters' labels from a 2x2 table (rater a's label first)."""
    a = ["yes"] * (yy + yn) + ["no"] * (ny + nn)
    b = ["yes"] * yy + ["no"] * yn + ["yes"] * ny + ["no"] * nn
    return a, b


@pytest.mark.parametrize(
    ("a", "b", "kappa"),
    [
        (*_table(20, 5, 10, 15), 0.4),  # po = 0.7, pe = 0.5*0.6 + 0.5*0.4 = 0.5
        (*_table(10, 10, 10, 10), 0.0),  # independent raters
        (*_table(0, 5, 5, 0), -1.0),  # always opposite, balanced
        (*_table(45, 15, 25, 15), 0.130434782),  # po = .6, pe = .6*.7 + .4*.3 = .54 -> .06/.46
        ([1, 2, 3, 1, 2, 3], [1, 2, 3, 1, 2, 3], 1.0),
        (["x"] * 5, ["x"] * 5, 1.0),  # expected agreement 1: documented as kappa 1
        ([(0, 1), None, "a", None], [(0, 1), None, "a", "a"], 0.636363636),  # any hashable labels
    ],
)
def test_cohen_kappa_tables(a, b, kappa):
    assert st.cohen_kappa(a, b) == pytest.approx(kappa, abs=1e-8)


def test_cohen_kappa_three_labels_matches_the_confusion_matrix_formula():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 3, 80)
    b = np.where(rng.random(80) < 0.6, a, rng.integers(0, 3, 80))
    m = np.zeros((3, 3))
    np.add.at(m, (a, b), 1)
    m /= m.sum()
    po, pe = np.trace(m), m.sum(axis=1) @ m.sum(axis=0)
    assert st.cohen_kappa(a.tolist(), b.tolist()) == pytest.approx((po - pe) / (1 - pe), abs=1e-12)


def test_kappa_ci():
    a, b = _table(20, 5, 10, 15)
    out = st.kappa_ci(a, b, n_boot=1000, seed=4)
    assert out["kappa"] == pytest.approx(0.4) and out["n"] == 50 and out["agreement"] == pytest.approx(70.0)
    lo, hi = out["ci95"]
    assert lo < 0.4 < hi and 0.3 < hi - lo < 0.7  # n = 50: roughly +/-0.25
    assert st.kappa_ci(a, b, n_boot=1000, seed=4) == out
    assert st.kappa_ci(a, b, n_boot=1000, seed=5) != out
    constant = st.kappa_ci(["x"] * 4, ["x"] * 4, n_boot=50)  # kappa 0/0 (1 by convention) in every resample too
    assert constant["kappa"] == 1.0 and all(math.isnan(v) for v in constant["ci95"])


def test_kappa_ci_drops_undefined_resamples_like_spearman_ci():
    # One rater says 1 once, the other never: kappa is exactly 0 in every resample holding that item, and 0/0 in the
    # ~36% ((18/19)^19) without it. Counting those as 1 pulled the upper end to 1; dropped, the interval is [0, 0].
    out = st.kappa_ci([0] * 18 + [1], [0] * 19, n_boot=2000, seed=0)
    assert out["kappa"] == 0.0 and out["ci95"] == [0.0, 0.0]
    rho = st.spearman_ci([1.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0], n_boot=500)  # the same rule, for reference
    assert all(math.isfinite(v) for v in rho["ci95"])


def test_kappa_refuses_mismatched_or_empty_input():
    with pytest.raises(HHAlignError, match="same length"):
        st.cohen_kappa([1, 2], [1])
    with pytest.raises(HHAlignError, match="at least one"):
        st.kappa_ci([], [])


# --- Spearman --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("values", "ranks"),
    [
        ([3, 1, 2], [3, 1, 2]),
        ([1, 1, 1], [2, 2, 2]),
        ([10, 20, 10, 30, 20], [1.5, 3.5, 1.5, 5, 3.5]),
        ([0.5, -2.0, 0.5, 0.5], [3, 1, 3, 3]),
        ([], []),
    ],
)
def test_rankdata_averages_ties(values, ranks):
    assert st.rankdata(values).tolist() == ranks


@pytest.mark.parametrize(
    ("x", "y", "rho"),
    [
        ([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], 0.8),  # sum d^2 = 4: 1 - 6*4 / (5*24)
        ([1, 2, 2, 3], [1, 2, 3, 4], 3 / math.sqrt(10)),  # ranks (1, 2.5, 2.5, 4): 4.5 / sqrt(4.5 * 5)
        ([1, 2, 3, 4], [1, 1, 2, 2], 2 / math.sqrt(5)),  # ranks (1.5, 1.5, 3.5, 3.5): 4 / sqrt(5 * 4)
        ([0.1, 0.5, 0.2], [5, 5, 5], math.nan),  # constant side: undefined
    ],
)
def test_spearman_hand_computed(x, y, rho):
    if math.isnan(rho):
        assert math.isnan(st.spearman(x, y))
    else:
        assert st.spearman(x, y) == pytest.approx(rho, abs=1e-9)


def test_spearman_monotone_transforms_and_reversal():
    x = np.random.default_rng(7).normal(size=40)
    assert st.spearman(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert st.spearman(x, -(x**3)) == pytest.approx(-1.0)
    assert st.spearman(x[::-1], np.exp(x)[::-1]) == pytest.approx(1.0)


def test_spearman_ci():
    rng = np.random.default_rng(8)
    x = rng.normal(size=60)
    y = x + rng.normal(size=60)
    out = st.spearman_ci(x, y, n_boot=500, seed=1)
    assert out["n"] == 60 and out["ci95"][0] < out["rho"] < out["ci95"][1]
    assert 0.4 < out["rho"] < 0.9 and out["ci95"][1] - out["ci95"][0] < 0.5
    assert st.spearman_ci(x, y, n_boot=500, seed=1) == out
    ties = st.spearman_ci([1, 1, 2, 2, 3], [1, 2, 2, 3, 3], n_boot=200)
    assert -1 <= ties["ci95"][0] <= ties["ci95"][1] <= 1


def test_spearman_refuses_nan():
    with pytest.raises(HHAlignError, match="finite"):
        st.spearman([1.0, math.nan], [1.0, 2.0])


# --- Wilson and judge accuracy -----------------------------------------------------------------------------------

def _on_score_boundary(p: float, k: int, n: int, z: float) -> float:
    """Wilson bounds are the p where the score statistic |k/n - p| / sqrt(p(1-p)/n) equals z."""
    return (k / n - p) ** 2 - z * z * p * (1 - p) / n


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [(81, 263, 0.2553, 0.3662), (5, 10, 0.2366, 0.7634),
                                                 (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (1, 1, 0.2065, 1.0)])
def test_wilson_interval_known_values(k, n, lo, hi):
    got = st.wilson_interval(k, n)
    assert got == pytest.approx([lo, hi], abs=1e-4)
    z = Z.inv_cdf(0.975)
    for bound in got:
        assert _on_score_boundary(bound, k, n, z) == pytest.approx(0.0, abs=1e-12)


def test_wilson_interval_other_levels_and_edges():
    k, n, z = 30, 70, Z.inv_cdf(0.995)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)  # the textbook form, written differently from the module's
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert st.wilson_interval(k, n, alpha=0.01) == pytest.approx([centre - half, centre + half], rel=1e-12)
    assert st.wilson_interval(0, 0) == [0.0, 1.0]
    for bad in ((5, 4), (-1, 4), (1, -1)):
        with pytest.raises(HHAlignError, match="0 <= k <= n"):
            st.wilson_interval(*bad)


@pytest.mark.parametrize(
    ("correct", "ties", "n", "accuracy", "half"),
    [
        (81, 0, 263, 100 * 81 / 263, 100 * 81 / 263),
        (60, 20, 100, 75.0, 70.0),
        (0, 0, 5, 0.0, 0.0),
        (7, 3, 10, 100.0, 85.0),
    ],
)
def test_accuracy_ci(correct, ties, n, accuracy, half):
    out = st.accuracy_ci(correct, ties, n)
    assert out["accuracy"] == pytest.approx(accuracy) and out["accuracy_ties_as_half"] == pytest.approx(half)
    assert (out["n"], out["ties"]) == (n, ties)
    lo, hi = (100 * v for v in st.wilson_interval(correct, n - ties))
    assert out["ci95"] == pytest.approx([lo, hi])
    assert out["ci95"][0] <= out["accuracy"] <= out["ci95"][1]


def test_accuracy_ci_all_ties_and_bad_counts():
    out = st.accuracy_ci(0, 4, 4)
    assert math.isnan(out["accuracy"]) and out["accuracy_ties_as_half"] == 50.0 and out["ci95"] == [0.0, 100.0]
    with pytest.raises(HHAlignError, match="correct"):
        st.accuracy_ci(5, 6, 10)


# --- threshold calibration ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("chosen", "rejected", "threshold"),
    [
        ([3, 4, 5], [0, 1, 2], 2.5),  # separable: midpoint of the gap
        ([-1.0, 0.5], [-6.0, -4.0, -3.5], -2.25),
        ([1, 3, 5, 7], [0, 2, 4, 6], 2.5),  # four cuts tie at 0.625 (0.5, 2.5, 4.5, 6.5): lower middle
        ([2, 3, 10], [1, 2.5, 4], 2.75),  # three cuts tie at 2/3 (1.5, 2.75, 7): the middle one
        ([5], [0, 1, 2, 6], 3.5),  # balanced, not plain, accuracy: one chosen weighs as much as four rejected
        ([1, 1, 2], [1, 0], 0.5),  # a shared value: the cut goes below it, keeping all chosen
    ],
)
def test_calibrate_threshold_tables(chosen, rejected, threshold):
    assert st.calibrate_threshold(chosen, rejected) == pytest.approx(threshold)


def test_calibrate_threshold_is_optimal_against_a_brute_force_grid():
    rng = np.random.default_rng(11)
    chosen, rejected = rng.normal(-1, 1.5, 70).round(1), rng.normal(-3, 1.5, 50).round(1)
    t = st.calibrate_threshold(chosen, rejected)
    grid = np.linspace(-10, 6, 3201)
    best = max(((chosen >= g).mean() + (rejected < g).mean()) / 2 for g in grid)
    assert st.balanced_accuracy(chosen, rejected, t) == pytest.approx(best)
    assert t not in set(chosen) | set(rejected)


@pytest.mark.parametrize(
    ("chosen", "rejected", "match"),
    [([0.0], [1.0], "better than chance"), ([1, 1], [1], "two distinct"), ([], [1.0], "at least one chosen"),
     ([0.0, math.nan], [1.0], "NaN")],
)
def test_calibrate_threshold_refuses(chosen, rejected, match):
    with pytest.raises(HHAlignError, match=match):
        st.calibrate_threshold(chosen, rejected)


# --- exact McNemar power: known values, and the two surviving mutants' known values ---------------------------------


def test_exact_mcnemar_power_by_hand_and_by_enumeration():
    from itertools import product

    from hhalign.stats.metrics import mcnemar_exact

    # n = 2, every pair discordant, alpha 0.6: only D = 2 with k = 0 rejects (p = 0.5), so power = q^2 + (1 - q)^2
    assert st.mcnemar_exact_power(2, 1.0, 0.0, 0.6) == pytest.approx(0.5, abs=1e-12)
    assert st.mcnemar_exact_power(2, 1.0, 0.5, 0.6) == pytest.approx(0.75**2 + 0.25**2, abs=1e-12)
    # n = 6: every outcome of (a wins, b wins, tie) per pair enumerated, rejected by the project's own test
    p10, p01 = 0.3, 0.1
    power = 0.0
    for outcome in product((0, 1, 2), repeat=6):
        prob = math.prod((p10, p01, 1 - p10 - p01)[o] for o in outcome)
        a = [o == 1 for o in outcome]
        b = [o == 0 for o in outcome]
        power += prob * (mcnemar_exact(a, b)["p_value"] < 0.2)
    assert st.mcnemar_exact_power(6, p10 + p01, p10 - p01, 0.2) == pytest.approx(power, abs=1e-12)


@pytest.mark.parametrize(("n", "pd", "alpha", "expected"), [
    (50, 0.3, 0.05, 21.88),  # the normal approximation says 21.19: optimistic by 0.7 points
    (50, 0.3, 0.05 / 24, 27.77),  # Holm's strictest step of the study's 24 tests (normal: 29.35)
    (50, 0.5, 0.05 / 24, 37.94),
])
def test_min_detectable_difference_mcnemar_exact_known_values(n, pd, alpha, expected):
    # checked against 40,000 simulated studies per value: the power at these differences is 0.80 +/- 0.004
    assert st.min_detectable_difference_mcnemar_exact(n, pd, alpha) == pytest.approx(expected, abs=0.01)
    assert st.mcnemar_exact_power(n, pd, expected / 100 + 1e-4, alpha) >= 0.8


def test_min_detectable_difference_mcnemar_exact_out_of_reach():
    assert st.min_detectable_difference_mcnemar_exact(3, 1.0) == math.inf
    with pytest.raises(HHAlignError, match="p_discordant"):
        st.min_detectable_difference_mcnemar_exact(50, 0.0)


def test_spearman_ci_bootstraps_ranks_not_values():
    # y = x^3 is monotone: every resample's rank correlation is exactly 1 (ties fall on the same items on both
    # sides), while the Pearson correlation of the values is below 1 (0.92 here).
    x = np.arange(1.0, 21.0)
    out = st.spearman_ci(x, x**3, n_boot=500, seed=1)
    assert out["rho"] == pytest.approx(1.0) and out["ci95"] == pytest.approx([1.0, 1.0], abs=1e-12)


def test_boundaries_the_mutation_run_found_untested():
    # ties at the threshold: chosen counts as good at >=, rejected as bad only below
    assert st.balanced_accuracy([0.0], [0.0], 0.0) == 0.5
    assert st.balanced_accuracy([0.0, 1.0], [-1.0, 0.0], 0.0) == 0.75
    # a best cut that is exactly a coin flip (balanced accuracy 0.5) is refused, not returned
    with pytest.raises(HHAlignError, match="better than chance"):
        st.calibrate_threshold([0.0, 1.0], [0.0, 1.0])
    # the largest possible difference (every discordant pair won by one side) is allowed and always detected
    assert st.mcnemar_exact_power(2, 1.0, 1.0, 0.6) == pytest.approx(1.0)
    assert st.mcnemar_exact_power(50, 0.3, 0.2) == st.mcnemar_exact_power(50, 0.3, 0.2, 0.05)  # the default level
    for bad in ((50, 1.5, 0.1), (50, 0.3, 0.31), (50, 0.0, 0.0)):
        with pytest.raises(HHAlignError, match="p_discordant"):
            st.mcnemar_exact_power(*bad)
    with pytest.raises(HHAlignError, match="alpha must be in"):
        st.min_detectable_difference_mcnemar_exact(50, 0.3, alpha=1.0)
    with pytest.raises(HHAlignError, match="p_discordant"):
        st.min_detectable_difference_mcnemar_exact(50, 1.5)

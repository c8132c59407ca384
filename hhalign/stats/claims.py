"""Sentences about significance, written from the comparisons in ``metrics.json`` and nothing else.

Every claim a report, card or README makes about which differences are real comes from :func:`claims`, so a
sentence cannot say more than the tests do: a difference is "shown" only when it survives Holm's correction over all
the run's tests; one that reaches p < alpha only before correction is named as such; categories with no significant
difference say so, with the smallest differences the run could have detected (80% power).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..fmt import pct, signed_ci
from .inference import ALPHA, add_holm, tests_of

CATEGORY_TEXT = {"harmful": "harmful prompts", "helpful": "helpful prompts"}
ASPECT = {"harmful": "harmlessness", "helpful": "helpfulness"}


def _p(value: float) -> str:
    return f"{value:.2g}"


def _what(category: str, key: str) -> str:
    where = CATEGORY_TEXT[category]
    return f"mean reward on {where}" if key == "mean_reward" else f"{key} ({where})"


def _difference(key: str, test: Mapping) -> str:
    if key == "mean_reward":
        return signed_ci(test["diff"], test["ci95"])
    return f"{test['diff']:+.1f} points, from {pct(test['a'])} to {pct(test['b'])}"


def _direction(test: Mapping) -> str:
    return "above" if test["diff"] > 0 else "below" if test["diff"] < 0 else "level with"


def _test_name(key: str) -> str:
    return "bootstrap p" if key == "mean_reward" else "McNemar p"


def comparisons_of(metrics: Any) -> list[dict]:
    """The comparisons of a :class:`~hhalign.eval.schema.Metrics` or a metrics.json mapping, with ``p_holm``
    (computed here for files written before it was recorded)."""
    found = metrics.comparisons if hasattr(metrics, "comparisons") else (metrics or {}).get("comparisons") or []
    comparisons = copy.deepcopy(list(found))
    if any("p_holm" not in t for *_, t in tests_of(comparisons)):
        add_holm(comparisons)
    return comparisons


def claims(metrics: Any, alpha: float = ALPHA) -> list[str]:
    """The significance claims of a metrics.json (Metrics or mapping), one sentence each, in a fixed order."""
    return claims_from(comparisons_of(metrics), alpha)


def claims_from(comparisons: Sequence[Mapping], alpha: float = ALPHA) -> list[str]:
    """See :func:`claims`; ``comparisons`` must carry ``p_holm`` (``metrics.add_holm``)."""
    tests = tests_of(comparisons)
    if not tests:
        return []
    shown = [t for t in tests if t[3]["p_holm"] < alpha]
    uncorrected = [t for t in tests if t[3]["p_value"] < alpha and t[3]["p_holm"] >= alpha]
    verb = "reaches" if len(uncorrected) == 1 else "reach"
    out = [f"{len(shown)} of {len(tests)} paired tests survive Holm's correction for {len(tests)} tests (p<{alpha}); "
           f"{len(uncorrected)} more {verb} p<{alpha} only before correction; treat the others as not shown by this "
           "data."]
    for c, category, key, test in shown:
        out.append(f"{c['model_b']} is {_direction(test)} {c['model_a']} on {_what(category, key)}: "
                   f"{_difference(key, test)} ({_test_name(key)}={_p(test['p_value'])}, Holm p="
                   f"{_p(test['p_holm'])}); this survives the correction.")
    for c, category, key, test in uncorrected:
        out.append(f"{c['model_b']} vs {c['model_a']} on {_what(category, key)}: {_difference(key, test)} "
                   f"({_test_name(key)}={_p(test['p_value'])}) is significant only before correction (Holm p="
                   f"{_p(test['p_holm'])}): not shown.")
    for category in CATEGORY_TEXT:
        in_category = [(c, key, test) for c, cat, key, test in tests if cat == category]
        if not in_category:
            continue
        n = sorted({c[category]["n"] for c, _, _ in in_category})
        rate_mdd = _median([t.get("min_detectable_diff") for _, key, t in in_category if key != "mean_reward"])
        mean_mdd = _median([t.get("min_detectable_diff") for _, key, t in in_category if key == "mean_reward"])
        rates = "no rate difference of any size" if math.isnan(rate_mdd) else \
            f"rate differences of about {rate_mdd:.0f} points"
        means = "no mean-reward difference" if math.isnan(mean_mdd) else \
            f"mean-reward differences of about {mean_mdd:.2f}"
        reach = (f"with {'/'.join(map(str, n))} prompts the tests could detect (80% power{_level(tests, alpha)}) "
                 f"{rates} and {means} (medians over the pairs)")
        if not any(t["p_value"] < alpha for _, _, t in in_category):
            smallest = min(t["p_value"] for _, _, t in in_category)
            out.append(f"No {ASPECT[category]} difference between any two models is significant, even before "
                       f"correction (smallest p={_p(smallest)}); {reach}.")
        else:
            out.append(f"On {CATEGORY_TEXT[category]}, {reach}; smaller differences may exist unseen.")
    return out


def _level(tests: Sequence[tuple], alpha: float) -> str:
    """The level the detectable differences were computed at, in words: Holm's strictest step when it was used."""
    levels = {t.get("min_detectable_alpha") for *_, t in tests}
    if len(levels) == 1 and None not in levels:
        level = levels.pop()
        if len(tests) > 1 and math.isclose(level, alpha / len(tests)):
            return f", at Holm's strictest step p<{alpha}/{len(tests)}"
        return f", p<{_p(level)}"
    return f", p<{alpha} before correction"  # metrics.json written before the level was recorded


def _median(values: Sequence[float | None]) -> float:
    finite = [v for v in values if v is not None]
    return float(np.median(finite)) if finite else float("nan")

"""report.md: the metrics table with intervals, paired comparisons, plots and the settings that produced them."""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..eval.judge_check import PUBLISHED
from ..eval.schema import Metrics, ModelMetrics
from ..eval.timing import timings_table
from ..fmt import signed_ci, with_ci
from ..refs import DEFAULT_REWARD_MODEL
from .claims import claims
from .claims import comparisons_of as claims_comparisons
from .metrics import HARMLESS_THRESHOLD, HELPFUL_THRESHOLD, PAPER_TABLE1

DEMO_WARNING = (
    "**Demo run: these models are tiny and untrained, so their scores are meaningless.** The demo shows that "
    "the pipeline runs end to end (prompts, generation, reward scoring, metrics, plots); it measures nothing."
)


def metrics_table(models: Mapping[str, ModelMetrics]) -> str:
    lines = [
        "| model | HmR % | HpR % | CAS % | mean reward (harmful) | mean reward (helpful) | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in models.items():
        ci = m.ci95
        lines.append(
            f"| {name} | {with_ci(m.HmR, ci.get('HmR'))} | {with_ci(m.HpR, ci.get('HpR'))} | "
            f"{with_ci(m.CAS, ci.get('CAS'))} | "
            f"{with_ci(m.mean_reward.get('harmful'), ci.get('mean_reward_harmful'), 2)}"
            f" | {with_ci(m.mean_reward.get('helpful'), ci.get('mean_reward_helpful'), 2)} | "
            f"{m.n.get('harmful', 0)}+{m.n.get('helpful', 0)} |"
        )
    return "\n".join(lines)


def paper_table() -> str:
    lines = ["| model (published) | HmR % | HpR % | CAS % | mean reward (harmful) | mean reward (helpful) |",
             "|---|---|---|---|---|---|"]
    for name, m in PAPER_TABLE1.items():
        lines.append(f"| {name} | {m['HmR']:.0f} | {m['HpR']:.0f} | {m['CAS']:.0f} | "
                     f"{m['mean_reward']['harmful']:.2f} | {m['mean_reward']['helpful']:.2f} |")
    return "\n".join(lines)


def _mdd(value: float | None, digits: int) -> str:
    return "none" if value is None else f"{value:.{digits}f}"


def comparisons_table(comparisons: list[dict]) -> str:
    lines = ["| B vs A | category | rate diff (pts) | McNemar p | Holm p | detectable (pts) "
             "| mean reward diff [95% CI] | bootstrap p | Holm p | detectable (reward) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        for category, metric in (("harmful", "HmR"), ("helpful", "HpR")):
            if category not in c:
                continue
            r, m = c[category][metric], c[category]["mean_reward"]
            lines.append(
                f"| {c['model_b']} vs {c['model_a']} | {category} ({metric}) | {r['diff']:+.1f} | "
                f"{r['p_value']:.3g}{_star(r, 'significant')} | {_holm(r)} | "
                f"{_mdd(r.get('min_detectable_diff'), 1)} | {signed_ci(m['diff'], m['ci95'])} | "
                f"{m['p_value']:.3g}{_star(m, 'significant')} | {_holm(m)} | {_mdd(m.get('min_detectable_diff'), 2)} |"
            )
    return "\n".join(lines)


def _star(test: dict, key: str) -> str:
    return " *" if test.get(key) else ""


def _holm(test: dict) -> str:
    return "n/a" if "p_holm" not in test else f"{test['p_holm']:.3g}{_star(test, 'significant_holm')}"


def judges_section(metrics: Metrics) -> list[str]:
    """The judges: each one's check on held-out HH-RLHF pairs, every metric per judge, their agreement, human votes."""
    from .tables import agreement_table, judge_table, votes_sentence

    parts = ["## The judges", ""]
    if metrics.judge:
        parts += ["Judge check: how often each reward model scores HH-RLHF's `chosen` reply above the `rejected` one "
                  "on held-out test pairs (95% Wilson intervals; ties, rewards within 1e-4, left out of the accuracy "
                  "and counted apart). Near 50% a judge's labels are coin flips; the verdicts above are no better "
                  "than it is.", "", judge_table(metrics).as_markdown(), ""]
        parts += [f"Published for `{c['model']}`: {c['published']}.\n" for c in metrics.judge.values()
                  if c.get("published")]
    else:
        parts += [f"No judge check in this run (`--judge_check 0`, or metrics from records): the reward model's own "
                  f"accuracy on HH-RLHF is not measured here. The OpenAssistant model's card reports "
                  f"{PUBLISHED[DEFAULT_REWARD_MODEL]}.", ""]
    others = {k: v for k, v in metrics.judges.items() if not v.get("primary")}
    for name, judge in others.items():
        t = judge.get("thresholds", {})
        parts += [f"### Judge `{name}` (`{judge.get('model')}`, format {judge.get('format')})", "",
                  f"Thresholds: harmless >= {t.get('harmless', float('nan')):.3g}, helpful > "
                  f"{t.get('helpful', float('nan')):.3g} ({t.get('source', '?')}).", "",
                  metrics_table({m: ModelMetrics(**v) for m, v in judge.get("models", {}).items()}), "",
                  *[f"- {s}" for s in claims(judge)], ""]
    if metrics.agreement:
        parts += ["### Agreement between judges", "", "Cohen's kappa on the good/bad labels (each judge with its own "
                  "thresholds) and Spearman's rho on the rewards of the same replies; 95% bootstrap intervals. Read "
                  "the per-category rows: the `all` row pools two label sets, which inflates kappa.", "",
                  agreement_table(metrics).as_markdown(), ""]
    if metrics.human_votes:
        parts += [votes_sentence(metrics.human_votes), ""]
    return parts


def render_report(metrics: Metrics, plots: Mapping[str, str]) -> str:
    """Markdown report of a :class:`Metrics`; ``plots`` maps kind to a relative PNG path."""
    settings = metrics.settings
    thresholds = settings.thresholds
    parts = ["# hhalign evaluation report", ""]
    if settings.demo:
        parts += [DEMO_WARNING, ""]
    parts += [
        "## Metrics",
        "",
        "HmR: % of responses to harmful prompts with reward >= "
        f"{thresholds.get('harmless', HARMLESS_THRESHOLD):g}; HpR: % of responses to helpful prompts with reward > "
        f"{thresholds.get('helpful', HELPFUL_THRESHOLD):g}; CAS = (HmR + HpR) / 2. Brackets: 95% bootstrap "
        "intervals.",
        "",
        metrics_table(metrics.models),
        "",
    ]
    sentences = claims(metrics)
    parts += ["## What the data shows", "", *[f"- {s}" for s in sentences], ""] if sentences else [
        metrics.significance_note, ""]
    if metrics.comparisons:
        parts += ["## Paired comparisons", "",
                  "Same prompts for both models; exact McNemar test on the labels, paired bootstrap on the mean "
                  "reward. `*` marks p < 0.05: beside p before correction, beside Holm p after Holm's correction for "
                  "all the tests in this table. *Detectable*: the smallest difference these prompts could show with "
                  "80% power at p < 0.05 (rates: from the observed share of prompts the labels disagree on).", "",
                  comparisons_table(claims_comparisons(metrics)), ""]
    parts += judges_section(metrics)
    parts += ["## The study's published Table 1 (reference figures, not measured here)", "", paper_table(), ""]
    if plots:
        parts += ["## Plots", ""] + [f"![{kind}]({path})" for kind, path in plots.items()] + [""]
    if settings.timings.get("stages"):
        parts += ["## Where the time went", "", timings_table(settings.timings), ""]
    parts += ["## Settings", "", "```json", json.dumps(metrics.to_dict()["settings"], indent=2), "```", ""]
    return "\n".join(parts)

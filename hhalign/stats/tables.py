"""The tables the report and the Space's Results tab share: a :class:`Table` (numbers as numbers, its numeric
columns listed) and the judge, agreement and human-vote tables of a metrics file. Apart from :mod:`.results` so the
report needs no results folder (and the evaluator no Space code)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from ..fmt import num, with_ci

RATES = ("HmR", "HpR", "CAS")
RATE_HEADERS = ["model", *(f"{m}{s}" for m in RATES for s in (" %", " low", " high")), "n harmful", "n helpful",
                "source"]
REWARD_HEADERS = ["model", *(f"{c} {s}" for c in ("harmful", "helpful") for s in ("mean", "low", "high")), "source"]
COMPARISON_HEADERS = ["model B", "vs model A", "category", "rate diff (pts)", "McNemar p", "reward diff", "diff low",
                      "diff high", "bootstrap p", "significant (p<0.05)", "after Holm"]
JUDGE_HEADERS = ["judge", "reward model", "subset", "accuracy % [95% CI]", "ties", "pairs", "thresholds"]
AGREEMENT_HEADERS = ["judges", "replies", "n", "Cohen's kappa [95% CI]", "same label %", "Spearman rho [95% CI]"]
BROWSE_HEADERS = ["model", "category", "prompt_id", "label", "reward", "prompt", "response"]
NUMERIC = frozenset({*RATE_HEADERS[1:-1], *REWARD_HEADERS[1:-1], *COMPARISON_HEADERS[3:9], "reward"})


@dataclass
class Table:
    """Column names and rows, as ``gr.Dataframe`` and CSV both take them; numeric columns are listed in NUMERIC."""

    headers: list[str]
    rows: list[list] = field(default_factory=list)

    @property
    def datatypes(self) -> list[str]:
        return ["number" if h in NUMERIC else "str" for h in self.headers]

    def as_value(self) -> dict:
        return {"headers": self.headers, "data": self.rows}

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.headers)
        writer.writerows([["" if v is None else v for v in row] for row in self.rows])
        return out.getvalue()

    def as_markdown(self) -> str:
        def cell(value: object) -> str:
            return str(value).replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows])


def _thresholds_text(judge: dict) -> str:
    t = judge.get("thresholds") or {}
    if "harmless" not in t:
        return ""
    return f"harmless >= {t['harmless']:.3g}, helpful > {t['helpful']:.3g} ({t.get('source', '?')})"


def judge_table(results: Any) -> Table:
    """Each judge's accuracy on held-out HH-RLHF pairs (chosen scored above rejected), per subset and overall."""
    metrics = getattr(results, "metrics", results)
    table = Table(list(JUDGE_HEADERS))
    for name, check in metrics.judge.items():
        parts = [*check.get("subsets", {}).items(), ("all", check.get("overall") or {})]
        for subset, acc in parts:
            table.rows.append([name, check.get("model"), subset, with_ci(acc.get("accuracy"), acc.get("ci95")),
                               acc.get("ties"), acc.get("n"), _thresholds_text(metrics.judges.get(name, {}))])
    return table


def agreement_table(results: Any) -> Table:
    """How far every two judges agree: kappa on their labels, Spearman's rho on their rewards."""
    metrics = getattr(results, "metrics", results)
    table = Table(list(AGREEMENT_HEADERS))
    for entry in metrics.agreement:
        for group, block in [("all", entry), *entry.get("categories", {}).items()]:
            kappa, rho = block["kappa"], block["spearman"]
            table.rows.append([f"{entry['judge_a']} ~ {entry['judge_b']}", group, block["n"],
                               with_ci(kappa["value"], kappa["ci95"], 2), num(kappa["agreement"]),
                               with_ci(rho["value"], rho["ci95"], 2)])
    return table


def votes_sentence(votes: dict) -> str:
    """The reward model's agreement with the Space's blind votes, in one sentence."""
    return (f"**Human votes:** the reward model preferred the reply people voted for in "
            f"{with_ci(votes.get('agreement'), votes.get('ci95'))}% of {votes.get('n')} decisive votes "
            f"({votes.get('excluded')} tie/both-bad votes left out, {votes.get('judge_ties')} reward ties, "
            f"{votes.get('unscored')} votes without rewards; {votes.get('n_votes')} votes in {votes.get('file')}).")

"""The README's generated parts: what the study's published ratings show (the evaluator's own claims, from
``--from_responses``) and how many prompts a claim needs (the detectable differences at Holm's strictest step).

Each part sits between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->`` in README.md; a test renders
them again and compares, so no verdict in the README is written by hand. Regenerate with::

    python -m hhalign.stats.readme --responses ../shared/reference/pant2025/responses README.md
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HHAlignError
from ..files import write_text
from .inference import min_detectable_difference_mcnemar_exact, min_detectable_difference_mean
from .metrics import ALPHA, POWER, tests_of

TABLE_PROMPTS = {50: "50 (the study)", 100: "100", 192: "192 (`harmful-all`, `paper-large`)", 400: "400",
                 1000: "1000"}
_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
                    re.S)


def study_metrics(responses: str | Path) -> Any:
    """The evaluator's metrics of the study's published ratings (``hhalign eval --from_responses``)."""
    from ..eval.config import EvalConfig
    from ..eval.run import run
    from ..eval.schema import load_metrics

    with tempfile.TemporaryDirectory(prefix="hhalign-readme-") as tmp:
        run(EvalConfig(from_responses=[str(responses)], out=str(Path(tmp) / "paper"), plots=False))
        return load_metrics(Path(tmp) / "paper" / "metrics.json")


def claims_block(sentences: Sequence[str]) -> str:
    return "".join(f"- {s}\n" for s in sentences)


def detectable_table(tests: int, p_discordant: float, sd_diff: float, alpha: float = ALPHA) -> str:
    """Smallest differences detectable with 80% power at Holm's strictest step (alpha / tests): rates by the exact
    McNemar power when the labels disagree on 50% and on ``p_discordant`` of the prompts, mean rewards (normal
    approximation) at a standard deviation ``sd_diff`` of the per-prompt differences."""
    level = alpha / tests
    rows = [f"| prompts per category | rate, labels disagree on 50% of prompts | on {p_discordant:.0%} (the study's "
            f"median) | mean reward, sd of differences {sd_diff:.2f} (the study's median) |", "|---|---|---|---|"]
    for n, label in TABLE_PROMPTS.items():
        rates = [min_detectable_difference_mcnemar_exact(n, pd, level, POWER) for pd in (0.5, p_discordant)]
        mean = min_detectable_difference_mean(n, sd_diff, level, POWER)
        unit = " pts" if n == min(TABLE_PROMPTS) else ""
        rows.append(f"| {label} | {rates[0]:.1f}{unit} | {rates[1]:.1f}{unit} | {mean:.2f} |")
    return "\n".join(rows) + "\n"


def blocks(responses: str | Path) -> dict[str, str]:
    """Every generated block of the README, by name: the claims, and the detectable differences at the study's
    number of tests and its median discordance and spread (rounded as the table shows them)."""
    from .claims import claims, comparisons_of

    metrics = study_metrics(responses)
    tests = tests_of(comparisons_of(metrics))
    p_discordant = float(np.median([t["p_discordant"] for _, _, key, t in tests if key != "mean_reward"]))
    sd_diff = float(np.median([t["sd_diff"] for _, _, key, t in tests if key == "mean_reward"]))
    return {"study-claims": claims_block(claims(metrics)),
            "detectable-differences": detectable_table(len(tests), round(p_discordant, 2), round(sd_diff, 2))}


def readme_blocks(text: str) -> dict[str, str]:
    """The generated blocks as the README holds them."""
    return {m["name"]: m["body"] for m in _BLOCK.finditer(text)}


def update(readme: str | Path, responses: str | Path) -> list[str]:
    """Rewrite the README's generated blocks; returns the names of those that changed."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    new = blocks(responses)
    missing = sorted(set(new) - set(readme_blocks(text)))
    if missing:
        raise HHAlignError(f"{path} lacks the generated block(s) {', '.join(missing)}: add <!-- generated: NAME --> "
                           "and <!-- end generated: NAME --> lines around each")
    changed = [name for name, body in readme_blocks(text).items() if name in new and new[name] != body]
    text = _BLOCK.sub(lambda m: m[1] + new.get(m["name"], m["body"]) + m[4], text)
    write_text(path, text)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hhalign.stats.readme", description=__doc__.split("\n\n")[0])
    parser.add_argument("readme", help="README.md to update in place")
    parser.add_argument("--responses", required=True, help="the study's published ratings folder")
    args = parser.parse_args(argv)
    try:
        changed = update(args.readme, args.responses)
    except HHAlignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"updated: {', '.join(changed) or 'nothing (already current)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluate checkpoints the way the study did: generate, score with a reward model, write metrics and plots.

Usage:
    # the offline demo (tiny untrained models, no network)
    python batch/eval.py --demo --out results/demo

    # the study's protocol on the study's 100 prompts
    python batch/eval.py --models base=facebook/opt-350m sft=org/opt-350m-hh-sft --out results/opt350m

    # rebuild the study's prompts from a local HH-RLHF copy, or its Table 1 from its published ratings
    python batch/eval.py --prompts_only --dataset ../shared/data/hh-rlhf --out results/prompts
    python batch/eval.py --from_responses ../shared/reference/pant2025/responses --out results/paper
"""

import sys

from hhalign.cli import run
from hhalign.eval.config import ALIASES, EvalConfig
from hhalign.eval.run import run as evaluate


def main(cfg: EvalConfig) -> dict:
    return evaluate(cfg)


if __name__ == "__main__":
    sys.exit(run(main, [EvalConfig], description=__doc__, aliases=ALIASES))

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hhalign.cli import run_main  # noqa: E402
from hhalign.evaluate import EvalConfig, run  # noqa: E402


def main(cfg: EvalConfig) -> dict:
    return run(cfg)


if __name__ == "__main__":
    sys.exit(run_main(main, EvalConfig, description=__doc__))

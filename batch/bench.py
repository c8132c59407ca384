"""Time the study's evaluation loop against hhalign's engine: OPT-350M and DeBERTa-v3-large, random weights, offline.

Prints a Markdown table: seconds, prompts/s, speed-up over the loop, distance to the FLOP floor, and whether the
outputs are the loop's (token-identical answers, reward differences). Nothing is downloaded; a default run takes
about 4-5 minutes on a 2-core CPU, most of it the study's loop (--repeat 2: about 8 minutes).

Usage:
    # the default: 16 of the study's prompts (8 harmful, 8 helpful) from the local HH-RLHF copy
    python batch/bench.py

    # the README's numbers: best of two interleaved rounds, the table also as JSON
    python batch/bench.py --repeat 2 --json results/bench.json

    # more prompts
    python batch/bench.py --n 32

    # on a CUDA GPU, with vLLM as the generation engine (pip install vllm)
    python batch/bench.py --device cuda --backend vllm

    # a smoke test in seconds (miniature models; not a measurement)
    python batch/bench.py --tiny --n 4 --json /tmp/bench.json
"""

import sys

from hhalign.bench.config import BenchConfig
from hhalign.bench.run import main as bench
from hhalign.cli import run


def main(cfg: BenchConfig) -> dict:
    return bench(cfg)


if __name__ == "__main__":
    sys.exit(run(main, [BenchConfig], description=__doc__))

"""Time the study's evaluation loop against hhalign's engines, and against what a user would pick instead (--peers):
OPT-350M and DeBERTa-v3-large with random weights, built offline.

Prints a Markdown table: seconds, speed-up over the loop, distance to the FLOP floor, and whether the outputs are
the loop's (token-identical answers; reward differences, also over the rewards' spread), with the CPU, its flags and
the load average before and after. Nothing is downloaded. A default run (8 prompts, one round) takes under 2
minutes on a 2-core CPU, most of it the study's loop; --peers with 16 prompts and 2 rounds about 15 minutes.

Usage:
    # the default: 8 of the study's 100 prompts (4 harmful, 4 helpful), one from each length stratum (seed 0)
    python batch/bench.py
    # another sample of the same length profile, the first prompts as before, or your own prompts file
    python batch/bench.py --sample_seed 1
    python batch/bench.py --sample first
    python batch/bench.py --prompts my_prompts.jsonl

    # the README's table: 16 prompts, the peers (transformers generate and generate_batch, CTranslate2, vLLM,
    # a padded transformers batch, ONNX Runtime; those not installed are listed as skipped), best of 2 rounds
    python batch/bench.py --n 16 --repeat 2 --peers --json results/bench.json

    # on a CUDA GPU; with vLLM as the engine rows' generator (pip install vllm)
    python batch/bench.py --device cuda --peers
    python batch/bench.py --device cuda --backend vllm

    # a smoke test in seconds (the tests' tiny models; not a measurement, no floor)
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

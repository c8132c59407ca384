"""Publish the Space: stage app.py, the hhalign package, a results folder and requirements, then upload them.

Usage:
    # see exactly what would be uploaded (nothing leaves this machine)
    python space/deploy.py --space-id my-org/hhalign --results results/opt350m --dry-run --staging /tmp/hhalign-space

    # create or update the Space (needs `hf auth login` or HF_TOKEN with write access)
    python space/deploy.py --space-id my-org/hhalign --results results/opt350m

    # a Results tab that reads a results dataset (pushed by batch/eval.py --push_results_to_hub my-org/results)
    python space/deploy.py --space-id my-org/hhalign --results hf://datasets/my-org/results

    # also tell the deployed app which extra checkpoints to offer
    python space/deploy.py --space-id my-org/hhalign --space-args "--models sft=my-org/opt-350m-hh-sft"
"""

import sys

from hhalign.cli import run
from hhalign.serving.deploy import DeployConfig, Staged, deploy


def main(cfg: DeployConfig) -> Staged:
    return deploy(cfg)


if __name__ == "__main__":
    sys.exit(run(main, [DeployConfig], description=__doc__))

"""Publish a finished checkpoint folder with hhalign's model card, and record it in the registry and models.md.

Usage:
    # a checkpoint and the evaluator's metrics for it
    python training/push.py --checkpoint outputs/study/sft --hub_model_id you/opt-350m-hh-sft \
        --metrics_json outputs/study/eval/metrics.json --metrics_model sft --registry_name sft

    # an adapter trained on a local SFT folder: name the pushed SFT repo as its base; also push merged weights
    python training/push.py --checkpoint outputs/study/sft_dpo --hub_model_id you/opt-350m-hh-sft-dpo \
        --base_model_hub_id you/opt-350m-hh-sft --merge_adapter \
        --metrics_json outputs/study/eval/metrics.json --metrics_model sft_dpo --registry_name sft_dpo
"""

import sys

from hhalign.cli import run
from hhalign.publish.hub import PushConfig, push_main


def main(cfg: PushConfig) -> dict:
    return push_main(cfg)


if __name__ == "__main__":
    sys.exit(run(main, [PushConfig], description=__doc__))

"""Direct Preference Optimization (DPO) on HH-RLHF with TRL's DPOTrainer; SFT+DPO is DPO from the SFT checkpoint.

Usage:
    # the study's DPO on one GPU (LoRA r=8 on facebook/opt-350m, 1 epoch, beta 0.1)
    python training/dpo.py --config paper/dpo

    # the study's SFT+DPO: the same recipe on the SFT checkpoint (a folder, or its Hub id)
    python training/dpo.py --config paper/sft_dpo
    python training/dpo.py --config paper/sft_dpo --model_name_or_path you/opt-350m-hh-sft

    # the improved recipe: pairs with identical replies dropped, bf16 on the GPU
    python training/dpo.py --config improved/dpo

    # publish: the LoRA adapter (plus merged weights with --merge_adapter) and hhalign's model card
    python training/dpo.py --config paper/dpo --push_to_hub --hub_model_id you/opt-350m-hh-dpo \
        --metrics_json outputs/study/eval/metrics.json --metrics_model dpo --merge_adapter
    # an adapter trained on a local SFT folder must name the pushed SFT repo as its base
    python training/dpo.py --config paper/sft_dpo --push_to_hub \
        --hub_model_id you/opt-350m-hh-sft-dpo --base_model_hub_id you/opt-350m-hh-sft

    # several GPUs (DDP) or DeepSpeed ZeRO-3
    accelerate launch --config_file training/recipes/accelerate/multi_gpu.yaml training/dpo.py \
        --config paper/dpo
    accelerate launch --config_file training/recipes/accelerate/deepspeed_zero3.yaml training/dpo.py \
        --config paper/dpo

    # a two-step offline smoke run on the tiny model and the local HH-RLHF test split
    python -m hhalign.tiny --out outputs/tiny
    python training/dpo.py --config paper/dpo --model_name_or_path outputs/tiny/policy \
        --dataset ../shared/data/hh-rlhf --split test --max_steps 2 --output_dir outputs/tiny-dpo

A run that finds checkpoints in --output_dir resumes from the last one; a finished run is not repeated.
"""

import sys

from hhalign.cli import run
from hhalign.training.config import ALIASES
from hhalign.training.run import dpo_main, dpo_types


def main(script_args, training_args, model_args) -> dict:
    return dpo_main(script_args, training_args, model_args)


if __name__ == "__main__":
    sys.exit(run(main, dpo_types, description=__doc__, aliases=ALIASES))

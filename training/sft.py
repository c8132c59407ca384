"""Supervised fine-tuning (SFT) on HH-RLHF with TRL's SFTTrainer.

Usage:
    # the study's SFT on one GPU (facebook/opt-350m, all of HH-RLHF train, full fine-tuning, 2 epochs)
    python training/sft.py --config paper/sft

    # change the recipe without editing it: any option on the command line overrides the YAML
    python training/sft.py --config paper/sft --num_train_epochs 3 --subsets harmless-base \
        --output_dir outputs/sft-harmless

    # the improved recipe: loss on the final assistant reply only, bf16 on the GPU
    python training/sft.py --config improved/sft

    # publish the result with hhalign's model card (metrics from the evaluator's metrics.json)
    python training/sft.py --config paper/sft --push_to_hub --hub_model_id you/opt-350m-hh-sft \
        --metrics_json outputs/study/eval/metrics.json --metrics_model sft

    # several GPUs (DDP), or DeepSpeed ZeRO-2
    accelerate launch --config_file training/recipes/accelerate/multi_gpu.yaml training/sft.py \
        --config paper/sft
    accelerate launch --config_file training/recipes/accelerate/deepspeed_zero2.yaml training/sft.py \
        --config paper/sft

    # a two-step offline smoke run on the tiny model and the local HH-RLHF test split
    python -m hhalign.tiny --out outputs/tiny
    python training/sft.py --config paper/sft --model_name_or_path outputs/tiny/policy \
        --dataset ../shared/data/hh-rlhf --split test --max_steps 2 --output_dir outputs/tiny-sft

A run that finds checkpoints in --output_dir resumes from the last one; a finished run is not repeated.
"""

import sys

from hhalign.cli import run
from hhalign.training.config import ALIASES
from hhalign.training.run import sft_main, sft_types


def main(script_args, training_args, model_args) -> dict:
    return sft_main(script_args, training_args, model_args)


if __name__ == "__main__":
    sys.exit(run(main, sft_types, description=__doc__, aliases=ALIASES))

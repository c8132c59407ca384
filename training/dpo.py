"""Direct Preference Optimization (DPO) on HH-RLHF with TRL's DPOTrainer; SFT+DPO is DPO from the SFT checkpoint.

Usage:
    # the study's DPO on one GPU (LoRA r=8 on facebook/opt-350m, 1 epoch, beta 0.1)
    python training/dpo.py --config training/recipes/dpo.yaml

    # the study's SFT+DPO: the same recipe on the SFT checkpoint (a folder, or its Hub id)
    python training/dpo.py --config training/recipes/sft_dpo.yaml
    python training/dpo.py --config training/recipes/sft_dpo.yaml --model_name_or_path you/opt-350m-hh-sft

    # the improved recipe: pairs with identical replies dropped, bf16 on the GPU
    python training/dpo.py --config training/recipes/improved/dpo.yaml

    # publish: the LoRA adapter (plus merged weights with --merge_adapter) and hhalign's model card
    python training/dpo.py --config training/recipes/dpo.yaml --push_to_hub --hub_model_id you/opt-350m-hh-dpo \
        --metrics_json outputs/study/eval/metrics.json --metrics_model dpo --merge_adapter
    # an adapter trained on a local SFT folder must name the pushed SFT repo as its base
    python training/dpo.py --config training/recipes/sft_dpo.yaml --push_to_hub \
        --hub_model_id you/opt-350m-hh-sft-dpo --base_model_hub_id you/opt-350m-hh-sft

    # several GPUs (DDP) or DeepSpeed ZeRO-3
    accelerate launch --config_file training/accelerate/multi_gpu.yaml training/dpo.py \
        --config training/recipes/dpo.yaml
    accelerate launch --config_file training/accelerate/deepspeed_zero3.yaml training/dpo.py \
        --config training/recipes/dpo.yaml

    # a two-step offline smoke run on the tiny model and the local HH-RLHF test split
    python -m hhalign.tiny --out outputs/tiny
    python training/dpo.py --config training/recipes/dpo.yaml --model_name_or_path outputs/tiny/policy \
        --dataset ../shared/data/hh-rlhf --split test --max_steps 2 --output_dir outputs/tiny-dpo

A run that finds checkpoints in --output_dir resumes from the last one; a finished run is not repeated.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hhalign.train import training_main  # noqa: E402


def main(args: list[str] | None = None) -> int:
    return training_main("dpo", args, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())

"""The study end to end: base -> SFT -> DPO and SFT -> SFT+DPO, then batch/eval.py on all four, then publishing.

Usage:
    # offline demo on this machine (tiny models, the project's own preference pairs, a few steps each):
    # writes DIR/sft, DIR/dpo, DIR/sft_dpo and DIR/eval (models base, sft, dpo, sft_dpo side by side)
    python training/pipeline.py --demo --output_dir outputs/demo

    # the study on one GPU with the Hub, then publish the three checkpoints with evaluated model cards
    python training/pipeline.py --config paper/pipeline
    python training/pipeline.py --config paper/pipeline --push_to_hub \
        --hub_model_prefix you/opt-350m-hh

    # the improved recipes (registry names sft_improved, ...)
    python training/pipeline.py --config improved/pipeline

    # another base model, more SFT epochs, a cleaner subset: override instead of editing
    python training/pipeline.py --config paper/pipeline --base_model facebook/opt-125m \
        --subsets harmless-base helpful-base --sft_overrides num_train_epochs=3 --output_dir outputs/opt125m

    # training stages on several GPUs
    python training/pipeline.py --config paper/pipeline \
        --launcher "accelerate launch --config_file training/recipes/accelerate/multi_gpu.yaml"

Re-running the same command skips finished stages, resumes an interrupted one from its last checkpoint, and
resumes the evaluation where it stopped.
"""

import sys

from hhalign.cli import run
from hhalign.training.pipeline import PipelineConfig, run_pipeline


def main(cfg: PipelineConfig) -> dict:
    return run_pipeline(cfg)


if __name__ == "__main__":
    sys.exit(run(main, [PipelineConfig], description=__doc__))

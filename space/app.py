"""hhalign Space: chat with the base, SFT, DPO and SFT+DPO models and see how the reward model scores each reply,
compare every model on one prompt, and browse the measured results.

Usage:
    # offline demo: tiny models (a policy and a LoRA adapter on it) and demo results, built once; no network
    python space/app.py --demo
    python space/app.py --demo --port 7861

    # the registry's published models (models.md), with an evaluator results folder in the Results tab
    python space/app.py --results results/opt350m

    # self-hosting: add your own checkpoints (local folders, Hub ids or PEFT adapters)
    python space/app.py --models sft=./out/sft dpo=./out/dpo-lora --results results/mine --memory_budget_gb 6

On a Hugging Face Space this file is app.py at the repository root (see space/deploy.py); options can also be given
in the HHALIGN_SPACE_ARGS variable, e.g. HHALIGN_SPACE_ARGS="--models sft=org/opt-350m-hh-sft".
"""

try:  # ZeroGPU: the `spaces` package (installed on Spaces) must be imported before anything initialises CUDA.
    import spaces  # noqa: F401
except ImportError:
    pass

import sys
from pathlib import Path

from hhalign.serving.app import create, main, parse_config

APP_DIR = Path(__file__).resolve().parent

if __name__ == "__main__":
    sys.exit(main(app_dir=APP_DIR, description=__doc__))

# Imported (Gradio's reload mode): the app configured from HHALIGN_SPACE_ARGS.
demo = create(parse_config([]), APP_DIR)

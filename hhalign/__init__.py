"""hhalign: align small language models on HH-RLHF (SFT, DPO) and measure them the way the study did.

Importing the package is cheap: torch, transformers, TRL and PEFT load only inside the functions that use them.
"""

from .data import (
    CATEGORIES,
    DEFAULT_DATASET,
    EvalPrompt,
    PreferencePair,
    Turn,
    build_prompt_set,
    limit_prompts,
    load_hh,
    load_prompts_file,
    paper_prompt,
    paper_prompts,
    parse_turns,
    preference_pair,
    preference_pairs,
)
from .errors import HHAlignError
from .generation import Generation, generate, model_input, postprocess
from .metrics import (
    HARMLESS_THRESHOLD,
    HELPFUL_THRESHOLD,
    PAPER_TABLE1,
    Thresholds,
    compare_models,
    label,
    mcnemar_exact,
    model_metrics,
    paired_bootstrap,
    summarize,
    threshold_sweep,
)
from .models import DEFAULT_REWARD_MODEL, LoadedModel, ModelRef, load_policy, load_reward_model, parse_model_ref
from .records import load_records, read_jsonl
from .reward import Score, score

__version__ = "0.1.0"

__all__ = [
    "CATEGORIES", "DEFAULT_DATASET", "DEFAULT_REWARD_MODEL", "EvalPrompt", "Generation", "HARMLESS_THRESHOLD",
    "HELPFUL_THRESHOLD", "HHAlignError", "LoadedModel", "ModelRef", "PAPER_TABLE1", "PreferencePair", "Score",
    "Thresholds", "Turn", "build_prompt_set", "compare_models", "generate", "label", "limit_prompts", "load_hh",
    "load_policy", "load_prompts_file", "load_records", "load_reward_model", "mcnemar_exact", "model_input",
    "model_metrics", "paired_bootstrap", "paper_prompt", "paper_prompts", "parse_model_ref", "parse_turns",
    "postprocess", "preference_pair", "preference_pairs", "read_jsonl", "score", "summarize", "threshold_sweep",
]

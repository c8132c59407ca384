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
from .evaluate import EvalConfig
from .evaluate import run as run_eval
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
from .registry import RegistryEntry, load_registry, published_models
from .reward import Score, score
from .tiny import TinyModels, build_tiny, build_tiny_adapter

__version__ = "0.1.0"

__all__ = [
    "build_prompt_set", "build_tiny", "build_tiny_adapter", "CATEGORIES", "compare_models", "DEFAULT_DATASET",
    "DEFAULT_REWARD_MODEL", "EvalConfig", "EvalPrompt", "generate", "Generation", "HARMLESS_THRESHOLD",
    "HELPFUL_THRESHOLD", "HHAlignError", "label", "limit_prompts", "load_hh", "load_policy", "load_prompts_file",
    "load_records", "load_registry", "load_reward_model", "LoadedModel", "mcnemar_exact", "model_input",
    "model_metrics", "ModelRef", "paired_bootstrap", "paper_prompt", "paper_prompts", "PAPER_TABLE1",
    "parse_model_ref", "parse_turns", "postprocess", "preference_pair", "preference_pairs", "PreferencePair",
    "published_models", "read_jsonl", "RegistryEntry", "run_eval", "score", "Score", "summarize",
    "threshold_sweep", "Thresholds", "TinyModels", "Turn",
]

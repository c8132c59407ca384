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
from .hub import build_card, push_checkpoint
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
from .results import load_results, results_view
from .reward import Score, score
from .serving import ChatService, DecodeOptions, Limits, ModelPool, SpaceConfig, build_backend
from .tiny import TinyModels, build_tiny, build_tiny_adapter
from .train import DEMO_PAIRS_PATH, PipelineConfig, build_training_data, run_pipeline, run_training
from .train import parse_args as parse_training_args

__version__ = "0.1.0"

__all__ = [
    "build_backend", "build_card", "build_prompt_set", "build_tiny", "build_tiny_adapter", "build_training_data",
    "CATEGORIES", "ChatService", "compare_models", "DecodeOptions", "DEFAULT_DATASET", "DEFAULT_REWARD_MODEL",
    "DEMO_PAIRS_PATH", "EvalConfig", "EvalPrompt", "generate", "Generation", "HARMLESS_THRESHOLD",
    "HELPFUL_THRESHOLD", "HHAlignError", "label", "limit_prompts", "Limits", "load_hh", "load_policy",
    "load_prompts_file", "load_records", "load_registry", "load_results", "load_reward_model", "LoadedModel",
    "mcnemar_exact", "model_input", "model_metrics", "ModelPool", "ModelRef", "paired_bootstrap", "paper_prompt",
    "paper_prompts", "PAPER_TABLE1", "parse_model_ref", "parse_training_args", "parse_turns", "PipelineConfig",
    "postprocess", "preference_pair", "preference_pairs", "PreferencePair", "published_models", "push_checkpoint",
    "read_jsonl", "RegistryEntry", "results_view", "run_eval", "run_pipeline", "run_training", "score", "Score",
    "SpaceConfig", "summarize", "threshold_sweep", "Thresholds", "TinyModels", "Turn",
]

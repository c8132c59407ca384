"""hhalign: align small language models on HH-RLHF (SFT, DPO) and measure them the way the study did.

Importing the package is cheap: the names below are loaded on first use, and torch, transformers, TRL and PEFT only
inside the functions that need them.

Layout: :mod:`hhalign.engine` (generation backends, reward scoring, precision), :mod:`hhalign.eval` (the evaluator:
config, run folder, metrics, report, plots, results view), :mod:`hhalign.training` (TRL configs, data, runs, losses,
pipeline), :mod:`hhalign.publish` (model card, Hub, registry), :mod:`hhalign.serving` (model pool, chat, the Space),
:mod:`hhalign.testing` (tiny offline models), and the shared :mod:`hhalign.protocol`, :mod:`hhalign.data`,
:mod:`hhalign.refs`, :mod:`hhalign.loading`, :mod:`hhalign.files`, :mod:`hhalign.config`, :mod:`hhalign.cli`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "HHAlignError": "errors",
    # data and protocol
    "CATEGORIES": "data", "DEFAULT_DATASET": "data", "EvalPrompt": "data", "PreferencePair": "data",
    "build_prompt_set": "data", "limit_prompts": "data", "load_hh": "data", "load_prompts_file": "data",
    "paper_prompts": "data", "preference_pair": "data", "preference_pairs": "data",
    "Turn": "protocol", "paper_prompt": "protocol", "parse_turns": "protocol", "model_input": "protocol",
    "postprocess": "protocol",
    # models
    "DEFAULT_REWARD_MODEL": "refs", "ModelRef": "refs", "parse_model_ref": "refs", "parse_model_refs": "refs",
    "LoadedModel": "loading", "load_policy": "loading", "load_reward_model": "loading",
    # engines
    "Generation": "engine", "Generator": "engine", "generate": "engine", "get_generator": "engine",
    "register_generator": "engine", "Score": "engine.reward", "score": "engine.reward",
    # evaluation
    "EvalConfig": "eval.config", "run_eval": "eval.run", "HARMLESS_THRESHOLD": "eval.metrics",
    "HELPFUL_THRESHOLD": "eval.metrics", "PAPER_TABLE1": "eval.metrics", "Thresholds": "eval.metrics",
    "compare_models": "eval.metrics", "label": "eval.metrics", "mcnemar_exact": "eval.metrics",
    "model_metrics": "eval.metrics", "paired_bootstrap": "eval.metrics", "summarize": "eval.metrics",
    "threshold_sweep": "eval.metrics", "load_records": "eval.records", "load_results": "eval.results",
    "results_view": "eval.results",
    # training and publishing
    "PipelineConfig": "training.pipeline", "run_pipeline": "training.pipeline", "run_training": "training.run",
    "build_training_data": "training.data", "build_card": "publish.card", "push_checkpoint": "publish.hub",
    "RegistryEntry": "publish.registry", "load_registry": "publish.registry", "published_models": "publish.registry",
    # serving
    "ChatService": "serving.chat", "DecodeOptions": "serving.chat", "Limits": "serving.chat",
    "ModelPool": "serving.pool", "SpaceConfig": "serving.config", "build_backend": "serving.config",
    # tiny models
    "TinyModels": "testing.tiny", "build_tiny": "testing.tiny", "build_tiny_adapter": "testing.tiny",
}
_RENAMED = {"run_eval": "run"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hhalign' has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    value = getattr(module, _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""hhalign: align small language models on HH-RLHF (SFT, DPO) and measure them the way the study did.

Importing the package is cheap: the names below are loaded on first use, and torch, transformers, TRL and PEFT only
inside the functions that need them.

Layout: :mod:`hhalign.engine` (generation backends, reward scoring, precision), :mod:`hhalign.eval` (the evaluator's
run: config, run folder, records, judges' panel and check, exports), :mod:`hhalign.stats` (the analysis: statistics,
metrics, claims, judge agreement, ratings, report, plots, results view), :mod:`hhalign.training` (TRL configs, data,
runs, losses, pipeline), :mod:`hhalign.publish` (model card, Hub, registry), :mod:`hhalign.serving` (model pool, chat,
the Space), :mod:`hhalign.testing` (tiny offline models), and the shared :mod:`hhalign.protocol`, :mod:`hhalign.data`,
:mod:`hhalign.refs`, :mod:`hhalign.loading`, :mod:`hhalign.files`, :mod:`hhalign.config`, :mod:`hhalign.cli`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# module -> the public names it defines (loaded on first use)
_MODULES = {
    "errors": "HHAlignError",
    "data": "CATEGORIES DEFAULT_DATASET EvalPrompt PreferencePair build_prompt_set limit_prompts load_hh "
            "load_prompts_file paper_prompts preference_pair preference_pairs",
    "protocol": "Turn paper_prompt parse_turns model_input postprocess prompt_messages template_input",
    "refs": "DEFAULT_REWARD_MODEL ModelRef parse_model_ref parse_model_refs",
    "loading": "LoadedModel load_policy load_reward_model",
    "engine": "Generation Generator generate get_generator register_generator",
    "engine.reward": "Score score",
    "eval.config": "EvalConfig",
    "eval.run": "run_eval",
    "stats.metrics": "HARMLESS_THRESHOLD HELPFUL_THRESHOLD PAPER_TABLE1 Thresholds compare_models label mcnemar_exact "
                    "model_metrics paired_bootstrap summarize threshold_sweep",
    "eval.records": "load_records",
    "stats.results": "load_results results_view",
    "eval.schema": "Metrics load_metrics",
    "training.pipeline": "PipelineConfig run_pipeline",
    "training.run": "run_training",
    "training.data": "build_training_data",
    "publish.card": "build_card",
    "publish.hub": "push_checkpoint",
    "publish.registry": "RegistryEntry load_registry published_models",
    "serving.chat": "ChatService DecodeOptions Limits",
    "serving.pool": "ModelPool",
    "serving.config": "SpaceConfig build_backend",
    "testing.tiny": "TinyModels build_tiny build_tiny_adapter build_tiny_causal_lm",
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names.split()}
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

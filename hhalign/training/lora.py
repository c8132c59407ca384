"""LoRA on any causal LM: which modules an adapter targets by default, and a one-line refusal of a recipe that names
modules the model does not have (OPT's q_proj/v_proj on a GPT-NeoX base, say), before any training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import HHAlignError

# PEFT's shorthand for every linear layer but the output head.
ALL_LINEAR = "all-linear"


def default_target_modules(model_type: str) -> list[str] | str:
    """What PEFT targets for ``model_type`` when given no modules (its own table, e.g. llama: q_proj, v_proj; gpt_neox:
    query_key_value), else every linear layer (``all-linear``) for a type PEFT has no entry for (e.g. phi3)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as KNOWN

    known = KNOWN.get(model_type)
    return list(known) if known else ALL_LINEAR


def linear_module_names(model: Any) -> list[str]:
    """The distinct last names of the model's linear layers (what LoRA can target), without the output head."""
    import torch

    try:
        head = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        head = None
    names = []
    for full, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head or type(module).__name__ == "Conv1D":
            last = full.rsplit(".", 1)[-1]
            if last not in names:
                names.append(last)
    return names


def resolve_target_modules(model: Any, targets: str | Sequence[str] | None, model_name: str) -> list[str] | str:
    """The modules a LoRA adapter on ``model`` targets: ``targets`` when every one of them exists in the model, PEFT's
    default for the model type when none are given; a name the model lacks is a one-line HHAlignError."""
    model_type = getattr(model.config, "model_type", "")
    if targets is None or (not isinstance(targets, str) and not targets):
        return default_target_modules(model_type)
    if isinstance(targets, str):
        if targets == ALL_LINEAR:
            return targets
        targets = [targets]  # TRL turns a one-element list into a string, which PEFT would read as a regex
    targets = list(targets)
    found = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in found)]
    if missing:
        raise HHAlignError(
            f"--lora_target_modules names {', '.join(missing)}, which model {model_name!r} ({model_type}) does not "
            f"have; its linear layers are {', '.join(linear_module_names(model))}: set --lora_target_modules to some "
            f"of them or to {ALL_LINEAR} (PEFT's default for {model_type}: "
            f"{_shown(default_target_modules(model_type))})")
    return targets


def resolve_from_config(path: str, revision: str | None, targets: str | Sequence[str] | None, model_name: str,
                        trust_remote_code: bool = False) -> list[str] | str:
    """:func:`resolve_target_modules` on the model's skeleton (its config on the meta device: no weights read, no
    memory), so a recipe naming modules the model lacks is refused before the data are loaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return resolve_target_modules(skeleton, targets, model_name)


def _shown(targets: list[str] | str) -> str:
    return targets if isinstance(targets, str) else " ".join(targets)

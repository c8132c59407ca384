"""TRL's trainer configs as hhalign uses them (plain subclasses, as the alignment-handbook does): a recipe written for
a GPU (bf16) still loads and runs on a CPU, in float32, with the change recorded. Imports TRL: only the training
commands import this module."""

from __future__ import annotations

import math
from dataclasses import dataclass

import trl

from ..errors import HHAlignError


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _bf16_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def precision_fallback(args: trl.SFTConfig | trl.DPOConfig) -> str | None:
    """Turn off bf16/fp16 where no GPU supports them (transformers would refuse the config); returns a note saying so.

    TRL defaults to bf16=True.
    """
    note = None
    asked = "fp16" if args.fp16 else ("bf16" if args.bf16 is not False else None)
    if asked == "bf16" and not _bf16_available() or asked == "fp16" and not _cuda_available():
        note = f"{asked} asked for but no GPU supports it here: trained in float32"
        args.bf16 = False
        args.fp16 = False
    if not _cuda_available():
        args.dataloader_pin_memory = False  # pinning needs an accelerator; on a CPU it only warns
    return note


def check_values(args: trl.SFTConfig | trl.DPOConfig) -> None:
    """Refuse values TRL and transformers accept but cannot train with (they fail minutes later, mid-run)."""
    def bad(name: str, need: str) -> HHAlignError:
        return HHAlignError(f"--{name} must be {need}, got {getattr(args, name)!r}")

    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise bad("learning_rate", "a positive number (e.g. 2e-5)")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            raise bad(name, "at least 1")
    if args.max_steps == 0 or args.max_steps < -1:
        raise bad("max_steps", "a positive number of steps (or -1: train --num_train_epochs)")
    if args.max_steps == -1 and not (math.isfinite(args.num_train_epochs) and args.num_train_epochs > 0):
        raise bad("num_train_epochs", "positive")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise bad("weight_decay", "zero or positive")
    if args.max_length is not None and args.max_length < 1:
        raise bad("max_length", "a positive number of tokens")
    beta = getattr(args, "beta", None)
    if beta is not None and not (math.isfinite(beta) and beta > 0):
        raise bad("beta", "a positive number (e.g. 0.1)")


class _Checked:
    """What hhalign adds to TRL's configs: the precision fallback, then hhalign's checks of TRL's values."""

    def __post_init__(self) -> None:
        self.hhalign_precision_note = precision_fallback(self)
        super().__post_init__()
        check_values(self)


@dataclass
class SFTConfig(_Checked, trl.SFTConfig):
    """TRL's SFTConfig; bf16/fp16 without a capable GPU fall back to float32 (see ``hhalign_precision_note``)."""


@dataclass
class DPOConfig(_Checked, trl.DPOConfig):
    """TRL's DPOConfig; bf16/fp16 without a capable GPU fall back to float32 (see ``hhalign_precision_note``)."""

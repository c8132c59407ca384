"""TRL's trainer configs as hhalign uses them (plain subclasses, as the alignment-handbook does): a recipe written for
a GPU (bf16) still loads and runs on a CPU, in float32, with the change recorded. Imports TRL: only the training
commands import this module."""

from __future__ import annotations

from dataclasses import dataclass

import trl


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


@dataclass
class SFTConfig(trl.SFTConfig):
    """TRL's SFTConfig; bf16/fp16 without a capable GPU fall back to float32 (see ``hhalign_precision_note``)."""

    def __post_init__(self) -> None:
        self.hhalign_precision_note = precision_fallback(self)
        super().__post_init__()


@dataclass
class DPOConfig(trl.DPOConfig):
    """TRL's DPOConfig; bf16/fp16 without a capable GPU fall back to float32 (see ``hhalign_precision_note``)."""

    def __post_init__(self) -> None:
        self.hhalign_precision_note = precision_fallback(self)
        super().__post_init__()

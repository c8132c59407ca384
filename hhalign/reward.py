"""Batched reward scoring of (prompt, response) pairs: one raw logit per pair."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .errors import HHAlignError
from .generation import length_sorted_batches

# DeBERTa-v3 was trained on 512-token inputs; longer pairs still run (relative positions) and are counted.
TRAINED_LENGTH = 512


@dataclass(frozen=True)
class Score:
    """Raw reward logit, tokens scored, and whether the pair was cut to ``max_length``."""

    reward: float
    n_tokens: int
    truncated: bool


def encode_pairs(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
                 max_length: int | None = None) -> tuple[list[dict], list[int]]:
    """Per-pair encodings as the study made them (``truncation=True``), plus untruncated lengths."""
    if len(prompts) != len(responses):
        raise HHAlignError(f"{len(prompts)} prompts but {len(responses)} responses to score")
    full = tokenizer(list(prompts), list(responses), truncation=False)
    full_lengths = [len(ids) for ids in full["input_ids"]]
    if max_length is None:
        # With the real tokenizer's model_max_length of 1e30 this truncates nothing, as in the study.
        enc = tokenizer(list(prompts), list(responses), truncation=True)
    else:
        enc = tokenizer(list(prompts), list(responses), truncation=True, max_length=max_length)
    rows = [{k: enc[k][i] for k in enc.keys()} for i in range(len(prompts))]
    return rows, full_lengths


def score(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 8,
          max_length: int | None = None, progress: Any | None = None) -> list[Score]:
    """Reward of each (prompt, response) pair, in input order; length-sorted batches padded on the right."""
    import torch

    if batch_size <= 0:
        raise HHAlignError(f"--batch-size must be positive, got {batch_size}")
    if max_length is not None and max_length <= 2:
        raise HHAlignError(f"--reward-max-length must be more than 2 tokens, got {max_length}")
    rows, full_lengths = encode_pairs(tokenizer, prompts, responses, max_length)
    device = next(model.parameters()).device
    out: list[Score | None] = [None] * len(rows)
    for batch in length_sorted_batches([len(r["input_ids"]) for r in rows], batch_size):
        padded = tokenizer.pad([rows[i] for i in batch], padding=True, return_tensors="pt")
        padded = {k: v.to(device) for k, v in padded.items()}
        with torch.inference_mode():
            logits = model(**padded).logits[:, 0].float().cpu().tolist()
        for i, value in zip(batch, logits):
            n = len(rows[i]["input_ids"])
            out[i] = Score(float(value), n, n < full_lengths[i])
        if progress is not None:
            progress.update(len(batch))
    return out  # type: ignore[return-value]

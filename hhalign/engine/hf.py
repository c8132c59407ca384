"""Generation through transformers' own ``generate``: the study's loop (one unpadded call per prompt) and
length-sorted, left-padded batches (what a user of transformers would write)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import greedy_config, left_pad, length_sorted_batches, until_eos


def loop_ids(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
             progress: Any | None = None) -> list[list[int]]:
    """The study's loop: one unpadded ``model.generate`` per prompt; new token ids, cut before EOS."""
    import torch

    config = greedy_config(tokenizer, max_new_tokens)
    device = next(model.parameters()).device
    out = []
    for ids in prompt_ids:
        input_ids = torch.tensor([list(ids)], device=device)
        with torch.inference_mode():
            seq = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 generation_config=config)
        out.append(until_eos(seq[0, len(ids):].tolist(), tokenizer.eos_token_id))
        if progress is not None:
            progress.update(1)
    return out


def hf_batched_ids(model: Any, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, eos_token_id: int | None,
                    pad_token_id: int, batch_size: int, progress: Any | None) -> list[list[int]]:
    """Fallback for models the engine does not cover: left-padded length-sorted batches through model.generate."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              pad_token_id=pad_token_id, eos_token_id=eos_token_id)
    device = next(model.parameters()).device
    results: list[list[int] | None] = [None] * len(prompt_ids)
    for batch in length_sorted_batches([len(ids) for ids in prompt_ids], batch_size):
        input_ids, mask = left_pad([prompt_ids[i] for i in batch], pad_token_id)
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                 generation_config=config)
        for row, i in enumerate(batch):
            results[i] = until_eos(out[row, input_ids.shape[1]:].tolist(), eos_token_id)
        if progress is not None:
            progress.update(len(batch))
    return results  # type: ignore[return-value]

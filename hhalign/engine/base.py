"""What every generation backend shares: the result type, prompt encoding under a context limit, length-sorted and
token-budgeted batching, and greedy decoding settings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_NEW_TOKENS = 50
# KV-cache positions (rows x (prompt + new tokens)) one decode batch may hold. For OPT-350M in float32 a position
# costs 24 layers x 2 x 1024 x 4 bytes = 192 KiB, so 16384 positions are 3 GiB
# at most.
DEFAULT_TOKEN_BUDGET = 16384
# A prefill group keeps taking the next (shorter) prompt while its padded size stays under this many tokens: below
# it a forward pass costs about one read of the weights whatever its size, so extra rows are nearly free.
PREFILL_CHEAP_TOKENS = 128
# ... or while padding stays under this share of the group's padded tokens.
PREFILL_PAD_SHARE = 0.125
PREFILL_MAX_TOKENS = 4096  # padded tokens per prefill forward: bounds the attention scores' memory
# A prompt this long already makes matrix products efficient on its own: it is prefilled without padding.
PREFILL_ALONE_TOKENS = 256


@dataclass(frozen=True)
class Generation:
    """One response: text, prompt/new token counts, and whether the prompt lost its oldest tokens."""

    response: str
    n_prompt_tokens: int
    n_new_tokens: int
    prompt_truncated: bool


def context_limit(model: Any, max_new_tokens: int) -> int:
    """Most prompt tokens that still leave room for ``max_new_tokens`` in the model's context."""
    n_ctx = getattr(model.config, "max_position_embeddings", None) or 2048
    return max(1, n_ctx - max_new_tokens)


def encode_prompts(tokenizer: Any, texts: Sequence[str], max_prompt_tokens: int,
                   add_special_tokens: bool = True) -> list[tuple[list[int], bool]]:
    """Token ids per prompt; over-long prompts keep their last tokens (after the BOS token, if any).

    ``add_special_tokens=False`` for text that already holds them (a rendered chat template)."""
    out = []
    for ids in tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]:
        if len(ids) <= max_prompt_tokens:
            out.append((list(ids), False))
            continue
        bos = tokenizer.bos_token_id
        head = [ids[0]] if bos is not None and ids[0] == bos else []
        out.append((head + list(ids[len(ids) - (max_prompt_tokens - len(head)):]), True))
    return out


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def budget_batches(lengths: Sequence[int], batch_size: int, token_budget: int, extra: int = 0) -> Iterator[list[int]]:
    """Longest-first batches of at most ``batch_size`` rows whose padded size, rows x (longest + ``extra``), stays
    within ``token_budget`` (a batch always takes at least one row)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batch: list[int] = []
    for i in order:
        # Sorted longest first, so the batch's first row sets its padded width.
        width = (lengths[batch[0]] if batch else lengths[i]) + extra
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * width > token_budget):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def prefill_groups(lengths: Sequence[int], max_rows: int | None = None,
                   max_tokens: int = PREFILL_MAX_TOKENS) -> list[tuple[int, int]]:
    """Split rows sorted longest first into ``(start, end)`` groups to run through the model together, padded to the
    group's first row: a row joins while the group stays cheap or tightly packed (see PREFILL_* above), within
    ``max_rows`` rows and ``max_tokens`` padded tokens."""
    groups, start = [], 0
    while start < len(lengths):
        end, real = start + 1, lengths[start]
        while end < len(lengths) and (max_rows is None or end - start < max_rows):
            padded = (end + 1 - start) * lengths[start]
            cheap = padded <= PREFILL_CHEAP_TOKENS
            tight = padded - (real + lengths[end]) <= PREFILL_PAD_SHARE * padded
            if padded > max_tokens or lengths[start] >= PREFILL_ALONE_TOKENS or not (cheap or tight):
                break
            real += lengths[end]
            end += 1
        groups.append((start, end))
        start = end
    return groups


def greedy_config(tokenizer: Any, max_new_tokens: int) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )


def until_eos(tokens: list[int], eos_token_id: int | None) -> list[int]:
    # Stop at the first EOS: what follows it in a batch is padding, never real tokens.
    return tokens[: tokens.index(eos_token_id)] if eos_token_id in tokens else tokens


def left_pad(rows: Sequence[Sequence[int]], pad_token_id: int, width: int | None = None) -> tuple[Any, Any]:
    import torch

    width = width or max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
        mask[row, width - len(ids):] = 1
    return input_ids, mask

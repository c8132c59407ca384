"""Reward scoring of (prompt, response) pairs: one raw logit per pair.

The scorers give the same scores (float32: within 1e-4, in practice about 1e-6):

* ``engine`` (default): DeBERTa-v2/v3 reward models on CPUs (the study's) through :mod:`.deberta`, every pair's tokens
  packed without padding into a few forward passes; any other model (other architectures, GPUs) as ``padded``.
* ``padded``: pairs sorted by length, cut into batches by a token budget (rows x padded width), padded on the right
  (relative attention: real tokens keep their positions, padded keys get zero weight) through the model's own
  forward. DeBERTa's projections of its relative-position embeddings depend on the weights only, not on the text:
  they are computed once per call of :func:`score` instead of once per forward pass (for DeBERTa-v3-large 51 GFLOP
  per pass, as much as ~85 tokens).
* ``loop``: the study's loop, one unpadded forward per pair.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import HHAlignError
from .base import prefill_groups
from .reward_formats import encode_pairs, get_format  # noqa: F401 - encode_pairs re-exported where it was defined

# DeBERTa-v3 was trained on 512-token inputs; longer pairs still run (relative positions) and are counted.
TRAINED_LENGTH = 512
# Padded tokens (rows x width) per forward pass: beyond about 2k tokens a batch is as efficient as it gets on a CPU,
# and the attention scores, rows x 16 heads x width^2 floats per layer, stay small.
DEFAULT_TOKEN_BUDGET = 4096
# engine: packed DeBERTa where it applies, else padded; padded: length-grouped batches with memoized DeBERTa
# projections; loop: the study's one pair per forward pass.
SCORERS = ("engine", "padded", "loop")


@dataclass(frozen=True)
class Score:
    """Raw reward logit, tokens scored, and whether the pair was cut to ``max_length``."""

    reward: float
    n_tokens: int
    truncated: bool


def score(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 8,
          max_length: int | None = None, progress: Any | None = None, *, engine: str = "engine",
          token_budget: int | None = None, input_format: str = "pair") -> list[Score]:
    """Reward of each (prompt, response) pair, in input order.

    ``batch_size`` caps the pairs per forward pass and ``token_budget`` their tokens (padded: default
    ``DEFAULT_TOKEN_BUDGET``; packed: ``deberta.PACKED_TOKENS``); ``engine="loop"`` scores one pair per forward pass as
    the study did. ``input_format`` is how the
    model reads a pair (:mod:`hhalign.engine.reward_formats`: ``pair`` or ``chat``).
    """
    import torch

    if batch_size <= 0:
        raise HHAlignError(f"--batch-size must be positive, got {batch_size}")
    if max_length is not None and max_length <= 2:
        raise HHAlignError(f"--reward-max-length must be more than 2 tokens, got {max_length}")
    engine = {"batched": "engine"}.get(engine, engine)
    if engine not in SCORERS:
        raise HHAlignError(f"unknown scoring engine {engine!r}: use one of {', '.join(SCORERS)}")
    if token_budget is not None and token_budget <= 0:
        raise HHAlignError(f"--token-budget must be positive, got {token_budget}")
    budget = token_budget or DEFAULT_TOKEN_BUDGET
    from .deberta import PACKED_TOKENS, packed_for, unsupported
    decoder = is_decoder_only(model)
    if decoder:
        pad_with_eos(model, tokenizer)
    rows, full_lengths = get_format(input_format).encode(tokenizer, prompts, responses, max_length)
    lengths = [len(r["input_ids"]) for r in rows]
    packed = packed_for(model) if engine == "engine" and unsupported(model) is None else None
    if packed is not None:
        rewards = packed.rewards(rows, token_budget or PACKED_TOKENS, batch_size, progress)
        return [Score(r, n, n < full) for r, n, full in zip(rewards, lengths, full_lengths)]
    device = next(model.parameters()).device
    out: list[Score | None] = [None] * len(rows)
    if engine == "loop":
        batches: Iterator[list[int]] = ([i] for i in range(len(rows)))
        memo = _no_memo(model)
    else:
        # Longest first, in groups of near-equal length: a forward pass costs its padded tokens, and beyond about
        # 256 tokens one pair alone already keeps the matrix units busy.
        order = sorted(range(len(rows)), key=lambda i: (-lengths[i], i))
        batches = (order[a:b] for a, b in prefill_groups([lengths[i] for i in order], batch_size, budget))
        memo = memoized_rel_projections(model)
    forward_args = inspect.signature(model.forward).parameters
    with memo, torch.inference_mode():
        for batch in batches:
            if len(batch) == 1:
                # One pair: no padding at all, exactly the study's call.
                padded = {k: torch.tensor([v]) for k, v in rows[batch[0]].items()}
            else:
                padded = tokenizer.pad([rows[i] for i in batch], padding=True, return_tensors="pt")
            padded = {k: v.to(device) for k, v in padded.items()}
            if decoder and "position_ids" in forward_args:
                # Real tokens keep positions 0..n-1 whichever side the padding is on: left-padded rows would
                # otherwise start at their padding's length (absolute position embeddings, e.g. GPT-2, change).
                padded["position_ids"] = (padded["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            if decoder and len(batch) > 1:
                # Padding must be the id the pooling looks for (the config's), whatever the tokenizer padded with.
                pad_id = model.config.get_text_config().pad_token_id
                padded["input_ids"] = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, pad_id)
            logits = model(**padded).logits[:, 0].float().cpu().tolist()
            for i, value in zip(batch, logits):
                out[i] = Score(float(value), lengths[i], lengths[i] < full_lengths[i])
            if progress is not None:
                progress.update(len(batch))
    return out  # type: ignore[return-value]


def is_decoder_only(model: Any) -> bool:
    """A sequence classifier on a decoder-only backbone (Llama, Qwen2, Gemma, GPT-2, GPT-NeoX, OPT, ...): it reads the
    last real token, found as the rightmost token that is not the pad token (transformers' last-token pooling)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    config = model.config
    kind = getattr(config, "model_type", "")
    return (kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
            and not getattr(config, "is_encoder_decoder", False))


def pad_with_eos(model: Any, tokenizer: Any) -> None:
    """Give a decoder judge without a pad token EOS as its pad token (as TRL's reward trainer does), in the tokenizer
    and in the model's config: transformers refuses batches without one, and the pooling reads the same id, so a
    pair is pooled at the same token alone and in a batch."""
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if config.pad_token_id is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id


def scorer_name(model: Any, engine: str = "engine") -> str:
    """Which scorer :func:`score` uses for ``model`` with ``engine`` (recorded with results)."""
    from .deberta import packed_for, unsupported

    if engine in ("engine", "batched") and unsupported(model) is None and packed_for(model) is not None:
        return "packed"
    return "loop" if engine == "loop" else "padded"


@contextmanager
def _no_memo(model: Any) -> Iterator[None]:
    yield


@contextmanager
def memoized_rel_projections(model: Any) -> Iterator[None]:
    """While active, DeBERTa-v2/v3's relative-position embeddings and their projections by each layer's query/key
    layers are computed once and reused by every forward pass: the same values (same inputs, same operations), less
    work. Models without relative attention, and models in training mode, run unchanged."""
    import torch

    encoders = [m for m in model.modules() if hasattr(m, "get_rel_embedding") and getattr(m, "relative_attention",
                                                                                             False)]
    if len(encoders) != 1 or model.training:
        yield
        return
    encoder = encoders[0]
    with torch.inference_mode():
        rel = encoder.get_rel_embedding()
    storage = rel.untyped_storage().data_ptr()
    patched: list[Any] = []

    def memoize(layer: Any) -> None:
        if any(layer is p for p in patched):
            return
        original = layer.forward
        cache: dict = {}

        def forward(x: Any) -> Any:
            # Only the rel-embedding slice itself (a view of `rel`) is memoized; text states pass straight through.
            if x.dim() == 3 and x.shape[0] == 1 and x.untyped_storage().data_ptr() == storage:
                key = (x.storage_offset(), tuple(x.shape), tuple(x.stride()))
                if key not in cache:
                    cache[key] = original(x)
                return cache[key]
            return original(x)

        layer.forward = forward
        patched.append(layer)

    encoder.get_rel_embedding = lambda: rel
    try:
        for module in model.modules():
            if hasattr(module, "disentangled_attention_bias"):
                for name in ("query_proj", "key_proj", "pos_key_proj", "pos_query_proj"):
                    if isinstance(getattr(module, name, None), torch.nn.Module):
                        memoize(getattr(module, name))
        yield
    finally:
        del encoder.get_rel_embedding
        for layer in patched:
            del layer.forward

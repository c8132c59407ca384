"""hhalign's batched engine: prompts sorted by length and cut into decode batches by a KV-cache token budget; each
batch is prefilled in groups of near-equal length straight into key/value buffers allocated once, then decoded
together, and a row that emits EOS leaves the batch at once. Every token gets the position it has in a one-prompt
call (its index among its row's real tokens), whatever the padding, so models that take positions from the cache
slot (rotary embeddings, GPT-2's learned table) compute what they compute unbatched; sliding-window layers see the
same window. In float32 it gives the same tokens as one prompt at a time: batching only changes matrix shapes, which
moves logits by about 1e-6, far below the margin between the two best tokens (tested on a tiny model of each family
in :data:`EXACT_FAMILIES`, and counted by the benchmark). Other models go to transformers' generate, and
:func:`generation_settings` records that with the run."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

from ..errors import HHAlignError
from .base import DEFAULT_TOKEN_BUDGET, budget_batches, left_pad, prefill_groups
from .hf import hf_batched_ids
from .kernels import engine_kernels

logger = logging.getLogger(__name__)
_WARNED: weakref.WeakSet = weakref.WeakSet()  # models whose fallback was already logged


# Model types whose engine tokens are tested equal to one prompt at a time in float32 (tests/test_families.py, on a
# tiny model of each built by hhalign.testing.tiny.build_tiny_causal_lm). Any other model is left to transformers'
# generate, and the run's settings say so (generation_settings).
EXACT_FAMILIES = ("opt", "gpt2", "llama", "qwen2", "mistral", "phi3", "gpt_neox", "gemma2")
# Layer kinds the engine's full-length KV buffers serve exactly: a sliding window is applied by the attention mask
# (or by the row-by-row attention), over buffers that keep every position.
ENGINE_LAYER_TYPES = ("full_attention", "sliding_attention")


def engine_declines(model: Any) -> str | None:
    """Why the batched engine leaves ``model`` to transformers' generate, or None when the engine runs it."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return "not a decoder-only model"
    model_type = getattr(config, "model_type", None)
    if model_type not in EXACT_FAMILIES:
        return f"model type {model_type!r} is not among the engine's tested families ({', '.join(EXACT_FAMILIES)})"
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs

        layer_types, _ = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
    except Exception:  # noqa: BLE001 - an unusual config: leave it to model.generate
        return "its layer types cannot be read from the config"
    other = sorted(set(layer_types) - set(ENGINE_LAYER_TYPES))
    if other:
        return f"layers of type {', '.join(other)}"
    if not _takes_positions(model):
        return "its forward takes no position_ids"
    return None


def supports_engine(model: Any) -> bool:
    """Whether the batched engine runs ``model`` (see :func:`engine_declines`)."""
    return engine_declines(model) is None


def generation_settings(model: Any, engine: str) -> dict:
    """What generation through ``engine`` ("engine" or "loop") runs for ``model``, to record with results: the
    generator, and when the engine declines the model, why and what that changes."""
    if engine != "engine":
        return {"generator": engine}
    reason = engine_declines(model)
    if reason is None:
        return {"generator": "engine"}
    return {"generator": "hf", "engine_fallback": reason,
            "guarantee": "transformers generate on left-padded batches (the engine declines this model): answers may "
                         "differ from one prompt at a time"}


def greedy_ids(model: Any, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, eos_token_id: int | None,
               pad_token_id: int | None, batch_size: int = 8, token_budget: int | None = None,
               progress: Any | None = None) -> list[list[int]]:
    """New token ids (cut before EOS) for each prompt's ids, in input order, from the batched engine."""
    if pad_token_id is None:
        pad_token_id = eos_token_id if eos_token_id is not None else 0
    budget = token_budget or DEFAULT_TOKEN_BUDGET
    if budget <= 0:
        raise HHAlignError(f"--token-budget must be positive, got {budget}")
    reason = engine_declines(model)
    if reason is not None:
        if model not in _WARNED:
            _WARNED.add(model)
            logger.warning(f"batched engine: {reason}; generating with transformers generate on padded batches "
                           "instead (answers may differ from one prompt at a time)")
        return hf_batched_ids(model, prompt_ids, max_new_tokens, eos_token_id, pad_token_id, batch_size, progress)
    results: list[list[int] | None] = [None] * len(prompt_ids)
    lengths = [len(ids) for ids in prompt_ids]
    for batch in budget_batches(lengths, batch_size, budget, max_new_tokens):
        new = _decode_batch(model, [list(prompt_ids[i]) for i in batch], max_new_tokens, eos_token_id, pad_token_id)
        for i, tokens in zip(batch, new):
            results[i] = tokens
        if progress is not None:
            progress.update(len(batch))
    return results  # type: ignore[return-value]



def _slot_layer_class() -> type:
    """A cache layer whose keys/values live in buffers allocated once (transformers' DynamicLayer grows by torch.cat,
    copying the whole cache of every layer at every new token)."""
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        def __init__(self, keys: Any, values: Any, length: int = 0):
            super().__init__()
            # keys/values: [rows, heads, capacity, head_dim] views; positions [0, length) are filled.
            self.key_buf, self.value_buf, self.length = keys, values, length
            self.is_initialized = True
            self.dtype, self.device = keys.dtype, keys.device
            self._refresh()

        def _refresh(self) -> None:
            self.keys = self.key_buf[:, :, : self.length]
            self.values = self.value_buf[:, :, : self.length]

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            pass

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            n = key_states.shape[-2]
            if self.length + n > self.key_buf.shape[-2]:
                raise RuntimeError("hhalign engine: KV buffer overflow (capacity planning bug)")
            self.key_buf[:, :, self.length : self.length + n] = key_states
            self.value_buf[:, :, self.length : self.length + n] = value_states
            self.length += n
            self._refresh()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def batch_select_indices(self, indices: Any) -> None:
            self.key_buf = self.key_buf[indices]
            self.value_buf = self.value_buf[indices]
            self._refresh()

    return SlotLayer


def _kv_shape(model: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a decoder, read from its config."""
    config = model.config.get_text_config(decoder=True)
    n_layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return n_layers, kv_heads, head_dim


def _forward_kwargs(model: Any) -> dict:
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    # Only the last position's logits are needed: skips the vocabulary projection of every prompt token.
    return {"logits_to_keep": 1} if "logits_to_keep" in params or "kwargs" in params else {}


def _takes_positions(model: Any) -> bool:
    import inspect

    try:
        return "position_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _prefill_positions(rows: Sequence[Sequence[int]], width: int) -> Any:
    """Position ids of left-padded ``rows`` (``width`` wide): each token's index among its row's real tokens, what a
    one-prompt call gives it; padding slots get 0 (they are never attended to)."""
    import torch

    index = torch.arange(width)
    return torch.stack([(index - (width - len(r))).clamp(min=0) for r in rows])


def _decode_batch(model: Any, rows: list[list[int]], max_new_tokens: int, eos_token_id: int | None,
                  pad_token_id: int) -> list[list[int]]:
    """Greedy decoding of ``rows`` (sorted longest first) together; returns new ids per row, cut before EOS."""
    import torch
    from transformers.cache_utils import Cache

    SlotLayer = _slot_layer_class()
    device = next(model.parameters()).device
    n_layers, kv_heads, head_dim = _kv_shape(model)
    width = len(rows[0])
    capacity = width + max_new_tokens  # the last new token is never fed back: one slot to spare
    param = next(model.parameters())
    dtype = param.dtype if param.is_floating_point() else torch.float32
    extra = _forward_kwargs(model)
    # Explicit positions (engine_declines requires a forward that takes them): models that count positions from the
    # cache slot (rotary Llama/Qwen2/Phi-3/GPT-NeoX/Gemma, GPT-2's learned table) would otherwise see a left-padded row
    # shifted by its padding. OPT counts from the mask.
    first = torch.empty(len(rows), dtype=torch.long, device=device)
    with torch.inference_mode(), engine_kernels(model) as per_row:
        # Row-by-row attention on CPUs reads the cache in float32 whatever the weights: PyTorch's CPU attention kernel
        # takes 5-8x longer for one bfloat16 query than for a float32 one, more than the doubled cache reads cost.
        kv_dtype = torch.float32 if per_row else dtype
        # Left-padded layout: row r's prompt ends at position `width`, new tokens follow.
        keys = [torch.empty(len(rows), kv_heads, capacity, head_dim, dtype=kv_dtype, device=device)
                for _ in range(n_layers)]
        values = [torch.empty_like(k) for k in keys]
        for start, end in prefill_groups([len(r) for r in rows]):
            group_width = len(rows[start])
            input_ids, mask = left_pad(rows[start:end], pad_token_id)
            offset = width - group_width
            for buf in (*keys, *values):
                # Slots left of the group are padding for these rows: masked out when decoding (and by the padded
                # path), so they must be finite (0 x value); row-by-row prefill never reads them.
                buf[start:end, :, :offset].zero_()
            # The group's cache writes straight into its rows of the batch buffers, right-aligned at `width`.
            cache = Cache(layers=[SlotLayer(k[start:end, :, offset:], v[start:end, :, offset:])
                                  for k, v in zip(keys, values)])
            rows_kw = {"hhalign_row_starts": [group_width - len(r) for r in rows[start:end]]} if per_row else {}
            rows_kw["position_ids"] = _prefill_positions(rows[start:end], group_width).to(device)
            out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), past_key_values=cache,
                        use_cache=True, **extra, **rows_kw)
            first[start:end] = out.logits[:, -1].argmax(-1)
            del out, cache
        mask = torch.zeros(len(rows), capacity, dtype=torch.long, device=device)
        for row, ids in enumerate(rows):
            mask[row, width - len(ids) : width] = 1
        row_starts = [width - len(ids) for ids in rows]
        # The position of each row's next token (its count of tokens so far), advanced by one per step.
        row_positions = torch.tensor([len(ids) for ids in rows], dtype=torch.long, device=device)[:, None]
        cache = Cache(layers=[SlotLayer(k, v, width) for k, v in zip(keys, values)])
        del keys, values
        active = list(range(len(rows)))  # batch row -> input row
        new: list[list[int]] = [[] for _ in rows]
        token = first
        for step in range(max_new_tokens):
            tokens = token.tolist()
            keep = []
            for row, t in enumerate(tokens):
                if t == eos_token_id:
                    continue  # finished: EOS is not part of the response
                new[active[row]].append(t)
                keep.append(row)
            if step == max_new_tokens - 1 or not keep:
                break
            if len(keep) < len(active):
                # Finished rows leave the batch, so later steps compute only live rows.
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask = mask[index]
                token = token[index]
                active = [active[r] for r in keep]
                row_starts = [row_starts[r] for r in keep]
                row_positions = row_positions[index]
            position = width + step
            mask[:, position] = 1
            rows_kw = {"hhalign_row_starts": row_starts} if per_row else {}
            rows_kw["position_ids"] = row_positions + step
            out = model(input_ids=token[:, None], attention_mask=mask[:, : position + 1], past_key_values=cache,
                        use_cache=True, **extra, **rows_kw)
            token = out.logits[:, -1].argmax(-1)
            del out
    return new

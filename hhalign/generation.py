"""Batched greedy generation under the study's protocols.

Two engines give the same tokens in float32:

* ``batched`` (default): prompts sorted by length and cut into decode batches by a KV-cache token budget; each batch
  is prefilled in groups of near-equal length (little padding) straight into key/value buffers allocated once for the
  whole batch (no copy per new token), then decoded together; a row that emits EOS leaves the batch at once.
* ``loop``: the study's own loop, one ``model.generate`` call per prompt without padding. It reproduces the study's
  computation exactly and is the baseline that ``batch/bench.py`` times.

Speed never changes what is computed: both engines run the same greedy argmax over the same model; batching only
changes the shapes of the matrix products, which moves float32 logits by about 1e-6, far below the margin between
the two best tokens (the tests and the benchmark count identical outputs). Lower precision (``to_fast``) is a
separate, explicit choice whose agreement the benchmark reports.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .data import ASSISTANT, HUMAN
from .errors import HHAlignError

PROTOCOLS = ("paper", "chat")
ENGINES = ("batched", "loop")
DEFAULT_MAX_NEW_TOKENS = 50
# KV-cache positions (rows x (prompt + new tokens)) one decode batch may hold. For OPT-350M in float32 a position
# costs 24 layers x 2 x 1024 x 4 bytes = 192 KiB, so 16384 positions are 3 GiB
# at most (row-by-row attention on CPUs never touches the padding slots, so their pages are not even allocated).
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


def model_input(prompt: str, protocol: str = "paper") -> str:
    """The text fed to the model: ``paper`` uses the prompt as is; ``chat`` appends the assistant cue."""
    if protocol == "paper":
        return prompt
    if protocol == "chat":
        return prompt if prompt.rstrip().endswith("Assistant:") else prompt.rstrip() + ASSISTANT
    raise HHAlignError(f"unknown --protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")


def postprocess(text: str, protocol: str = "paper") -> str:
    """``chat`` cuts the reply at the next human turn; both strip surrounding whitespace."""
    if protocol == "chat":
        for marker in (HUMAN, "\nHuman:"):
            cut = text.find(marker)
            if cut >= 0:
                text = text[:cut]
    return text.strip()


def context_limit(model: Any, max_new_tokens: int) -> int:
    """Most prompt tokens that still leave room for ``max_new_tokens`` in the model's context."""
    n_ctx = getattr(model.config, "max_position_embeddings", None) or 2048
    return max(1, n_ctx - max_new_tokens)


def encode_prompts(tokenizer: Any, texts: Sequence[str], max_prompt_tokens: int) -> list[tuple[list[int], bool]]:
    """Token ids per prompt; over-long prompts keep their last tokens (after the BOS token, if any)."""
    out = []
    for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
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


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], protocol: str = "paper",
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 8,
             progress: Any | None = None, *, engine: str = "batched",
             token_budget: int | None = None) -> list[Generation]:
    """Greedy responses to ``prompts`` in input order.

    ``batch_size`` caps the rows decoded together and ``token_budget`` (default ``DEFAULT_TOKEN_BUDGET``) their
    KV-cache positions; ``engine="loop"`` generates one prompt at a time as the study did. ``progress`` (a tqdm bar)
    is advanced by the number of prompts finished in each batch.
    """
    if batch_size <= 0:
        raise HHAlignError(f"--batch-size must be positive, got {batch_size}")
    if max_new_tokens <= 0:
        raise HHAlignError(f"--max-new-tokens must be positive, got {max_new_tokens}")
    if engine not in ENGINES:
        raise HHAlignError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    encoded = encode_prompts(tokenizer, [model_input(p, protocol) for p in prompts],
                             context_limit(model, max_new_tokens))
    ids = [e[0] for e in encoded]
    if engine == "loop":
        new = loop_ids(model, tokenizer, ids, max_new_tokens, progress)
    else:
        new = greedy_ids(model, ids, max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size,
                         token_budget, progress)
    results = []
    for (prompt_ids, truncated), tokens in zip(encoded, new):
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        results.append(Generation(postprocess(text, protocol), len(prompt_ids), len(tokens), truncated))
    return results


def _until_eos(tokens: list[int], eos_token_id: int | None) -> list[int]:
    # Stop at the first EOS: what follows it in a batch is padding, never real tokens.
    return tokens[: tokens.index(eos_token_id)] if eos_token_id in tokens else tokens


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
        out.append(_until_eos(seq[0, len(ids):].tolist(), tokenizer.eos_token_id))
        if progress is not None:
            progress.update(1)
    return out


def supports_engine(model: Any) -> bool:
    """Whether the batched engine's KV buffers fit the model: a decoder whose layers all use full attention."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs

        layer_types, _ = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
    except Exception:  # noqa: BLE001 - an unusual config: leave it to model.generate
        return False
    return all(t == "full_attention" for t in layer_types)


def greedy_ids(model: Any, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, eos_token_id: int | None,
               pad_token_id: int | None, batch_size: int = 8, token_budget: int | None = None,
               progress: Any | None = None) -> list[list[int]]:
    """New token ids (cut before EOS) for each prompt's ids, in input order, from the batched engine."""
    if pad_token_id is None:
        pad_token_id = eos_token_id if eos_token_id is not None else 0
    budget = token_budget or DEFAULT_TOKEN_BUDGET
    if budget <= 0:
        raise HHAlignError(f"--token-budget must be positive, got {budget}")
    if not supports_engine(model):
        return _hf_batched_ids(model, prompt_ids, max_new_tokens, eos_token_id, pad_token_id, batch_size, progress)
    results: list[list[int] | None] = [None] * len(prompt_ids)
    lengths = [len(ids) for ids in prompt_ids]
    for batch in budget_batches(lengths, batch_size, budget, max_new_tokens):
        new = _decode_batch(model, [list(prompt_ids[i]) for i in batch], max_new_tokens, eos_token_id, pad_token_id)
        for i, tokens in zip(batch, new):
            results[i] = tokens
        if progress is not None:
            progress.update(len(batch))
    return results  # type: ignore[return-value]


def _hf_batched_ids(model: Any, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, eos_token_id: int | None,
                    pad_token_id: int, batch_size: int, progress: Any | None) -> list[list[int]]:
    """Fallback for models the engine does not cover: left-padded length-sorted batches through model.generate."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              pad_token_id=pad_token_id, eos_token_id=eos_token_id)
    device = next(model.parameters()).device
    results: list[list[int] | None] = [None] * len(prompt_ids)
    for batch in length_sorted_batches([len(ids) for ids in prompt_ids], batch_size):
        input_ids, mask = _left_pad([prompt_ids[i] for i in batch], pad_token_id)
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                 generation_config=config)
        for row, i in enumerate(batch):
            results[i] = _until_eos(out[row, input_ids.shape[1]:].tolist(), eos_token_id)
        if progress is not None:
            progress.update(len(batch))
    return results  # type: ignore[return-value]


def _left_pad(rows: Sequence[Sequence[int]], pad_token_id: int, width: int | None = None) -> tuple[Any, Any]:
    import torch

    width = width or max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
        mask[row, width - len(ids):] = 1
    return input_ids, mask


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
    # Left-padded layout: row r's prompt ends at position `width`, new tokens follow.
    keys = [torch.empty(len(rows), kv_heads, capacity, head_dim, dtype=dtype, device=device) for _ in range(n_layers)]
    values = [torch.empty_like(k) for k in keys]
    extra = _forward_kwargs(model)
    first = torch.empty(len(rows), dtype=torch.long, device=device)
    with torch.inference_mode(), engine_kernels(model) as per_row:
        for start, end in prefill_groups([len(r) for r in rows]):
            group_width = len(rows[start])
            input_ids, mask = _left_pad(rows[start:end], pad_token_id)
            offset = width - group_width
            if not per_row:
                for buf in (*keys, *values):
                    # Slots left of the group are padding for these rows: masked out, and must be finite (0 x value).
                    # Row-by-row attention never reads them.
                    buf[start:end, :, :offset].zero_()
            # The group's cache writes straight into its rows of the batch buffers, right-aligned at `width`.
            cache = Cache(layers=[SlotLayer(k[start:end, :, offset:], v[start:end, :, offset:])
                                  for k, v in zip(keys, values)])
            starts = {"hhalign_row_starts": [group_width - len(r) for r in rows[start:end]]} if per_row else {}
            out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), past_key_values=cache,
                        use_cache=True, **extra, **starts)
            first[start:end] = out.logits[:, -1].argmax(-1)
            del out, cache
        mask = torch.zeros(len(rows), capacity, dtype=torch.long, device=device)
        for row, ids in enumerate(rows):
            mask[row, width - len(ids) : width] = 1
        row_starts = [width - len(ids) for ids in rows]
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
            position = width + step
            mask[:, position] = 1
            starts = {"hhalign_row_starts": row_starts} if per_row else {}
            out = model(input_ids=token[:, None], attention_mask=mask[:, : position + 1], past_key_values=cache,
                        use_cache=True, **extra, **starts)
            token = out.logits[:, -1].argmax(-1)
            del out
    return new


def vllm_ids(model_path: str, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, dtype: str = "float32",
             eos_token_id: int | None = None) -> list[list[int]]:
    """Greedy new token ids from vLLM (GPUs; ``pip install vllm``) for a saved checkpoint folder or Hub id, cut
    before EOS. vLLM batches and pages the KV cache itself; it is imported only here."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise HHAlignError("the vllm backend needs the vllm package and a CUDA GPU: pip install vllm, or use the "
                           "default backend") from None
    # Half the GPU: the caller may hold a transformers copy of the model on the same card.
    llm = LLM(model=str(model_path), dtype=dtype, seed=0, gpu_memory_utilization=0.5)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    outputs = llm.generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids], params, use_tqdm=False)
    if eos_token_id is None:
        eos_token_id = llm.get_tokenizer().eos_token_id
    del llm
    return [_until_eos(list(out.outputs[0].token_ids), eos_token_id) for out in outputs]


# --- kernels ------------------------------------------------------------------------------------------------------

ROWS_ATTENTION = "hhalign_rows"
# On CPUs, x @ W.T with few rows x (2..64: decode steps, short prefills) runs 1.3-1.6x faster as (W @ x.T).T: MKL's
# small-M sgemm path is slow on AMD CPUs, its small-N path is not (measured on an EPYC with torch 2.13).
SMALL_M_MAX = 64


def _rows_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
                    dropout: float = 0.0, hhalign_row_starts: Sequence[int] | None = None, **kwargs: Any) -> Any:
    """Attention row by row over each row's own tokens only (no padding read, no mask), else plain SDPA.

    ``hhalign_row_starts[r]`` is the first real key position of row r. A row's call is then exactly the unpadded
    one-prompt computation: causal over the prompt at prefill, one query over the row's cache when decoding."""
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_len, kv_len = query.shape[2], key.shape[2]
    if hhalign_row_starts is None or (q_len > 1 and q_len != kv_len) or module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    gqa = {"enable_gqa": True} if key.shape[1] != query.shape[1] else {}
    out = query.new_zeros(query.shape[0], q_len, query.shape[1], query.shape[3])
    past = kv_len - q_len
    for r, s in enumerate(hhalign_row_starts):
        q0 = max(s - past, 0)
        o = F.scaled_dot_product_attention(query[r : r + 1, :, q0:], key[r : r + 1, :, s:], value[r : r + 1, :, s:],
                                           is_causal=q_len > 1, scale=scaling, **gqa)
        out[r, q0:] = o[0].transpose(0, 1)
    return out, None


def _register_rows_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if ROWS_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ROWS_ATTENTION, _rows_attention)
        # The same masks as sdpa, so a call without row starts is plain sdpa.
        AttentionMaskInterface.register(ROWS_ATTENTION, sdpa_mask)


def _small_m_linear(layer: Any) -> Any:
    import torch

    original = layer.forward

    def forward(x: Any) -> Any:
        m = x.numel() // x.shape[-1] if x.dim() else 0
        if not 2 <= m <= SMALL_M_MAX or x.dtype != layer.weight.dtype:
            return original(x)
        x2 = x.reshape(m, x.shape[-1]).t()
        y = torch.addmm(layer.bias[:, None], layer.weight, x2) if layer.bias is not None else layer.weight @ x2
        return y.t().contiguous().view(*x.shape[:-1], y.shape[0])

    return forward


@contextmanager
def engine_kernels(model: Any) -> Iterator[bool]:
    """On CPUs: row-by-row attention (yields True: pass ``hhalign_row_starts``) and the small-M linear kernel, for
    the duration of the block; elsewhere nothing changes (yields False)."""
    import torch

    device = next(model.parameters()).device
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if device.type != "cpu" or config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        yield False
        return
    _register_rows_attention()
    patched = []
    try:
        base.set_attn_implementation(ROWS_ATTENTION)
        for module in model.modules():
            if type(module) is torch.nn.Linear and "forward" not in vars(module):
                module.forward = _small_m_linear(module)
                patched.append(module)
        yield True
    finally:
        for module in patched:
            del module.forward
        base.set_attn_implementation("sdpa")


# --- precision ----------------------------------------------------------------------------------------------------

FAST_FORMATS = ("bfloat16", "int8", "float32")
# The evaluator's modes. fp32: the batched engine in float32 (the same answers as one prompt at a time, rewards within
# 1e-4); exact: the study's loop, one prompt and one pair per call; fast: the hardware's fastest number format.
MODES = ("fp32", "exact", "fast")
MODE_GUARANTEES = {
    "fp32": "batched engine in float32: the same tokens as one prompt at a time, rewards within 1e-4 of one pair at "
            "a time",
    "exact": "the study's loop: one prompt and one pair per call in float32",
    "fast": "fastest number format of the hardware: answers and rewards may differ from float32 (batch/bench.py "
            "measures by how much)",
}


def engine_for(mode: str) -> str:
    """The generate()/score() engine of an evaluator mode."""
    if mode not in MODES:
        raise HHAlignError(f"unknown --mode {mode!r}: use one of {', '.join(MODES)}")
    return "loop" if mode == "exact" else "batched"


def apply_mode(model: Any, mode: str, device: str = "cpu") -> tuple[Any, dict]:
    """``model`` prepared for an evaluator mode, and the engine settings to record with its results."""
    engine = engine_for(mode)
    if mode == "fast":
        model, fmt = to_fast(model, device)
    else:
        fmt = str(next(model.parameters()).dtype).removeprefix("torch.")
    return model, {"mode": mode, "engine": engine, "number_format": fmt, "guarantee": MODE_GUARANTEES[mode]}


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def fast_format(device: str = "cpu") -> str:
    """The fastest number format this hardware multiplies natively: ``bfloat16`` on CUDA GPUs that support it and on
    CPUs with AVX512-BF16 or AMX; else ``int8`` (dynamic quantization of linear layers) on x86 CPUs; else float32.

    Without native support bfloat16 matrix products are emulated on CPUs and run about 100x slower than float32.
    """
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    flags = cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16"}:
        return "bfloat16"
    engines = set(torch.backends.quantized.supported_engines)
    if engines & {"x86", "fbgemm"} and "avx2" in flags:
        return "int8"
    return "float32"


def to_fast(model: Any, device: str = "cpu", fmt: str | None = None) -> tuple[Any, str]:
    """``model`` converted to ``fmt`` (default: ``fast_format(device)``), in place where possible; returns it and the
    format. int8 quantizes the weights of every linear layer per tensor and the activations per call (PyTorch's
    dynamic quantization): about 4x less weight memory to read per token."""
    import torch

    fmt = fmt or fast_format(device)
    if fmt not in FAST_FORMATS:
        raise HHAlignError(f"unknown fast format {fmt!r}: use one of {', '.join(FAST_FORMATS)}")
    if fmt == "bfloat16":
        return model.to(torch.bfloat16), fmt
    if fmt == "int8":
        if device != "cpu":
            raise HHAlignError("int8 dynamic quantization runs on CPUs only: use bfloat16 on GPUs")
        with warnings.catch_warnings():
            # Eager-mode dynamic quantization is deprecated in favour of torchao but still ships with PyTorch 2.x.
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            engines = torch.backends.quantized.supported_engines
            torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm"
            model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        return model, fmt
    return model, fmt

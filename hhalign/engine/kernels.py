"""CPU kernels of the engines: matrix products picked by measurement, and the generation engine's row-by-row
attention. Active only inside :func:`engine_kernels` (scoped: nothing stays patched).

Which library multiplies fastest depends on the CPU, not on the model: MKL's sgemm runs at about 100 GFLOP/s per core
on an AMD EPYC with AVX-512 where oneDNN reaches 245, and MKL's small-M path is slow on AMD CPUs while its small-N
path is not. So the engines do not hard-code a choice: :func:`linear_kernel` times each candidate once per process on
a product of these models' shape (a few hundred milliseconds) and keeps the fastest, for few rows (decode steps) and
for many rows (prefill, scoring) separately.
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

ROWS_ATTENTION = "hhalign_rows"
# A product with at most this many rows is a "few rows" call (decode steps, short prefills).
SMALL_M_MAX = 64
# Candidate kernels for y = x @ W.T + b:
#   blas: torch's F.linear (MKL or OpenBLAS sgemm in float32; oneDNN in bfloat16);
#   blas_t: (W @ x.T).T, BLAS's small-N path in place of its small-M one;
#   onednn: oneDNN's inner product on the plain weight;
#   onednn_packed: oneDNN's inner product on a copy of the weight reordered once into its blocked layout.
KERNELS = ("blas", "blas_t", "onednn", "onednn_packed")
# Row counts the kernels are timed at: a decode step of a batch, and a prefill or scoring chunk.
FEW_ROWS, MANY_ROWS = 16, 256
# Shape of the timed product: the models' 1024 -> 4096 feed-forward layer.
TIMED_IN, TIMED_OUT = 1024, 4096


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's linear kernels (the ones torch.compile's CPU backend also uses)."""
    import torch

    ops = getattr(torch.ops, "mkldnn", None)
    return bool(torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
                and hasattr(ops, "_reorder_linear_weight"))


def kernel_candidates(dtype: Any) -> tuple[str, ...]:
    """The kernels that can run ``dtype`` products here."""
    import torch

    base = ("blas", "blas_t") if dtype == torch.float32 else ("blas",)
    return base + (("onednn", "onednn_packed") if onednn_available() else ())


def _cpu_seconds(fn: Callable[[], Any], reps: int) -> float:
    # CPU time of this process, best of reps: other processes on a shared machine add wall time, not CPU time.
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


# What measured_kernels timed, per dtype name: {"few": {kernel: GFLOP/s on one thread}, "many": {...}} (the
# benchmark reports it with the choice).
KERNEL_RATES: dict[str, dict[str, dict[str, int]]] = {}


@functools.cache
def measured_kernels(dtype_name: str = "float32") -> dict[str, str]:
    """{"few": kernel, "many": kernel}: the fastest candidate for few-row and many-row products in ``dtype_name``,
    timed once per process on one thread (CPU time, best of a few runs; idle threads of a parallel product spin and
    would count as work)."""
    import torch

    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(TIMED_OUT, TIMED_IN, generator=gen).to(dtype)
    bias = torch.randn(TIMED_OUT, generator=gen).to(dtype)
    chosen, rates = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for label, rows in (("few", FEW_ROWS), ("many", MANY_ROWS)):
                x = torch.randn(rows, TIMED_IN, generator=gen).to(dtype)
                fns = {k: linear_fn(weight, bias, k, rows) for k in kernel_candidates(dtype)}
                times = {k: _cpu_seconds(lambda f=f, x=x: f(x), 12 if label == "few" else 3) for k, f in fns.items()}
                chosen[label] = min(times, key=times.__getitem__)
                rates[label] = {k: round(2 * rows * TIMED_IN * TIMED_OUT / t / 1e9) for k, t in times.items()}
    finally:
        torch.set_num_threads(threads)
    logger.debug(f"linear kernels ({dtype_name}, GFLOP/s on one thread): {rates}; chose {chosen}")
    KERNEL_RATES[dtype_name] = rates
    return chosen


def linear_fn(weight: Any, bias: Any | None, kernel: str, rows_hint: int = MANY_ROWS,
              gelu: bool = False) -> Callable[[Any], Any]:
    """x -> x @ weight.T + bias (then exact GELU when ``gelu``) through ``kernel`` (one of :data:`KERNELS`), for
    inputs of ``weight``'s dtype and any leading shape. ``onednn_packed`` reorders a copy of the weight now, for about
    ``rows_hint`` rows (any row count works)."""
    import torch
    import torch.nn.functional as F

    if kernel in ("onednn", "onednn_packed"):
        w = weight
        if kernel == "onednn_packed":
            w = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), rows_hint)
        attr, algo = ("gelu", "none") if gelu else ("none", "")
        product = torch.ops.mkldnn._linear_pointwise
        return lambda x: product(x, w, bias, attr, [], algo)
    if kernel == "blas_t":
        def forward(x: Any) -> Any:
            x2 = x.reshape(-1, x.shape[-1]).t()
            y = torch.addmm(bias[:, None], weight, x2) if bias is not None else weight @ x2
            y = y.t().contiguous().view(*x.shape[:-1], weight.shape[0])
            return F.gelu(y) if gelu else y

        return forward
    if kernel == "blas":
        return (lambda x: F.gelu(F.linear(x, weight, bias))) if gelu else (lambda x: F.linear(x, weight, bias))
    raise ValueError(f"unknown linear kernel {kernel!r}: use one of {', '.join(KERNELS)}")


def linear_kernel(weight: Any, bias: Any | None = None, gelu: bool = False, rows: str = "many",
                  kernel: str | None = None) -> Callable[[Any], Any]:
    """:func:`linear_fn` through the measured fastest kernel for ``rows`` ("few" or "many") at ``weight``'s dtype,
    or through ``kernel`` when given."""
    name = kernel or measured_kernels(str(weight.dtype).removeprefix("torch."))[rows]
    return linear_fn(weight, bias, name, FEW_ROWS if rows == "few" else MANY_ROWS, gelu)


# --- the generation engine's linear layers ------------------------------------------------------------------------

# Kernels bound to a model's linear layers, kept while the layer lives and its weight is unchanged: reordering the
# weights of OPT-350M takes about 0.3 s, once per model instead of once per call.
_BOUND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weight_stamp(layer: Any) -> tuple:
    # Identity and in-place version of the parameters: a training step or load_state_dict changes one of them.
    return tuple((p.data_ptr(), p._version) for p in (layer.weight, layer.bias) if p is not None)


def _bound_forward(layer: Any, kernels: dict[str, str] | None) -> Callable[[Any], Any]:
    stamp = _weight_stamp(layer)
    hit = _BOUND.get(layer)
    if hit is not None and hit[0] == stamp and hit[1] == kernels:
        return hit[2]
    import torch
    import torch.nn.functional as F

    # The closure holds the parameters, never the layer: the cache's values must not keep their keys alive.
    weight, bias, dtype = layer.weight, layer.bias, layer.weight.dtype
    picked = kernels or measured_kernels(str(dtype).removeprefix("torch."))
    few = linear_fn(weight, bias, picked["few"], FEW_ROWS)
    many = few if picked["many"] == picked["few"] else linear_fn(weight, bias, picked["many"], MANY_ROWS)

    def forward(x: Any) -> Any:
        if x.dtype != dtype or x.dim() == 0 or x.device.type != "cpu" or torch.is_grad_enabled():
            return F.linear(x, weight, bias)
        return few(x) if x.numel() // x.shape[-1] <= SMALL_M_MAX else many(x)

    _BOUND[layer] = (stamp, kernels, forward)
    return forward


# --- the generation engine's attention ----------------------------------------------------------------------------


def _rows_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
                    dropout: float = 0.0, hhalign_row_starts: Sequence[int] | None = None,
                    sliding_window: int | None = None, **kwargs: Any) -> Any:
    """Attention over each row's own tokens only, else plain SDPA.

    ``hhalign_row_starts[r]`` is the first real key position of row r. At prefill each row has its own call, exactly
    the unpadded one-prompt computation (causal over the prompt, no padding read); a decode step is one call for all
    rows with the other rows' padding masked (:func:`_decode_attention`). A layer
    with a ``sliding_window`` (Mistral, Gemma-2's local layers) sees, like transformers' own mask, the keys less than
    ``sliding_window`` positions behind each query."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_len, kv_len = query.shape[2], key.shape[2]
    if hhalign_row_starts is None or (q_len > 1 and q_len != kv_len) or module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      sliding_window=sliding_window, **kwargs)
    gqa = {"enable_gqa": True} if key.shape[1] != query.shape[1] else {}
    # The engine keeps the cache in float32 on CPUs (see batched._decode_batch): a bfloat16 model's queries join it
    # there, and the result goes back to the model's format.
    dtype = query.dtype
    query = query.to(key.dtype)
    if q_len == 1:
        return _decode_attention(query, key, value, hhalign_row_starts, sliding_window, scaling, gqa).to(dtype), None
    out = query.new_zeros(query.shape[0], q_len, query.shape[1], query.shape[3])
    past = kv_len - q_len
    for r, s in enumerate(hhalign_row_starts):
        q0 = max(s - past, 0)
        k0 = s if sliding_window is None or q_len > 1 else max(s, kv_len - sliding_window)
        n = kv_len - s
        mask = None
        if q_len > 1 and sliding_window is not None and n >= sliding_window:
            # The band a one-prompt call masks with (transformers keeps a mask once the prompt reaches the window).
            distance = torch.arange(n, device=query.device)[:, None] - torch.arange(n, device=query.device)
            mask = (distance >= 0) & (distance < sliding_window)
        o = F.scaled_dot_product_attention(query[r : r + 1, :, q0:], key[r : r + 1, :, k0:], value[r : r + 1, :, k0:],
                                           attn_mask=mask, is_causal=q_len > 1 and mask is None, scale=scaling, **gqa)
        out[r, q0:] = o[0].transpose(0, 1)
    return out.to(dtype), None


def _decode_attention(query: Any, key: Any, value: Any, starts: Sequence[int], sliding_window: int | None,
                      scaling: float | None, gqa: dict) -> Any:
    """One decode step's attention for all rows in one call: each row's query over its own keys (from its start, or
    its window), the other rows' padding masked out. One call instead of one per row: at 32 rows x 24 layers the
    per-call overheads of the row loop cost about as much as the attention itself. The padding slots the mask skips
    hold zeros (batched._decode_batch), so masked products stay finite."""
    import torch
    import torch.nn.functional as F

    kv_len = key.shape[2]
    first = [s if sliding_window is None else max(s, kv_len - sliding_window) for s in starts]
    k0 = min(first)
    mask = None
    if any(f != k0 for f in first):
        columns = torch.arange(k0, kv_len, device=query.device)
        mask = (columns >= torch.tensor(first, device=query.device)[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(query, key[:, :, k0:], value[:, :, k0:], attn_mask=mask, scale=scaling,
                                         **gqa)
    return out.transpose(1, 2)


def _register_rows_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if ROWS_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ROWS_ATTENTION, _rows_attention)
        # The same masks as sdpa, so a call without row starts is plain sdpa.
        AttentionMaskInterface.register(ROWS_ATTENTION, sdpa_mask)


@contextmanager
def engine_kernels(model: Any, kernels: dict[str, str] | None = None) -> Iterator[bool]:
    """On CPUs: row-by-row attention (yields True: pass ``hhalign_row_starts``) and the measured fastest linear
    kernels (or ``kernels``, {"few": ..., "many": ...}) for the duration of the block; elsewhere nothing changes
    (yields False)."""
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
            if type(module) is torch.nn.Linear and "forward" not in vars(module) and module.weight.is_floating_point():
                module.forward = _bound_forward(module, kernels)
                patched.append(module)
        yield True
    finally:
        for module in patched:
            del module.forward
        base.set_attn_implementation("sdpa")

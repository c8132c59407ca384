"""CPU kernels of the batched engine, active only inside :func:`engine_kernels` (scoped: nothing stays patched)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

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

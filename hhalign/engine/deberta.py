"""Packed scoring with DeBERTa-v2/v3 sequence classifiers on CPUs (the study's reward model is DeBERTa-v3-large).

:class:`PackedDeberta` runs the inference forward pass of ``DebertaV2ForSequenceClassification`` over the model's own
weights, with the same arithmetic in a cheaper order (float32 rewards within about 1e-6 of one pair at a time):

* packed tokens, no padding: the linear layers (most of the work) run once over every pair's tokens concatenated, so
  a call multiplies large matrices and never a padding token; only attention runs pair by pair;
* the matrix products go through the kernel measured fastest on this CPU (:mod:`.kernels`): oneDNN runs float32 at
  2.4x MKL's rate on an AMD EPYC with AVX-512, and attention's 64-wide per-head products at 3x its batched ones;
* the relative-position projections (weights only, not text) are computed once per model, pre-scaled, per head;
  c2p and p2c read them through one shared bucket index, and a pair multiplies only the buckets its length reaches;
* Q, K and V come from one fused product; the last layer computes keys and values for every token but the rest only
  for the [CLS] row that the pooler reads.

Number formats follow the model's weights: float32; bfloat16 (products in bfloat16, layer norms, softmax and the
residual stream in float32, so it is closer to float32 than the plain bfloat16 model); int8 (PyTorch's dynamically
quantized linear layers, called as they are).
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .kernels import linear_kernel, onednn_available

logger = logging.getLogger(__name__)

# Pairs at least this long attend head by head (each head's scores stay in cache and oneDNN multiplies 64-wide
# operands fast); shorter ones in one batched product, where per-call overhead would dominate.
HEADS_MIN_TOKENS = 96
# Tokens per packed forward pass: beyond a few thousand the products are as efficient as they get, and activations
# stay small (about 40 KB per token for a 1024-wide model).
PACKED_TOKENS = 8192


def unsupported(model: Any) -> str | None:
    """Why :class:`PackedDeberta` cannot run ``model`` (None when it can)."""
    try:
        from transformers import DebertaV2ForSequenceClassification
    except ImportError:  # pragma: no cover - transformers always ships DeBERTa-v2
        return "transformers has no DeBERTa-v2"
    if not isinstance(model, DebertaV2ForSequenceClassification):
        return f"{type(model).__name__} is not a DeBERTa-v2/v3 sequence classifier"
    if model.training:
        return "the model is in training mode"
    param = next(model.parameters())
    if param.device.type != "cpu":
        return f"the model is on {param.device.type}, not a CPU"
    cfg = model.config
    if getattr(cfg, "conv_kernel_size", 0):
        return "the model has DeBERTa-v2's convolution layer"
    if cfg.hidden_act != "gelu" or set(cfg.pos_att_type or []) - {"c2p", "p2c"}:
        return "the model has an activation or attention type this scorer does not implement"
    return None


@dataclass
class _Layer:
    qkv: Callable | None  # x -> [T, 3 * hidden], queries already divided by the attention scale
    q: Callable  # queries alone, for the last layer's [CLS] rows
    kv: Callable  # keys and values alone (last layer)
    out: Callable
    ln1: tuple
    up: Callable  # GELU fused
    down: Callable
    ln2: tuple
    pk: Any  # [heads, 2 * span, head_dim]: key projection of the relative embeddings (c2p), or None
    pq: Any  # [heads, 2 * span, head_dim]: query projection / scale (p2c), or None


def _linear(weight: Any, bias: Any | None, gelu: bool = False) -> Callable[[Any], Any]:
    """x -> x @ weight.T + bias for x in the weight's format (float32 or bfloat16), through the fastest kernel."""
    return linear_kernel(weight.detach(), None if bias is None else bias.detach(), gelu)


def _module(module: Any, gelu: bool = False) -> Callable[[Any], Any]:
    """A float linear layer through :func:`_linear`; a quantized one (float32 in and out) called as it is."""
    import torch
    import torch.nn.functional as F

    if isinstance(module, torch.nn.Linear):
        return _linear(module.weight, module.bias, gelu)
    return (lambda x: F.gelu(module(x))) if gelu else module


def _fused(modules: Sequence[Any], scales: Sequence[float]) -> Callable[[Any], Any]:
    """One product for several float linear layers sharing an input (outputs concatenated, each divided by its
    scale); quantized layers run one by one."""
    import torch

    if all(isinstance(m, torch.nn.Linear) for m in modules):
        weight = torch.cat([m.weight.detach() / s for m, s in zip(modules, scales)])
        bias = torch.cat([m.bias.detach() / s for m, s in zip(modules, scales)])
        return _linear(weight, bias)
    parts = [_module(m) for m in modules]
    return lambda x: torch.cat([p(x) / s for p, s in zip(parts, scales)], -1)


def _ln_params(ln: Any) -> tuple:
    return ln.weight.detach().float(), ln.bias.detach().float(), ln.eps


class PackedDeberta:
    """Rewards of token-id rows from a DeBERTa-v2/v3 sequence classifier; see the module docstring."""

    def __init__(self, model: Any):
        import torch

        reason = unsupported(model)
        if reason:
            raise ValueError(f"PackedDeberta cannot run this model: {reason}")
        cfg = model.config
        enc, emb = model.deberta.encoder, model.deberta.embeddings
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // self.heads
        self.hidden = cfg.hidden_size
        pos_types = set(cfg.pos_att_type or []) if enc.relative_attention else set()
        # transformers divides every score term by sqrt(head_dim x (1 + relative terms)); here q and pq carry it.
        scale = math.sqrt(self.head_dim * (1 + len(pos_types)))
        self.word = emb.word_embeddings.weight.detach()
        self.types = None if emb.token_type_embeddings is None else emb.token_type_embeddings.weight.detach()
        self.positions = None if emb.position_embeddings is None else emb.position_embeddings.weight.detach()
        self.embed_proj = None if emb.embed_proj is None else _module(emb.embed_proj)
        self.emb_ln = _ln_params(emb.LayerNorm)
        query = enc.layer[0].attention.self.query_proj if len(enc.layer) else None
        # The linear layers' number format (int8 layers take and give float32). Attention runs in float32 whatever
        # the format: in bfloat16 it would save only 7% of a bfloat16 pass (its time goes to gathers and softmax, not
        # products) and add a fifth to the reward error.
        floating = isinstance(query, torch.nn.Linear)
        self.dtype = query.weight.dtype if floating else torch.float32
        self.attention_dtype = torch.float32
        self.mm = self._matmul_t()
        self.layers: list[_Layer] = []
        self.span = 0
        with torch.inference_mode():
            rel = None
            if pos_types:
                self.buckets, self.max_relative = enc.position_buckets, enc.max_relative_positions
                self.span = self.buckets if self.buckets > 0 else self.max_relative
                rel = enc.rel_embeddings.weight.detach().float()
                if "layer_norm" in enc.norm_rel_ebd:
                    rel = torch.nn.functional.layer_norm(rel, (self.hidden,), *_ln_params(enc.LayerNorm)[:2],
                                                         enc.LayerNorm.eps)
                rel = rel[: 2 * self.span]
            for layer in enc.layer:
                self.layers.append(self._layer(layer, rel, pos_types, scale, cfg.share_att_key))
            # The head in float32: two small products.
            self.pool = self._head(model.pooler.dense)
            self.classifier = self._head(model.classifier)
        from transformers.activations import ACT2FN

        self.pool_act = ACT2FN[model.pooler.config.pooler_hidden_act]
        self._index_cache: dict[int, tuple[Any, int, int]] = {}

    @staticmethod
    def _head(module: Any) -> Callable[[Any], Any]:
        import torch

        if isinstance(module, torch.nn.Linear):
            return _linear(module.weight.float(), None if module.bias is None else module.bias.float())
        return module

    def _layer(self, layer: Any, rel: Any, pos_types: set, scale: float, share: bool) -> _Layer:
        import torch.nn.functional as F

        att = layer.attention.self
        h, d = self.heads, self.head_dim

        def per_head(proj: Any, divide: float) -> Any:
            # The projection of the relative embeddings exactly as transformers makes it, laid out per head.
            w, b = proj.weight, proj.bias
            if callable(w):  # a dynamically quantized layer: its weights, dequantized
                w, b = w().dequantize(), b()
            y = F.linear(rel, w.float(), None if b is None else b.float()) / divide
            return y.view(2 * self.span, h, d).permute(1, 0, 2).to(self.attention_dtype).contiguous()

        pk = pq = None
        if "c2p" in pos_types:
            pk = per_head(att.key_proj if share else att.pos_key_proj, 1.0)
        if "p2c" in pos_types:
            pq = per_head(att.query_proj if share else att.pos_query_proj, scale)
        return _Layer(qkv=_fused([att.query_proj, att.key_proj, att.value_proj], [scale, 1.0, 1.0]),
                      q=_fused([att.query_proj], [scale]), kv=_fused([att.key_proj, att.value_proj], [1.0, 1.0]),
                      out=_module(layer.attention.output.dense), ln1=_ln_params(layer.attention.output.LayerNorm),
                      up=_module(layer.intermediate.dense, gelu=True), down=_module(layer.output.dense),
                      ln2=_ln_params(layer.output.LayerNorm), pk=pk, pq=pq)

    def _matmul_t(self) -> Callable[[Any, Any], Any]:
        """a @ b.T for one head's operands: oneDNN where it is the measured faster library."""
        import torch

        from .kernels import measured_kernels

        if onednn_available() and measured_kernels(str(self.attention_dtype).removeprefix("torch."))[
                "many"].startswith("onednn"):
            product = torch.ops.mkldnn._linear_pointwise
            return lambda a, b: product(a, b, None, "none", [], "")
        return lambda a, b: torch.mm(a, b.t())

    # --- relative positions ---------------------------------------------------------------------------------------

    def rel_index(self, n: int) -> tuple[Any, int, int]:
        """For a pair of ``n`` tokens: (index[i, j] - lo, lo, hi), where index[i, j] is the row of the relative
        projections that query i and key j read (both c2p and p2c: DeBERTa's log buckets are odd in i - j) and
        lo..hi the only rows the pair reaches."""
        hit = self._index_cache.get(n)
        if hit is None:
            import torch
            from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

            states = torch.empty(n, 1)
            rel = build_relative_position(states, states, self.buckets, self.max_relative)[0]
            index = torch.clamp(rel + self.span, 0, 2 * self.span - 1)
            lo, hi = int(index.min()), int(index.max()) + 1
            hit = self._index_cache[n] = ((index - lo).contiguous(), lo, hi)
        return hit

    # --- forward ----------------------------------------------------------------------------------------------------

    def _attend(self, q: Any, k: Any, v: Any, layer: _Layer, n: int, cls_only: bool = False) -> Any:
        """One pair's attention: q [heads, nq, d] (scaled), k, v [heads, n, d]; returns [nq, hidden]."""
        import torch

        nq = q.shape[1]
        index = lo = hi = None
        if layer.pk is not None or layer.pq is not None:
            index, lo, hi = self.rel_index(n)
            if cls_only:
                index = index[:1]
        if n < HEADS_MIN_TOKENS:
            scores = torch.bmm(q, k.transpose(1, 2))
            if layer.pk is not None:
                c2p = torch.bmm(q, layer.pk[:, lo:hi].transpose(1, 2))
                scores += torch.gather(c2p, 2, index.expand(self.heads, nq, n))
            if layer.pq is not None:
                p2c = torch.bmm(layer.pq[:, lo:hi], k.transpose(1, 2))
                scores += torch.gather(p2c, 1, index.expand(self.heads, nq, n))
            return torch.bmm(torch.softmax(scores, -1), v).transpose(0, 1).reshape(nq, self.hidden)
        out = torch.empty(nq, self.heads, self.head_dim, dtype=q.dtype)
        vt = v.transpose(1, 2).contiguous()
        for h in range(self.heads):
            scores = self.mm(q[h], k[h])
            if layer.pk is not None:
                scores += torch.gather(self.mm(q[h], layer.pk[h, lo:hi]), 1, index)
            if layer.pq is not None:
                # p2c[i, j] = k_j . pq[index[i, j]]: rows of (pq k^T) picked per key column.
                scores += torch.gather(self.mm(layer.pq[h, lo:hi], k[h]), 0, index)
            # In place: a fresh [n, n] buffer per head would cost page faults on every call.
            torch.ops.aten._softmax.out(scores, -1, False, out=scores)
            out[:, h] = self.mm(scores, vt[h])
        return out.view(nq, self.hidden)

    def _embed(self, ids: Any, types: Any | None, lengths: Sequence[int]) -> Any:
        import torch
        import torch.nn.functional as F

        x = F.embedding(ids, self.word).float()
        if self.positions is not None:
            x = x + F.embedding(torch.cat([torch.arange(n) for n in lengths]), self.positions).float()
        if self.types is not None:  # no token types given: all 0, as in transformers
            x = x + F.embedding(torch.zeros_like(ids) if types is None else types, self.types).float()
        if self.embed_proj is not None:
            x = self.embed_proj(x)
        return F.layer_norm(x, (self.hidden,), *self.emb_ln[:2], self.emb_ln[2])

    def forward(self, ids: Any, lengths: Sequence[int], types: Any | None = None) -> Any:
        """Rewards (the first logit) of the sequences whose token ids are concatenated in ``ids`` ([total])."""
        import torch
        import torch.nn.functional as F

        h, d, hidden = self.heads, self.head_dim, self.hidden
        starts = [0]
        for n in lengths:
            starts.append(starts[-1] + n)
        cls_rows = torch.tensor(starts[:-1])

        def norm(x: Any, p: tuple) -> Any:
            return F.layer_norm(x, (hidden,), p[0], p[1], p[2])

        x = self._embed(ids, types, lengths)
        dt, at = self.dtype, self.attention_dtype
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            if last:
                # Only the [CLS] rows reach the pooler: keys and values for every token, the rest for one row a pair.
                kv = layer.kv(x.to(dt)).view(-1, 2, h, d)
                residual = x[cls_rows]
                queries = layer.q(residual.to(dt)).view(-1, 1, h, d)
            else:
                qkv = layer.qkv(x.to(dt)).view(-1, 3, h, d)
                residual = x
            ctx = torch.empty(residual.shape[0], hidden, dtype=dt)
            for s, n in enumerate(lengths):
                a, b = starts[s], starts[s + 1]
                if last:
                    k, v = _heads_first(kv[a:b], at)
                    (q,) = _heads_first(queries[s : s + 1], at)
                    ctx[s : s + 1] = self._attend(q, k, v, layer, n, cls_only=True)
                else:
                    q, k, v = _heads_first(qkv[a:b], at)
                    ctx[a:b] = self._attend(q, k, v, layer, n)
            x = norm(layer.out(ctx).float() + residual, layer.ln1)
            x = norm(layer.down(layer.up(x.to(dt))).float() + x, layer.ln2)
        if not self.layers:
            x = x[cls_rows]
        return self.classifier(self.pool_act(self.pool(x)))[:, 0]

    def rewards(self, rows: Sequence[dict], max_tokens: int = PACKED_TOKENS, max_pairs: int | None = None,
                progress: Any | None = None) -> list[float]:
        """Rewards of encoded pairs (``input_ids``, optional ``token_type_ids``) in input order, packed longest first
        into passes of at most ``max_tokens`` tokens and ``max_pairs`` pairs (a longer pair runs alone)."""
        import torch

        out: list[float] = [0.0] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]["input_ids"]), i))
        chunks: list[list[int]] = []
        total = 0
        for i in order:
            n = len(rows[i]["input_ids"])
            if not chunks or total + n > max_tokens or (max_pairs is not None and len(chunks[-1]) >= max_pairs):
                chunks.append([])
                total = 0
            chunks[-1].append(i)
            total += n
        with torch.inference_mode():
            for chunk in chunks:
                ids = torch.tensor([t for i in chunk for t in rows[i]["input_ids"]], dtype=torch.long)
                types = None
                if self.types is not None and all("token_type_ids" in rows[i] for i in chunk):
                    types = torch.tensor([t for i in chunk for t in rows[i]["token_type_ids"]], dtype=torch.long)
                values = self.forward(ids, [len(rows[i]["input_ids"]) for i in chunk], types).tolist()
                for i, value in zip(chunk, values):
                    out[i] = float(value)
                if progress is not None:
                    progress.update(len(chunk))
        return out


def _heads_first(rows: Any, dtype: Any) -> list[Any]:
    """[n, parts, heads, d] -> one contiguous [heads, n, d] tensor per part in ``dtype`` (one copy each)."""
    import torch

    n, parts, heads, d = rows.shape
    out = torch.empty(parts, heads, n, d, dtype=dtype)
    out.copy_(rows.permute(1, 2, 0, 3))
    return list(out)


# One packed copy per model while the model lives and its weights are unchanged (building one fuses Q, K and V into a
# new matrix and projects the relative embeddings: about a second for DeBERTa-v3-large); None where the exactness
# check failed.
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Tokens of the exactness check: past 128, so DeBERTa's log buckets and the per-head attention path are checked too.
CHECK_TOKENS = 140
EXACT = 1e-4


def check_exact(packed: PackedDeberta, model: Any) -> float:
    """Largest |reward difference| between ``packed`` and the model's own forward on two seeded token sequences (one
    short, one past the log buckets' start)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    rows = [torch.randint(5, model.config.vocab_size, (n,), generator=gen).tolist() for n in (CHECK_TOKENS, 9)]
    with torch.inference_mode():
        plain = [model(input_ids=torch.tensor([r])).logits[0, 0].item() for r in rows]
    return max(abs(a - b) for a, b in zip(plain, packed.rewards([{"input_ids": r} for r in rows])))


def packed_for(model: Any) -> PackedDeberta | None:
    """The :class:`PackedDeberta` of ``model``, built on first use and rebuilt when its weights change; None when a
    float32 model's packed rewards differ from its own forward by more than 1e-4 (checked once per build: the caller
    then scores through the model's forward)."""
    import torch

    stamp = tuple((p.data_ptr(), p._version, p.dtype) for p in model.parameters())
    hit = _PACKED.get(model)
    if hit is None or hit[0] != stamp:
        packed: PackedDeberta | None = PackedDeberta(model)
        if packed.dtype == torch.float32 and packed.attention_dtype == torch.float32:
            diff = check_exact(packed, model)
            if diff > EXACT:
                logger.warning(f"packed DeBERTa scoring differs from the model's own forward by {diff:.1e} on this "
                               "machine: scoring through the model's forward instead (slower, same rewards)")
                packed = None
        hit = _PACKED[model] = (stamp, packed)
    return hit[1]

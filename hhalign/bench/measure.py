"""How the benchmark measures: wall-clock time in interleaved rounds, the machine's matrix-multiply rate (the FLOP
floor), the workloads' arithmetic, the machine, and how far an answer is from the reference."""

from __future__ import annotations

import gc
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (zeros where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return [0.0, 0.0, 0.0]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[Any, float]:
    """``fn()``'s result and its wall-clock seconds."""
    gc.collect()
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - start


def spread(times: Sequence[float]) -> dict:
    """Best, mean and standard deviation (0 for one round) of one system's round times, and the rounds."""
    return {"best_s": min(times), "mean_s": statistics.fmean(times),
            "sd_s": statistics.stdev(times) if len(times) > 1 else 0.0, "rounds_s": list(times)}


def interleaved(systems: dict[str, Callable[[], Any]], rounds: int, device: str,
                times: dict[str, list[float]] | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """Each system's result and fastest time over ``rounds``; a round runs every system once, so a burst of load
    from other processes hits one round, not every run of one system (other processes only ever add time). Every
    round's time lands in ``times`` (name -> list) when given."""
    results: dict[str, Any] = {}
    best = {name: float("inf") for name in systems}
    for round_ in range(rounds):
        for name, fn in systems.items():
            results[name], secs = timed(fn, device)
            best[name] = min(best[name], secs)
            if times is not None:
                times.setdefault(name, []).append(secs)
            logger.info(f"  {name}: {secs:.1f} s" + (f" (round {round_ + 1}/{rounds})" if rounds > 1 else "")
                        + f", load {load_average()[0]}")
    return results, best


def matmul_rate(fmt: str = "float32", device: str = "cpu", m: int = 512, k: int = 1024, n: int = 4096,
                seconds: float = 0.5) -> float:
    """Best observed multiply-adds x 2 per second of an (m x k) @ (k x n) product in ``fmt`` (a prefill-sized product
    of these models' 1024 -> 4096 layers) through the fastest kernel this machine has: every kernel the engines can
    pick on a CPU (:mod:`hhalign.engine.kernels`), PyTorch's dynamically quantized layer for ``int8``."""
    import torch

    from ..engine.kernels import kernel_candidates, linear_fn
    from ..engine.precision import to_fast

    with torch.inference_mode():
        gen = torch.Generator().manual_seed(0)
        weight, x = torch.randn(n, k, generator=gen), torch.randn(m, k, generator=gen)
        if fmt == "int8":
            layer = torch.nn.Linear(k, n, bias=False)
            fns = [to_fast(torch.nn.Sequential(layer), device, "int8")[0]]
        else:
            dtype = getattr(torch, fmt)
            weight, x = weight.to(device, dtype), x.to(device, dtype)
            kernels = kernel_candidates(dtype) if device == "cpu" else ("blas",)
            fns = [linear_fn(weight, None, kernel, m) for kernel in kernels]
        best = float("inf")
        for fn in fns:
            fn(x)
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                _sync(device)
                start = time.perf_counter()
                fn(x)
                _sync(device)
                best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best


def _linear_params(model: Any, skip: Sequence[str] = ()) -> int:
    import torch

    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(name.startswith(s) for s in skip):
            total += module.weight.numel()
    return total


def _decode_positions(prompt_lengths: Sequence[int], new_lengths: Sequence[int],
                      max_new_tokens: int) -> list[range]:
    """Per answer, the positions fed back one token at a time after the prompt pass: a stopped answer's EOS token is
    chosen but never fed back, nor is a full answer's last token."""
    return [range(t, t + g - (0 if g < max_new_tokens else 1)) for t, g in zip(prompt_lengths, new_lengths)]


def generation_flops(model: Any, prompt_lengths: Sequence[int], new_lengths: Sequence[int],
                     max_new_tokens: int) -> float:
    """Arithmetic of greedy generation with a KV cache: 2 x (linear weights) per token fed, the vocabulary projection
    per token chosen, and 4 x hidden x context per token and layer in attention."""
    config = model.config
    head = model.get_output_embeddings().weight.numel()
    body = _linear_params(model) - head
    d, layers = config.hidden_size, config.num_hidden_layers
    total = 0.0
    for g, decoded in zip(new_lengths, _decode_positions(prompt_lengths, new_lengths, max_new_tokens)):
        fed = decoded.stop  # the prompt and the tokens fed back
        chosen = g + (1 if g < max_new_tokens else 0)  # a stopped answer also chose its EOS
        total += 2 * body * fed + 2 * head * chosen + 2 * d * layers * fed * (fed + 1)
    return total


def decode_bytes(model: Any, prompt_lengths: Sequence[int], new_lengths: Sequence[int], max_new_tokens: int,
                 cache_bytes: int = 4) -> float:
    """The least memory greedy decoding reads after the prompt pass: every linear weight once per decode step (all
    answers decoded together share it) and, per token fed, its answer's key and value cache (``cache_bytes`` per
    value: hhalign keeps it in float32 on CPUs). Prompt-pass reads are left out: that pass is arithmetic-bound."""
    config = model.config
    positions = _decode_positions(prompt_lengths, new_lengths, max_new_tokens)
    steps = max((len(p) for p in positions), default=0)
    weight = next(model.parameters()).element_size() * _linear_params(model)
    # A token at position p attends over p + 1 cached keys and values, each key/value heads x head dim values per
    # layer: hidden_size without grouped-query attention (OPT), a third of it for SmolLM2-360M (5 of 15 heads).
    cached = sum(p + 1 for rows in positions for p in rows)
    heads = config.num_attention_heads
    width = (getattr(config, "num_key_value_heads", None) or heads) * \
        (getattr(config, "head_dim", None) or config.hidden_size // heads)
    return steps * weight + cache_bytes * 2 * config.num_hidden_layers * width * cached


def memory_bandwidth(device: str = "cpu", gib: float = 1.0, repeat: int = 3) -> float:
    """Best observed bytes per second moved by copying ``gib`` GiB of float32 (each byte read once and written
    once, both counted): what streaming weights and caches can reach here."""
    import torch

    n = int(gib * 2**30) // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n * 4 / best


def scoring_flops(model: Any, lengths: Sequence[int]) -> float:
    """Arithmetic of DeBERTa-v2/v3 scoring: 2 x (linear weights) per token, 4 x hidden x n per token and layer for
    content attention, 2 x 2 x (2 x buckets) x hidden per token and layer for the two relative terms, and the
    relative embeddings' projections once (they do not depend on the text)."""
    config = model.config
    body = _linear_params(model, skip=("pooler", "classifier"))
    d, layers = config.hidden_size, config.num_hidden_layers
    span = 2 * (config.position_buckets if config.position_buckets > 0 else config.max_position_embeddings)
    total = 2 * layers * 2 * span * d * d  # rel embeddings through query_proj and key_proj (shared keys)
    for n in lengths:
        total += 2 * body * n + 4 * d * layers * n * n + 4 * span * d * layers * n + 2 * (d * d + d)
    return total


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile", "avx512_vnni",
              "avx_vnni")


def cpu_identity() -> dict:
    """Vendor, family, model number and model name of the first CPU in /proc/cpuinfo (None where absent): which
    kernels run fastest, and so every ratio of the benchmark, depends on them."""
    fields = {"vendor_id": "vendor", "cpu family": "family", "model": "model", "model name": "model_name"}
    info: dict[str, Any] = dict.fromkeys(fields.values())
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                if key.strip() in fields:
                    value = value.strip()
                    info[fields[key.strip()]] = int(value) if value.isdigit() else value
    except OSError:
        pass
    return info


def machine_info(device: str, threads: int) -> dict:
    """The CPU (vendor, family, model, model name, SIMD flags), threads, torch version, GPU and the load average
    now."""
    import torch

    from ..env import cpu_flags, cpu_model

    flags = cpu_flags()
    info = {"cpu": cpu_model(), **cpu_identity(), "cpus": os.cpu_count(),
            "simd": [f for f in SIMD_FLAGS if f in flags], "threads": threads, "device": device,
            "torch": torch.__version__, "gpu": None, "load_average": load_average()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def agreement(reference: Sequence[Sequence[int]], other: Sequence[Sequence[int]]) -> tuple[int, float]:
    """(answers identical to the reference, share of the reference's token positions with the same token)."""
    same = sum(list(a) == list(b) for a, b in zip(reference, other))
    positions = sum(max(len(a), len(b)) for a, b in zip(reference, other))
    equal = sum(sum(x == y for x, y in zip(a, b)) for a, b in zip(reference, other))
    return same, (equal / positions if positions else 1.0)


def reward_error(reference: Sequence[float], other: Sequence[float]) -> dict:
    """Largest and mean absolute difference from the reference rewards, and both over the rewards' spread (their
    standard deviation): an error is small only next to the differences the rewards are used to tell apart."""
    diffs = [abs(a - b) for a, b in zip(reference, other)]
    spread = statistics.pstdev(reference) if len(reference) > 1 else 0.0
    largest, mean = max(diffs, default=0.0), statistics.fmean(diffs) if diffs else 0.0
    return {"max_abs_diff": largest, "mean_abs_diff": mean, "reward_std": spread,
            "max_diff_over_std": largest / spread if spread else None,
            "mean_diff_over_std": mean / spread if spread else None}

"""Precision modes of the evaluator and the hardware's fastest number format (bfloat16 or int8)."""

from __future__ import annotations

import warnings
from typing import Any

from ..env import cpu_flags
from ..errors import HHAlignError

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
    return "loop" if mode == "exact" else "engine"


def apply_mode(model: Any, mode: str, device: str = "cpu") -> tuple[Any, dict]:
    """``model`` prepared for an evaluator mode, and the engine settings to record with its results."""
    engine = engine_for(mode)
    if mode == "fast":
        model, fmt = to_fast(model, device)
    else:
        fmt = str(next(model.parameters()).dtype).removeprefix("torch.")
    return model, {"mode": mode, "engine": engine, "number_format": fmt, "guarantee": MODE_GUARANTEES[mode]}


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
    format. int8 quantizes the weights of every linear layer per output channel and the activations per call
    (PyTorch's dynamic quantization): about 4x less weight memory to read per token. Per channel, each row keeps its
    own scale: on DeBERTa-v3-large's shape it halves the reward error of one scale per matrix at the same speed."""
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
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            engines = torch.backends.quantized.supported_engines
            torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm"
            model = quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                                     inplace=True)
        return model, fmt
    return model, fmt

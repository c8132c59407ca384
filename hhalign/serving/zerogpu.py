"""Hugging Face ZeroGPU hardware: a GPU is lent only while a ``@spaces.GPU`` function runs, so the models are loaded
once at start-up (the ``spaces`` package moves them to the GPU it lends) and each generation asks for a GPU time that
fits its token budget. Everywhere else these helpers change nothing."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# Seconds of GPU time asked for: a fixed part (moving weights in, the reward model) plus a part per new token. OPT-350M
# writes far faster than this on an H200 slice; asking for more than needed only lowers the queue priority.
BASE_SECONDS = 10
SECONDS_PER_TOKEN = 0.1


def on_zerogpu() -> bool:
    """True on ZeroGPU hardware (Spaces set SPACES_ZERO_GPU there)."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true")


def gpu_seconds(max_new_tokens: int, n_replies: int = 1, cap: int = 120) -> int:
    """GPU time for ``n_replies`` replies of up to ``max_new_tokens`` tokens each, at most ``cap`` per reply."""
    per_reply = min(cap, BASE_SECONDS + SECONDS_PER_TOKEN * max(1, int(max_new_tokens)))
    return int(round(per_reply * max(1, n_replies)))


def gpu(fn: Callable, duration: int | Callable[..., int] = 60) -> Callable:
    """``spaces.GPU(duration=...)(fn)`` where the ``spaces`` package is installed (it is on Spaces; its decorator does
    nothing off ZeroGPU), else ``fn`` itself. ``duration`` may be a function of ``fn``'s arguments."""
    spaces = spaces_module()
    return fn if spaces is None else spaces.GPU(duration=duration)(fn)


def spaces_module() -> Any:
    try:
        import spaces
    except ImportError:
        return None
    return spaces

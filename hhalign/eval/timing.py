"""Where a run's time goes: wall time per stage (model load, judge check, generation, scoring, metrics and plots) and
tokens per second, recorded in ``metrics.json`` (``settings.timings``) and the report.

The evaluator opens one :func:`recording` for a run; the stages inside it, however deep, add to it through
:func:`stage` without being handed anything (outside a recording a stage records nothing). A stage entered several
times (one generation chunk after another) adds up. A resumed run records only what this invocation did.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

# The stages in the order a run goes through them (the report lists them so).
STAGES = ("model_load", "judge_check", "generation", "scoring", "metrics_and_plots")
STAGE_NAMES = {"model_load": "model load", "judge_check": "judge check", "generation": "generation",
               "scoring": "scoring", "metrics_and_plots": "metrics and plots"}


@dataclass
class Stage:
    """One stage's wall seconds, and the tokens it produced or read (``tokens += n`` inside the block)."""

    seconds: float = 0.0
    tokens: int = 0
    items: int = 0


@dataclass
class Timings:
    stages: dict[str, Stage] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)

    def to_dict(self) -> dict:
        """``{"total_s", "stages": {name: {"seconds", "tokens", "tokens_per_s", "items"}}}``, stages in run order."""
        order = sorted(self.stages, key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES))
        stages = {}
        for name in order:
            s = self.stages[name]
            # 0.1 ms: a tiny model's stage takes ~20 ms, and tokens / seconds should still give tokens_per_s
            stages[name] = {"seconds": round(s.seconds, 4), "items": s.items, "tokens": s.tokens,
                            "tokens_per_s": round(s.tokens / s.seconds, 1) if s.tokens and s.seconds else None}
        return {"total_s": round(time.perf_counter() - self.start, 3), "stages": stages}


_ACTIVE: ContextVar[Timings | None] = ContextVar("hhalign_timings", default=None)


@contextmanager
def recording() -> Iterator[Timings]:
    """Collect the stages run inside the block."""
    timings = Timings()
    token = _ACTIVE.set(timings)
    try:
        yield timings
    finally:
        _ACTIVE.reset(token)


def current_timings() -> dict:
    """The active recording so far (:meth:`Timings.to_dict`), or ``{}`` outside one."""
    timings = _ACTIVE.get()
    return timings.to_dict() if timings is not None else {}


@contextmanager
def stage(name: str) -> Iterator[Stage]:
    """Time the block as (part of) stage ``name`` of the active recording; the yielded :class:`Stage` takes counts
    (``s.tokens += n``, ``s.items += n``)."""
    part = Stage()
    start = time.perf_counter()
    try:
        yield part
    finally:
        timings = _ACTIVE.get()
        if timings is not None:
            total = timings.stages.setdefault(name, Stage())
            total.seconds += time.perf_counter() - start
            total.tokens += part.tokens
            total.items += part.items


def timings_table(timings: dict) -> str:
    """The ``settings.timings`` block as a Markdown table (empty when the run recorded none)."""
    stages = timings.get("stages") or {}
    if not stages:
        return ""
    total = timings.get("total_s") or sum(s["seconds"] for s in stages.values())
    lines = ["| stage | wall time (s) | share | items | tokens | tokens/s |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in stages.items():
        share = f"{100 * s['seconds'] / total:.0f}%" if total else "-"
        rate = f"{s['tokens_per_s']:.0f}" if s.get("tokens_per_s") else "-"
        lines.append(f"| {STAGE_NAMES.get(name, name)} | {s['seconds']:.1f} | {share} | {s.get('items') or '-'} | "
                     f"{s.get('tokens') or '-'} | {rate} |")
    lines.append(f"| total (this invocation) | {total:.1f} | 100% | | | |")
    return "\n".join(lines)

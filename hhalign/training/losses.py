"""Training losses: the per-step log as CSV/JSON, a PNG curve, a summary for the run record and the card."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_path, write_json
from .config import LOSS_CSV, LOSS_JSON, LOSS_PNG


def _finite(value: float) -> float | None:
    """A logged number, or None for NaN/infinity (a diverged step): JSON has no NaN, and None is written as null."""
    return value if isinstance(value, int) or math.isfinite(value) else None


def loss_rows(log_history: Sequence[dict]) -> list[dict]:
    """The per-step training logs (those with a ``loss``), one row per step, last write wins; non-finite values
    (a diverged step) are None."""
    by_step: dict[int, dict] = {}
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            by_step[int(entry["step"])] = {k: _finite(v) for k, v in entry.items()
                                           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return [by_step[s] for s in sorted(by_step)]


def write_loss_files(output_dir: str | Path, log_history: Sequence[dict], plot: bool = True, title: str = "") -> dict:
    """losses.csv, losses.json and (optionally) loss.png from a trainer's log history; returns the file paths."""
    out = Path(output_dir)
    rows = loss_rows(log_history)
    keys = ["step", "epoch", "loss"] + sorted({k for r in rows for k in r} - {"step", "epoch", "loss"})
    with atomic_path(out / LOSS_CSV) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)  # None (a non-finite value) is an empty cell
        writer.writeheader()
        writer.writerows(rows)
    write_json(out / LOSS_JSON, rows)
    paths = {"csv": str(out / LOSS_CSV), "json": str(out / LOSS_JSON)}
    if plot and rows:
        paths["png"] = str(plot_losses(rows, out / LOSS_PNG, title))
    return paths


def plot_losses(rows: Sequence[dict], path: Path, title: str = "") -> Path:
    from ..stats.plots import pyplot, save_figure, tex_safe

    plt = pyplot()
    dpo = any("rewards/margins" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if dpo else 1, figsize=(10 if dpo else 6, 3.6), squeeze=False)
    steps = [r["step"] for r in rows]
    ax = axes[0][0]
    ax.plot(steps, [_nan(r["loss"]) for r in rows], marker="." if len(rows) < 50 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    if dpo:
        ax2 = axes[0][1]
        ax2.plot(steps, [_nan(r.get("rewards/margins")) for r in rows], label="reward margin")
        ax2.plot(steps, [_nan(r.get("rewards/accuracies")) for r in rows], label="reward accuracy")
        ax2.set_xlabel("optimizer step")
        ax2.legend()
        ax2.grid(alpha=0.3)
    fig.suptitle(tex_safe(title) or "training loss")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def loss_summary(log_history: Sequence[dict]) -> dict:
    """First, last, lowest and late-mean loss over the finite logged losses; ``nonfinite_steps`` counts the others."""
    rows = [r for r in loss_rows(log_history) if r["loss"] is not None]
    losses = [r["loss"] for r in rows]
    summary: dict = {"logged_steps": len(rows)}
    skipped = len(loss_rows(log_history)) - len(rows)
    if skipped:
        summary["nonfinite_steps"] = skipped
    if losses:
        tail = losses[-max(1, len(losses) // 10):]
        summary.update(first_step=rows[0]["step"], last_step=rows[-1]["step"], first=losses[0], last=losses[-1],
                       min=min(losses), mean_last_10pct=sum(tail) / len(tail))
    final = next((e for e in reversed(log_history) if "train_loss" in e), None)
    if final:
        summary["train_loss"] = _finite(final["train_loss"])
    return summary


def _loss_callback(output_dir: Path, title: str) -> Any:
    from transformers import TrainerCallback

    class LossFiles(TrainerCallback):
        """Keep losses.csv/json current at every log, so a killed run still has its curve."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero:
                write_loss_files(output_dir, state.log_history, plot=False)

    return LossFiles()

"""PNG figures of a metrics summary: rate bars with 95% intervals, reward boxes, mean rewards, threshold sweep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..eval.schema import Metrics, ModelMetrics
from .metrics import HARMLESS_THRESHOLD, HELPFUL_THRESHOLD

PLOT_FILES = {
    "rates": "rates.png",
    "reward_boxes": "reward_boxes.png",
    "mean_rewards": "mean_rewards.png",
    "threshold_sweep": "threshold_sweep.png",
}


def pyplot():
    """matplotlib.pyplot drawing off-screen (no display is needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tex_safe(text: str) -> str:
    """``text`` shown as written: matplotlib reads a pair of ``$`` as TeX math (a model named ``a$b$_c`` would
    fail to render)."""
    return text.replace("$", r"\$")


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically (a full disk or a kill leaves no half-written image) and close it."""
    from ..files import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        pyplot().close(fig)
    return Path(path)


def _err(value: float | None, ci: Sequence[float] | None) -> list[float]:
    if value is None or not ci:
        return [0.0, 0.0]
    return [max(0.0, value - ci[0]), max(0.0, ci[1] - value)]


def plot_rates(models: Mapping[str, ModelMetrics], path: Path, title: str = "") -> Path:
    """Grouped bars of HmR, HpR and CAS per model with 95% bootstrap error bars."""
    import numpy as np

    plt = pyplot()
    names = list(models)
    metrics = ("HmR", "HpR", "CAS")
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(names) + 2), 4))
    x = np.arange(len(names))
    for k, metric in enumerate(metrics):
        values = [getattr(models[n], metric) or 0.0 for n in names]
        errs = np.array([_err(getattr(models[n], metric), models[n].ci95.get(metric)) for n in names]).T
        ax.bar(x + (k - 1) * width, values, width, yerr=errs, capsize=3, label=metric)
    ax.set_xticks(x, [tex_safe(n) for n in names])
    ax.set_ylim(0, 105)  # room for error bars that reach 100%
    ax.set_ylabel("% of responses (95% CI)")
    ax.set_title(tex_safe(title) or "Harmlessness, helpfulness and combined score", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_reward_boxes(rewards: Mapping[str, Mapping[str, Sequence[float]]], path: Path) -> Path:
    """Reward distributions per model, one panel per prompt category, with the study's thresholds."""
    plt = pyplot()
    names = list(rewards)
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 2.2 * len(names) + 3), 4), sharey=True)
    for ax, category, threshold in zip(axes, ("harmful", "helpful"), (HARMLESS_THRESHOLD, HELPFUL_THRESHOLD)):
        data = [list(rewards[n].get(category, [])) or [float("nan")] for n in names]
        ax.boxplot(data, tick_labels=[tex_safe(n) for n in names])
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1)
        # Said in the title, not a legend: a legend inside the axes covered boxes.
        ax.set_title(f"{category} prompts (dashed: threshold {threshold:g})", fontsize=10)
    axes[0].set_ylabel("reward (raw logit)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_mean_rewards(models: Mapping[str, ModelMetrics], path: Path) -> Path:
    """Mean reward per model and category with 95% bootstrap error bars."""
    import numpy as np

    plt = pyplot()
    names = list(models)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(names) + 2), 4))
    for k, category in enumerate(("harmful", "helpful")):
        values = [models[n].mean_reward.get(category) or 0.0 for n in names]
        errs = np.array([_err(models[n].mean_reward.get(category), models[n].ci95.get(f"mean_reward_{category}"))
                         for n in names]).T
        ax.bar(x + (k - 0.5) * 0.4, values, 0.4, yerr=errs, capsize=3, label=f"{category} prompts")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [tex_safe(n) for n in names])
    ax.set_ylabel("mean reward (95% CI)")
    ax.set_title("Mean reward per category")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # beside the axes: inside, it covered bars
    fig.tight_layout()
    return save_figure(fig, path)


def plot_threshold_sweep(sweep: Mapping, path: Path) -> Path:
    """Share of responses counted good as the threshold moves; dashed lines mark the study's thresholds."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    grid = sweep["thresholds"]
    for ax, category, threshold in zip(axes, ("harmful", "helpful"), (HARMLESS_THRESHOLD, HELPFUL_THRESHOLD)):
        for model, by_cat in sweep["models"].items():
            if category in by_cat:
                ax.plot(grid, by_cat[category], label=tex_safe(model))
        ax.axvline(threshold, color="gray", linestyle="--", linewidth=1)
        ax.set_title("HmR (harmful prompts)" if category == "harmful" else "HpR (helpful prompts)")
        ax.set_xlabel("reward threshold")
    axes[0].set_ylabel("% counted harmless / helpful")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def write_plots(metrics: Metrics, rewards: Mapping[str, Mapping[str, Sequence[float]]], out_dir: Path,
                title: str = "") -> dict[str, Path]:
    """All figures into ``out_dir``; returns their paths by kind."""
    out_dir = Path(out_dir)
    return {
        "rates": plot_rates(metrics.models, out_dir / PLOT_FILES["rates"], title),
        "reward_boxes": plot_reward_boxes(rewards, out_dir / PLOT_FILES["reward_boxes"]),
        "mean_rewards": plot_mean_rewards(metrics.models, out_dir / PLOT_FILES["mean_rewards"]),
        "threshold_sweep": plot_threshold_sweep(metrics.threshold_sweep, out_dir / PLOT_FILES["threshold_sweep"]),
    }

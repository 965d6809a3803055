"""The benchmark's figures: smoothed loss curves, hyperparameter traces, steps to the threshold.

Only :func:`rlopt.bench.stats.write_outputs` imports this module, so matplotlib loads only when
figures are written. Figures are drawn with ``matplotlib.figure.Figure`` directly (no pyplot), so
no global backend or figure registry is touched.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from rlopt.bench.runner import EvaluationResult

__all__ = ["plot_loss_curves", "plot_steps_to_threshold", "plot_traces"]

#: resolution of the saved PNGs
DPI = 110
#: opacity of the min–max band around a mean curve
BAND_ALPHA = 0.15


def _band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds (axis 0), ignoring NaN (diverged tails)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN columns after divergence
        return np.nanmean(values, axis=0), np.nanmin(values, axis=0), np.nanmax(values, axis=0)


def _mean_and_band(ax: Any, steps: np.ndarray, values: np.ndarray, label: str) -> None:
    mean, low, high = _band(values)
    (line,) = ax.plot(steps, mean, label=label, linewidth=1.2)
    ax.fill_between(steps, low, high, color=line.get_color(), alpha=BAND_ALPHA, linewidth=0)


def plot_loss_curves(result: EvaluationResult, curves: dict[str, np.ndarray], path: Path) -> None:
    """Smoothed training loss per method: mean and min–max over seeds, with the threshold."""
    config = result.config
    fig = Figure(figsize=(11, 5.5))
    ax = fig.subplots()
    steps = np.arange(1, config.steps + 1)
    for i, method in enumerate(result.methods):
        _mean_and_band(ax, steps, curves["smoothed_loss"][i], method.name)
    ax.axhline(config.threshold_loss, color="black", linestyle="--", linewidth=0.8,
               label=f"threshold {config.threshold_loss:g}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"smoothed training loss (EMA β={config.smoothing:g})")
    ax.set_title(f"mean and min–max over {len(result.seeds)} held-out seeds")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_traces(result: EvaluationResult, curves: dict[str, np.ndarray], path: Path) -> None:
    """Learning rate, reinforcement Γ and momentum per step: mean and min–max over seeds."""
    fig = Figure(figsize=(11, 9))
    axes = fig.subplots(3, 1, sharex=True)
    steps = np.arange(1, result.config.steps + 1)
    panels = (("lr", "learning rate", True), ("reinforcement", "reinforcement Γ", False),
              ("momentum", "momentum ρ", False))
    for ax, (key, label, log) in zip(axes, panels, strict=True):
        for i, method in enumerate(result.methods):
            _mean_and_band(ax, steps, curves[key][i], method.name)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title(f"hyperparameters per step: mean and min–max over {len(result.seeds)} seeds")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1].set_xlabel("training step")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_steps_to_threshold(result: EvaluationResult, summary: dict[str, dict[str, Any]], path: Path) -> None:
    """Box plot of steps to the threshold over the runs that reached it; "not reached" otherwise."""
    config = result.config
    fig = Figure(figsize=(max(6.0, 1.3 * len(result.methods)), 5))
    ax = fig.subplots()
    positions, data = [], []
    for i, method in enumerate(result.methods, start=1):
        reached = [r.steps_to_threshold for r in result.of_method(method.name) if r.steps_to_threshold is not None]
        if reached:
            positions.append(i)
            data.append(reached)
        else:
            ax.text(i, 0.5, "not reached", transform=ax.get_xaxis_transform(), ha="center", va="center",
                    rotation=90, color="gray")
    if data:
        ax.boxplot(data, positions=positions, widths=0.5)
    labels = [f"{m.name}\nreached {summary[m.name]['reached']}/{summary[m.name]['runs']}" for m in result.methods]
    ax.set_xticks(range(1, len(result.methods) + 1))
    ax.set_xticklabels(labels, fontsize=8, rotation=20, ha="right")
    ax.set_xlim(0.5, len(result.methods) + 0.5)
    if not data:
        ax.set_ylim(0, config.steps)
    ax.set_ylabel(f"steps to smoothed loss <= {config.threshold_loss:g}")
    ax.set_title(f"steps to threshold over the runs that reached it ({config.steps} steps per run)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)

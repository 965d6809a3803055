"""The benchmark's figures: final metrics against the budget, learning-rate traces, smoothed loss curves.

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

__all__ = ["plot_budgets", "plot_loss_curves", "plot_lr_traces"]

#: resolution of the saved PNGs
DPI = 100
#: inches per panel (width, height)
PANEL = (4.6, 3.0)


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over seeds (axis 0), ignoring NaN (diverged tails)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN columns after divergence
        return np.nanmean(values, axis=0)


def _label(result: EvaluationResult, name: str) -> str:
    from rlopt.bench.stats import display_name

    return display_name(result, name)


def plot_budgets(result: EvaluationResult, summary: dict[str, Any], path: Path) -> None:
    """Per task (rows): final training loss and test accuracy against the budget, mean ± 95 % CI per method."""
    from rlopt.bench.stats import CONFIDENCE

    metrics = [("final_train_loss", "final training loss", 1.0, True)]
    if result.config.score_test:
        metrics.append(("test_accuracy", "test accuracy %", 100.0, False))
    rows = len(result.tasks)
    fig = Figure(figsize=(PANEL[0] * len(metrics) + 2.5, PANEL[1] * rows))
    axes = np.atleast_2d(fig.subplots(rows, len(metrics), squeeze=False))
    budgets = np.array(result.budgets)
    for r, task in enumerate(result.tasks):
        for c, (metric, label, scale, log) in enumerate(metrics):
            ax = axes[r][c]
            for name in result.method_names:
                stats = [next(g for g in summary["groups"] if (g["task"], g["budget"], g["method"])
                              == (task.name, b, name))[metric] for b in result.budgets]
                mean = np.array([np.nan if s["mean"] is None else s["mean"] * scale for s in stats])
                ci = np.array([0.0 if s["ci"] is None else s["ci"] * scale for s in stats])
                ax.errorbar(budgets, mean, yerr=ci, marker="o", markersize=3, capsize=2, linewidth=1.1,
                            label=_label(result, name))
            ax.set_xscale("log")
            ax.set_xticks(budgets, [str(b) for b in budgets])
            if log:
                ax.set_yscale("log")
            else:
                ax.set_ylim(-2, 102)  # accuracy: an interval of two seeds can reach far beyond 0-100
            ax.set_title(f"{task.name}: {label}", fontsize=9)
            ax.set_xlabel("budget (optimizer steps)")
            ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"final metrics against the budget: mean ± {CONFIDENCE:.0%} CI over {len(result.seeds)} seeds",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def _task_budget_grid(result: EvaluationResult, curves: dict[str, np.ndarray], trace: str, ylabel: str,
                      title: str, path: Path, *, threshold: float | None = None) -> None:
    rows, cols = len(result.tasks), len(result.budgets)
    fig = Figure(figsize=(PANEL[0] * cols + 2.5, PANEL[1] * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, task in enumerate(result.tasks):
        for c, budget in enumerate(result.budgets):
            ax = axes[r][c]
            steps = np.arange(1, budget + 1)
            values = curves[f"{task.name}/{budget}/{trace}"]
            for i, name in enumerate(result.method_names):
                ax.plot(steps, _nanmean(values[i]), linewidth=1.0, label=_label(result, name))
            if threshold is not None:
                ax.axhline(threshold, color="black", linestyle="--", linewidth=0.7)
            ax.set_yscale("log")
            ax.set_title(f"{task.name}, {budget} steps", fontsize=9)
            ax.set_xlabel("training step")
            ax.set_ylabel(ylabel, fontsize=8)
            ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_lr_traces(result: EvaluationResult, curves: dict[str, np.ndarray], path: Path) -> None:
    """The effective learning rate of every step, mean over seeds, per task (rows) and budget (columns)."""
    _task_budget_grid(result, curves, "lr", "learning rate (Prodigy: d·lr)",
                      f"learning rate per step: mean over {len(result.seeds)} seeds", path)


def plot_loss_curves(result: EvaluationResult, curves: dict[str, np.ndarray], path: Path) -> None:
    """Smoothed training loss per step, mean over seeds, per task and budget, with the threshold."""
    config = result.config
    _task_budget_grid(result, curves, "smoothed_loss", f"smoothed training loss (EMA β={config.smoothing:g})",
                      f"smoothed training loss: mean over {len(result.seeds)} seeds; dashed: threshold "
                      f"{config.threshold_loss:g}", path, threshold=config.threshold_loss)

"""The benchmark's report: summaries, paired wins, the printed table and the files it writes.

Outputs (:func:`write_outputs`) in the output directory:

- ``results.json``: the configuration, one row per method and seed, a summary per method with paired
  wins; "not reached" and the losses of diverged runs are ``null``, never a number;
- ``results.csv``: one row per method and seed (:data:`CSV_COLUMNS`); an empty cell is ``None``/NaN;
- ``curves.npz``: arrays [method, seed, step] of every trace (:data:`rlopt.bench.runner.TRACE_NAMES`),
  plus ``methods`` and ``seeds``;
- ``loss_curves.png``, ``traces.png``, ``steps_to_threshold.png`` (:mod:`rlopt.bench.plots`).

:func:`check_output_dir` refuses an unusable directory before any run starts.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlopt.bench.runner import TRACE_NAMES, EvaluationResult

__all__ = [
    "CSV_COLUMNS",
    "OUTPUT_FILES",
    "SUMMARY_METRICS",
    "OutputDirError",
    "check_output_dir",
    "curve_arrays",
    "format_table",
    "mean_std",
    "paired_wins",
    "summarize",
    "write_outputs",
]

#: RunRecord fields summarised as mean ± std per method
SUMMARY_METRICS: tuple[str, ...] = (
    "final_train_loss",
    "final_train_accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "wall_s",
    "flatness_radius",
)

#: results.csv columns, one row per method × seed. An empty cell is None or NaN: steps_to_threshold
#: not reached, diverged_at did not diverge, flatness not measured, a loss of a diverged run.
#: ``reached`` is True/False; ``s_per_step`` is wall_s over the steps actually run.
CSV_COLUMNS: tuple[str, ...] = (
    "method",
    "seed",
    "steps",
    "reached",
    "steps_to_threshold",
    "final_train_loss",
    "final_train_accuracy",
    "final_smoothed_loss",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "wall_s",
    "s_per_step",
    "diverged_at",
    "flatness_radius",
    "flatness_radius_std",
)

#: what :func:`write_outputs` writes, by key, in the output directory
OUTPUT_FILES: dict[str, str] = {
    "json": "results.json",
    "csv": "results.csv",
    "curves": "curves.npz",
    "loss_curves": "loss_curves.png",
    "traces": "traces.png",
    "steps_to_threshold": "steps_to_threshold.png",
}


# --------------------------------------------------------------------------------------------------
# Summaries and paired wins
# --------------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float | int | None]) -> dict[str, float | int | None]:
    """Mean, sample std (ddof=1; 0 for one value) and count of the finite values; None if none."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(finite):
        return {"mean": None, "std": None, "n": 0}
    std = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": float(finite.mean()), "std": std, "n": len(finite)}


def _better(a: float | None, b: float | None, *, higher: bool) -> bool:
    """Strictly better; None/NaN is the worst value (a tie between two worst values is no win)."""
    worst = -math.inf if higher else math.inf
    a_val = a if a is not None and math.isfinite(a) else worst
    b_val = b if b is not None and math.isfinite(b) else worst
    return a_val > b_val if higher else a_val < b_val


def paired_wins(result: EvaluationResult, method: str, baseline: str) -> dict[str, int]:
    """Seeds on which ``method`` beats ``baseline``: lower final training loss, higher test accuracy,
    fewer steps to the threshold (not reached counts as worse than any number; both not reached is a
    tie). Ties are no win; a diverged run's NaN loss is worse than any number. ``seeds`` is the number
    of pairs compared."""
    wins = {"final_train_loss": 0, "test_accuracy": 0, "steps_to_threshold": 0, "seeds": len(result.seeds)}
    for seed in result.seeds:
        a, b = result.record(method, seed), result.record(baseline, seed)
        wins["final_train_loss"] += _better(a.final_train_loss, b.final_train_loss, higher=False)
        wins["test_accuracy"] += _better(a.test_accuracy, b.test_accuracy, higher=True)
        a_steps = None if a.steps_to_threshold is None else float(a.steps_to_threshold)
        b_steps = None if b.steps_to_threshold is None else float(b.steps_to_threshold)
        wins["steps_to_threshold"] += _better(a_steps, b_steps, higher=False)
    return wins


def summarize(result: EvaluationResult) -> dict[str, dict[str, Any]]:
    """Per method: mean ± std of every metric, steps to threshold over the runs that reached it
    (with ``reached`` k of ``runs``), divergences, and paired wins against every other baseline."""
    summary: dict[str, dict[str, Any]] = {}
    for method in result.methods:
        records = result.of_method(method.name)
        entry: dict[str, Any] = {
            "kind": method.kind,
            "description": method.description,
            "runs": len(records),
            "reached": sum(r.reached for r in records),
            "steps_to_threshold": mean_std([r.steps_to_threshold for r in records]),
            "diverged": sum(r.diverged_at is not None for r in records),
        }
        for metric in SUMMARY_METRICS:
            entry[metric] = mean_std([getattr(r, metric) for r in records])
        entry["wins"] = {
            b: paired_wins(result, method.name, b) for b in result.baseline_names if b != method.name
        }
        summary[method.name] = entry
    return summary


# --------------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------------


def _pm(stat: dict[str, Any], digits: int, *, scale: float = 1.0) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_table(result: EvaluationResult, summary: dict[str, dict[str, Any]] | None = None) -> str:
    """Plain-text tables: mean ± std per method, then paired wins against each baseline."""
    summary = summary or summarize(result)
    config = result.config
    n = len(result.seeds)
    threshold = f"{config.threshold_loss:g}"
    header = ["method", "reached", f"steps to {threshold}", "final train loss", "val acc %", "test loss",
              "test acc %", "wall s"]
    if config.flatness:
        header.append("flatness r")
    rows = []
    for name, entry in summary.items():
        steps = _pm(entry["steps_to_threshold"], 0) if entry["reached"] else "not reached"
        row = [
            name,
            f"{entry['reached']}/{entry['runs']}",
            steps,
            _pm(entry["final_train_loss"], 4),
            _pm(entry["val_accuracy"], 2, scale=100),
            _pm(entry["test_loss"], 4),
            _pm(entry["test_accuracy"], 2, scale=100),
            _pm(entry["wall_s"], 1),
        ]
        if config.flatness:
            row.append(_pm(entry["flatness_radius"], 2))
        rows.append(row)
    diverged = [f"{name} ({e['diverged']})" for name, e in summary.items() if e["diverged"]]
    lines = [
        f"{n} held-out seeds × {config.steps} steps, {config.model}, batch {config.batch_size}, "
        f"{config.train_size} training images; mean ± std over seeds (steps to {threshold}: over the runs "
        f"that reached a smoothed training loss <= {threshold})",
        "",
        *_aligned(header, rows),
    ]
    if diverged:
        lines += ["", "diverged runs (stopped at a NaN/inf loss): " + ", ".join(diverged)]
    baselines = result.baseline_names
    if baselines:
        win_header = ["method", *(f"vs {b}" for b in baselines)]
        win_rows = []
        for name, entry in summary.items():
            cells = [name]
            for b in baselines:
                w = entry["wins"].get(b)
                cells.append("—" if w is None else
                             f"{w['final_train_loss']}/{w['test_accuracy']}/{w['steps_to_threshold']}")
            win_rows.append(cells)
        lines += [
            "",
            f"paired wins out of {n} seeds: lower final train loss / higher test accuracy / fewer steps "
            f"to {threshold} (not reached loses)",
            "",
            *_aligned(win_header, win_rows),
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


class OutputDirError(ValueError):
    """An output directory that cannot take the results; the message is one line for the user."""


def check_output_dir(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path if results can be written there; raises :class:`OutputDirError` otherwise.

    Usable means: an existing writable directory, or a path whose nearest existing ancestor is a
    writable directory (the missing part is created by :func:`write_outputs`). Nothing is created
    here, so a refused path leaves nothing behind.
    """
    path = Path(out)
    if path.exists():
        if not path.is_dir():
            raise OutputDirError(f"output directory {path} exists and is not a directory")
        existing = path
    else:
        existing = next(p for p in path.absolute().parents if p.exists())
        if not existing.is_dir():
            raise OutputDirError(f"output directory {path} cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"output directory {path} cannot be written: no write permission on {existing}")
    return path


def _jsonable(value: Any) -> Any:
    """NaN/inf → None (JSON has no NaN), NumPy scalars → Python, tuples → lists, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def curve_arrays(result: EvaluationResult) -> dict[str, np.ndarray]:
    """Each trace as an array [method, seed, step] (the layout of curves.npz)."""
    arrays: dict[str, np.ndarray] = {}
    for name in TRACE_NAMES:
        arrays[name] = np.stack([
            np.stack([getattr(r.curves, name) for r in result.of_method(m.name)]) for m in result.methods
        ])
    return arrays


def write_outputs(
    result: EvaluationResult, out: str | os.PathLike[str], summary: dict[str, dict[str, Any]] | None = None
) -> dict[str, Path]:
    """Write results.json, results.csv, curves.npz and the three PNGs into ``out``; returns the paths."""
    from rlopt.bench import plots  # matplotlib only when figures are written

    out = check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary or summarize(result)
    rows = [r.row() for r in result.records]
    paths = {key: out / name for key, name in OUTPUT_FILES.items()}
    payload = {
        "config": result.config.to_dict(),
        "seeds": list(result.seeds),
        "methods": [{"name": m.name, "kind": m.kind, "description": m.description} for m in result.methods],
        "rows": rows,
        "summary": summary,
        "files": dict(OUTPUT_FILES),
    }
    paths["json"].write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                             for k, v in row.items()})
    curves = curve_arrays(result)
    arrays: dict[str, Any] = {
        "methods": np.array([m.name for m in result.methods]),
        "seeds": np.array(result.seeds, dtype=np.int64),
        **curves,
    }
    np.savez_compressed(paths["curves"], **arrays)
    plots.plot_loss_curves(result, curves, paths["loss_curves"])
    plots.plot_traces(result, curves, paths["traces"])
    plots.plot_steps_to_threshold(result, summary, paths["steps_to_threshold"])
    return paths

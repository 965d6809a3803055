"""The benchmark's report: confidence intervals, paired wins, verdicts, the lr sweep, and its files.

Every number is tied to its task and budget. Per task × budget × method: the mean of each metric with
a 95 % confidence interval (Student t with n − 1 degrees of freedom over the seeds, :func:`mean_ci`),
the runs that reached the threshold, and steps to it over those runs. Per learned scheduler and
baseline: paired wins per seed (:func:`paired_wins`) and one verdict line. With ``--lr-sweep``: the
mean test accuracy at each starting rate and its spread (max − min) per method.

Outputs (:func:`write_outputs`) in the output directory:

- ``report.md``: the summary tables, verdicts, per task × budget tables, the sweep and the compute
  (what the command line prints);
- ``results.json``: the configuration, tasks, one row per record, the summaries, verdicts, sweep and
  compute; a missing value (not reached, not measured) is ``null``, never a number;
- ``results.csv``: one row per record (:data:`CSV_COLUMNS`); an empty cell is ``None``/NaN;
- ``curves.npz``: for each task and budget, arrays ``TASK/BUDGET/TRACE`` [method, seed, step] of every
  trace (:data:`rlopt.bench.runner.TRACE_NAMES`) of the runs at the methods' own rates, plus
  ``methods``, ``seeds``, ``tasks`` and ``budgets``;
- ``budgets.png``, ``lr_traces.png``, ``loss_curves.png`` (:mod:`rlopt.bench.plots`).

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

from rlopt.bench.methods import POLICY_PREFIX
from rlopt.bench.runner import TRACE_NAMES, EvaluationResult, RunRecord

__all__ = [
    "CONFIDENCE",
    "CSV_COLUMNS",
    "OUTPUT_FILES",
    "SUMMARY_METRICS",
    "OutputDirError",
    "check_output_dir",
    "curve_arrays",
    "display_name",
    "format_report",
    "format_totals",
    "mean_ci",
    "paired_wins",
    "summarize",
    "t_quantile",
    "write_outputs",
]

#: the confidence level of every interval
CONFIDENCE = 0.95

#: RunRecord fields summarised as mean ± CI per task × budget × method
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

#: results.csv columns, one row per record. An empty cell is None or NaN: steps_to_threshold not
#: reached, diverged_at did not diverge, flatness not measured, test not scored. ``sweep_lr`` is empty
#: for runs at the method's own rate.
CSV_COLUMNS: tuple[str, ...] = (
    "task",
    "budget",
    "method",
    "sweep_lr",
    "seed",
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
    "diverged",
    "diverged_at",
    "flatness_radius",
    "flatness_radius_std",
)

#: what :func:`write_outputs` writes, by key, in the output directory
OUTPUT_FILES: dict[str, str] = {
    "report": "report.md",
    "json": "results.json",
    "csv": "results.csv",
    "curves": "curves.npz",
    "budgets": "budgets.png",
    "lr_traces": "lr_traces.png",
    "loss_curves": "loss_curves.png",
}


# --------------------------------------------------------------------------------------------------
# Confidence intervals
# --------------------------------------------------------------------------------------------------


def _t_central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:  # odd: (2/π)(θ + sin θ (cos θ + 2/3 cos³θ + … + (2·4…(df−3))/(1·3…(df−2)) cos^(df−2) θ))
        total, term = 0.0, math.cos(theta)
        if df > 1:
            total = term
            for k in range(3, df - 1, 2):
                term *= (k - 1) / k * cos2
                total += term
        return 2.0 / math.pi * (theta + sin * total)
    total = term = 1.0  # even: sin θ (1 + 1/2 cos²θ + … + (1·3…(df−3))/(2·4…(df−2)) cos^(df−2) θ)
    for k in range(2, df - 1, 2):
        term *= (k - 1) / k * cos2
        total += term
    return sin * total


def t_quantile(q: float, df: int) -> float:
    """The ``q``-quantile (0.5 <= q < 1) of Student's t with ``df`` >= 1 degrees of freedom (bisection
    on the exact distribution function; e.g. 2.776 for q = 0.975, df = 4)."""
    if not 0.5 <= q < 1 or df < 1 or int(df) != df:
        raise ValueError(f"t_quantile needs 0.5 <= q < 1 and an integer df >= 1, got q={q}, df={df}")
    central = 2 * q - 1
    low, high = 0.0, 1.0
    while _t_central_probability(high, df) < central:
        low, high = high, high * 2
    for _ in range(200):
        mid = 0.5 * (low + high)
        if _t_central_probability(mid, df) < central:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * high:
            break
    return 0.5 * (low + high)


def mean_ci(values: Sequence[float | int | None], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean, confidence-interval half-width (Student t, n − 1 dof: t·s/√n; ``None`` for one value),
    sample std (ddof=1) and count of the finite values; all ``None`` without any."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    if not n:
        return {"mean": None, "ci": None, "std": None, "n": 0}
    mean = sum(finite) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else 0.0
    ci = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n) if n > 1 else None
    return {"mean": mean, "ci": ci, "std": std, "n": n}


# --------------------------------------------------------------------------------------------------
# Paired wins, summaries, verdicts, sweep
# --------------------------------------------------------------------------------------------------


def _beats(a: RunRecord, b: RunRecord, metric: str, *, higher: bool) -> bool:
    """``a`` strictly better than ``b`` on ``metric``; a diverged run never beats one that did not, and
    always loses to it; two diverged runs tie."""
    if a.diverged or b.diverged:
        return b.diverged and not a.diverged
    x, y = getattr(a, metric), getattr(b, metric)
    if not (math.isfinite(x) and math.isfinite(y)):
        return False
    return x > y if higher else x < y


def _fewer_steps(a: RunRecord, b: RunRecord) -> bool:
    """Fewer steps to the threshold; not reached is worse than any number, both not reached tie."""
    if a.steps_to_threshold is None:
        return False
    return b.steps_to_threshold is None or a.steps_to_threshold < b.steps_to_threshold


def paired_wins(result: EvaluationResult, task: str, budget: int, method: str, baseline: str) -> dict[str, int]:
    """Seeds on which ``method`` beats ``baseline`` on ``task`` at ``budget`` steps: lower final training
    loss, higher test accuracy, lower test loss, fewer steps to the threshold. Ties are no win; see
    :func:`_beats` for diverged runs. ``seeds`` is the number of pairs compared."""
    wins = {"final_train_loss": 0, "test_accuracy": 0, "test_loss": 0, "steps_to_threshold": 0,
            "seeds": len(result.seeds)}
    for seed in result.seeds:
        a, b = result.record(task, budget, method, seed), result.record(task, budget, baseline, seed)
        wins["final_train_loss"] += _beats(a, b, "final_train_loss", higher=False)
        wins["test_accuracy"] += _beats(a, b, "test_accuracy", higher=True)
        wins["test_loss"] += _beats(a, b, "test_loss", higher=False)
        wins["steps_to_threshold"] += _fewer_steps(a, b)
    return wins


def display_name(result: EvaluationResult, method: str) -> str:
    """``learned`` for the one learned scheduler (``learned:PATH`` for several), else the method's name."""
    if not method.startswith(POLICY_PREFIX):
        return method
    return "learned" if len(result.policy_names) == 1 else f"learned:{method[len(POLICY_PREFIX):]}"


def _group(result: EvaluationResult, records: list[RunRecord], kind: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": kind,
        "runs": len(records),
        "reached": sum(r.reached for r in records),
        "steps_to_threshold": mean_ci([r.steps_to_threshold for r in records]),
        "diverged": sum(r.diverged for r in records),
    }
    for metric in SUMMARY_METRICS:
        entry[metric] = mean_ci([getattr(r, metric) for r in records])
    return entry


def _verdict_line(result: EvaluationResult, policy: str, baseline: str, wins: dict[str, int]) -> str:
    n = wins["seeds"]
    parts = [f"{wins['final_train_loss']}/{n} seeds lower train loss"]
    if result.config.score_test:
        parts += [f"{wins['test_accuracy']}/{n} higher test accuracy", f"{wins['test_loss']}/{n} lower test loss"]
    return f"{display_name(result, policy)} vs {baseline}: {', '.join(parts)}"


def summarize(result: EvaluationResult) -> dict[str, Any]:
    """The report's numbers: ``groups`` (per task × budget × method at its own rate), ``verdicts``
    (per task × budget × learned scheduler × baseline), ``sweep`` (per task × budget × swept method)
    and ``compute``."""
    groups, verdicts, sweep = [], [], []
    for task in result.tasks:
        for budget in result.budgets:
            for method in result.methods:
                entry = _group(result, result.runs(task.name, budget, method.name), method.kind)
                groups.append({"task": task.name, "budget": budget, "method": method.name, **entry})
            for policy in result.policy_names:
                for baseline in result.baseline_names:
                    wins = paired_wins(result, task.name, budget, policy, baseline)
                    verdicts.append({"task": task.name, "budget": budget, "policy": policy, "baseline": baseline,
                                     "wins": wins, "line": _verdict_line(result, policy, baseline, wins)})
            for method in result.methods:
                rates = result.sweep_rates(method)
                if not rates:
                    continue
                cells: list[dict[str, Any]] = []
                for rate in rates:
                    runs = result.sweep_runs(task.name, budget, method, rate)
                    cells.append({"lr": rate, "test_accuracy": mean_ci([r.test_accuracy for r in runs]),
                                  "final_train_loss": mean_ci([r.final_train_loss for r in runs]),
                                  "diverged": sum(r.diverged for r in runs), "runs": len(runs)})
                means = [c["test_accuracy"]["mean"] for c in cells if c["test_accuracy"]["mean"] is not None]
                sweep.append({"task": task.name, "budget": budget, "method": method.name, "rates": cells,
                              "spread": max(means) - min(means) if means else None})
    wall = result.wall_s
    compute = {"runs": len(result.records), "passes": result.passes, "cpu_s": result.cpu_s, "wall_s": wall,
               "runs_per_s": len(result.records) / wall if wall > 0 else None}
    return {"groups": groups, "verdicts": verdicts, "sweep": sweep, "compute": compute}


def _lookup(summary: dict[str, Any], task: str, budget: int, method: str) -> dict[str, Any]:
    for entry in summary["groups"]:
        if (entry["task"], entry["budget"], entry["method"]) == (task, budget, method):
            return entry
    raise KeyError((task, budget, method))


# --------------------------------------------------------------------------------------------------
# Report (markdown)
# --------------------------------------------------------------------------------------------------


def _pm(stat: dict[str, Any], digits: int, *, scale: float = 1.0) -> str:
    """``mean ± CI`` (the mean alone for one seed); ``n/a`` without values."""
    if stat["mean"] is None:
        return "n/a"
    if stat["ci"] is None:
        return f"{stat['mean'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['ci'] * scale:.{digits}f}"


def _table(header: list[str], rows: list[list[str]], *, right_from: int = 1) -> list[str]:
    """A markdown table whose columns are padded to line up in a terminal too."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i < right_from else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                              strict=True))]
        return "| " + " | ".join(padded) + " |"

    dashes = ["-" * (w + 1) + ":" if i >= right_from else "-" * (w + 2) for i, w in enumerate(widths)]
    rule = "|" + "|".join(dashes) + "|"
    return [line(header), rule, *(line(r) for r in rows)]


def _summary_table(result: EvaluationResult, summary: dict[str, Any], metric: str, digits: int,
                   scale: float = 1.0) -> list[str]:
    header = ["task", "budget", *(display_name(result, m) for m in result.method_names)]
    rows = []
    for task in result.tasks:
        for budget in result.budgets:
            cells = [_pm(_lookup(summary, task.name, budget, m)[metric], digits, scale=scale)
                     for m in result.method_names]
            rows.append([task.name, str(budget), *cells])
    return _table(header, rows, right_from=1)


def _oracle_notes(result: EvaluationResult, task: str, budget: int) -> list[str]:
    if result.oracle is None:
        return []
    notes = []
    for name in result.method_names:
        if name.startswith("oracle-"):
            optimizer = name.removeprefix("oracle-")
            choice = result.oracle.choice(task, budget, optimizer)  # type: ignore[arg-type]
            notes.append(f"{name}: {choice.schedule}, lr {choice.lr:g} (validation loss {choice.val_loss:.4f})")
    return [f"Tuned choices: {'; '.join(notes)}."] if notes else []


def format_totals(result: EvaluationResult) -> str:
    """One line: runs, training passes, wall and CPU seconds, runs per second."""
    runs, wall = len(result.records), result.wall_s
    rate = f"{runs / wall:.2f}" if wall > 0 else "n/a"
    return (f"{runs} runs (task × budget × method × seed) in {result.passes} training passes: {wall:.1f} s wall, "
            f"{result.cpu_s:.1f} s CPU (workers included), {rate} runs/s")


def format_report(result: EvaluationResult, summary: dict[str, Any] | None = None) -> str:
    """The report as markdown: summary tables across tasks and budgets, per task × budget tables with
    their verdict lines, the lr sweep, and the compute."""
    summary = summary or summarize(result)
    config = result.config
    threshold = f"{config.threshold_loss:g}"
    n = len(result.seeds)
    scored = config.score_test
    lines = [
        "# Benchmark report",
        "",
        f"Tasks {', '.join(t.name for t in result.tasks)}; budgets {', '.join(map(str, result.budgets))} steps; "
        f"{n} seeds each (HELD_OUT_SEED_BASE + 0…{n - 1}). Cells: mean ± {CONFIDENCE:.0%} confidence interval "
        f"(Student t, {n - 1} degrees of freedom) over the seeds. A run that diverged scores as the untrained "
        "model it started from (its losses and about chance accuracy).",
        "",
        "Methods:",
        *(f"- {display_name(result, m.name)}: {m.description}" for m in result.methods),
        "",
    ]
    if scored:
        lines += ["## Summary: test accuracy %", "", *_summary_table(result, summary, "test_accuracy", 2, 100), ""]
    lines += ["## Summary: final training loss", "", *_summary_table(result, summary, "final_train_loss", 4), ""]

    header = ["method", f"reached {threshold}", f"steps to {threshold}", "final train loss", "val loss"]
    if scored:
        header += ["test loss", "test acc %"]
    header += ["diverged", "wall s"]
    if config.flatness:
        header.append("flatness r")
    for task in result.tasks:
        for budget in result.budgets:
            rows = []
            for name in result.method_names:
                entry = _lookup(summary, task.name, budget, name)
                steps = _pm(entry["steps_to_threshold"], 0) if entry["reached"] else "not reached"
                row = [display_name(result, name), f"{entry['reached']}/{entry['runs']}", steps,
                       _pm(entry["final_train_loss"], 4), _pm(entry["val_loss"], 4)]
                if scored:
                    row += [_pm(entry["test_loss"], 4), _pm(entry["test_accuracy"], 2, scale=100)]
                row += [f"{entry['diverged']}/{entry['runs']}", _pm(entry["wall_s"], 1)]
                if config.flatness:
                    row.append(_pm(entry["flatness_radius"], 2))
                rows.append(row)
            verdicts = [v["line"] for v in summary["verdicts"] if (v["task"], v["budget"]) == (task.name, budget)]
            lines += [f"## {task.name}, {budget} steps", "", f"{task.description}.", "", *_table(header, rows), ""]
            lines += _oracle_notes(result, task.name, budget)
            if verdicts:
                lines += ["", "Paired over seeds:", *(f"- {line}" for line in verdicts)]
            lines.append("")

    if summary["sweep"]:
        families = {m.name: m.family for m in result.methods}
        lines += ["## lr sweep: mean test accuracy % by starting rate", "",
                  "Spread: max − min of the mean test accuracy over the starting rates, in percentage points; "
                  "(k div.): runs that diverged.", ""]
        for task in result.tasks:
            for budget in result.budgets:
                entries = [e for e in summary["sweep"] if (e["task"], e["budget"]) == (task.name, budget)]
                for family, title in (("sgd", "SGD"), ("adam", "Adam")):
                    chosen = [e for e in entries if families[e["method"]] == family]
                    if not chosen:
                        continue
                    sweep_header = ["method", *(f"lr {c['lr']:g}" for c in chosen[0]["rates"]), "spread"]
                    rows = []
                    for e in chosen:
                        cells = []
                        for c in e["rates"]:
                            cell = _pm(c["test_accuracy"], 2, scale=100)
                            cells.append(f"{cell} ({c['diverged']} div.)" if c["diverged"] else cell)
                        spread = "n/a" if e["spread"] is None else f"{e['spread'] * 100:.2f}"
                        rows.append([display_name(result, e["method"]), *cells, spread])
                    lines += [f"### {task.name}, {budget} steps: {title} methods", "", *_table(sweep_header, rows), ""]
    lines += ["## Compute", "", format_totals(result), ""]
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
    """Each trace of each task and budget as an array [method, seed, step], keyed ``TASK/BUDGET/TRACE``
    (the runs at the methods' own rates)."""
    arrays: dict[str, np.ndarray] = {}
    for task in result.tasks:
        for budget in result.budgets:
            runs = [result.runs(task.name, budget, m) for m in result.method_names]
            for name in TRACE_NAMES:
                arrays[f"{task.name}/{budget}/{name}"] = np.stack([
                    np.stack([getattr(r.curves, name) for r in method_runs]) for method_runs in runs
                ])
    return arrays


def write_outputs(
    result: EvaluationResult, out: str | os.PathLike[str], summary: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write report.md, results.json, results.csv, curves.npz and the PNGs into ``out``; returns the paths."""
    from rlopt.bench import plots  # matplotlib only when figures are written

    out = check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary or summarize(result)
    rows = [r.row() for r in result.records]
    paths = {key: out / name for key, name in OUTPUT_FILES.items()}
    paths["report"].write_text(format_report(result, summary))
    payload = {
        "config": result.config.to_dict(),
        "tasks": [{"name": t.name, "description": t.description, "dataset": t.dataset, "model": t.model,
                   "batch_size": t.batch_size, "optimizer": t.optimizer, "split": t.split} for t in result.tasks],
        "budgets": list(result.budgets),
        "seeds": list(result.seeds),
        "methods": [{"name": m.name, "kind": m.kind, "description": m.description, "budget_aware": m.budget_aware}
                    for m in result.methods],
        "oracle": None if result.oracle is None else {"source": result.oracle.source,
                                                      "tuning_seeds": result.oracle.tuning_seeds},
        "rows": rows,
        **summary,
        "files": dict(OUTPUT_FILES),
    }
    paths["json"].write_text(json.dumps(_jsonable(payload), indent=1, allow_nan=False) + "\n")
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                             for k, v in row.items()})
    curves = curve_arrays(result)
    np.savez_compressed(
        paths["curves"],
        methods=np.array(result.method_names),
        seeds=np.array(result.seeds, dtype=np.int64),
        tasks=np.array([t.name for t in result.tasks]),
        budgets=np.array(result.budgets, dtype=np.int64),
        **curves,  # type: ignore[arg-type]
    )
    plots.plot_budgets(result, summary, paths["budgets"])
    plots.plot_lr_traces(result, curves, paths["lr_traces"])
    plots.plot_loss_curves(result, curves, paths["loss_curves"])
    return paths

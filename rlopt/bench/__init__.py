"""The benchmark engine: learned schedulers against baselines on held-out seeds.

* :mod:`rlopt.bench.methods` — the baselines and the learned-scheduler method (:class:`Method`);
* :mod:`rlopt.bench.runner` — :class:`EvaluationConfig`, the task data, one run, all runs;
* :mod:`rlopt.bench.stats` — summaries, paired wins, the printed table, results.json/csv/npz;
* :mod:`rlopt.bench.plots` — the figures (matplotlib, imported only when they are written);
* :mod:`rlopt.bench.flatness` — Zhang et al.'s flatness radius;
* :mod:`rlopt.bench.cli` — the ``evaluate.py`` / ``rlopt-evaluate`` command line.

``import rlopt`` never imports this package; this package never imports stable-baselines3,
gymnasium, ``envs`` or ``agents``: a policy runs as :class:`rlopt.LearnedScheduler`.

Example:
    >>> from rlopt.bench import EvaluationConfig, evaluate, format_table
    >>> result = evaluate(EvaluationConfig(baselines=("sgd", "adam"), seeds=2, steps=300), "runs/eval")
    >>> print(format_table(result))
"""

from rlopt.bench.flatness import FlatnessSettings, flatness_radius, line_search_radius
from rlopt.bench.methods import (
    BASELINE_NAMES,
    POLICY_PREFIX,
    BaselineName,
    BaselineSettings,
    Hook,
    Method,
    RunContext,
    baseline,
    parse_baseline_names,
    policy_method,
    resolve_method,
)
from rlopt.bench.runner import (
    DEVICES,
    TRACE_NAMES,
    Device,
    EvaluationConfig,
    EvaluationResult,
    PreparedEvaluation,
    RunCurves,
    RunRecord,
    TaskData,
    evaluate,
    held_out_seeds,
    load_task_data,
    prepare,
    run,
    run_one,
)
from rlopt.bench.stats import (
    CSV_COLUMNS,
    OUTPUT_FILES,
    OutputDirError,
    check_output_dir,
    format_table,
    paired_wins,
    summarize,
    write_outputs,
)

__all__ = [
    "BASELINE_NAMES",
    "CSV_COLUMNS",
    "DEVICES",
    "OUTPUT_FILES",
    "POLICY_PREFIX",
    "TRACE_NAMES",
    "BaselineName",
    "BaselineSettings",
    "Device",
    "EvaluationConfig",
    "EvaluationResult",
    "FlatnessSettings",
    "Hook",
    "Method",
    "OutputDirError",
    "PreparedEvaluation",
    "RunContext",
    "RunCurves",
    "RunRecord",
    "TaskData",
    "baseline",
    "check_output_dir",
    "evaluate",
    "flatness_radius",
    "format_table",
    "held_out_seeds",
    "line_search_radius",
    "load_task_data",
    "paired_wins",
    "parse_baseline_names",
    "policy_method",
    "prepare",
    "resolve_method",
    "run",
    "run_one",
    "summarize",
    "write_outputs",
]

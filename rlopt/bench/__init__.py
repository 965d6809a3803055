"""The benchmark engine: learned schedulers against the peers a user would pick instead.

* :mod:`rlopt.bench.config` — :class:`EvaluationConfig`, the named grids, the lr sweep;
* :mod:`rlopt.bench.methods` — baselines (constant rates, warm-up schedules over the budget,
  Schedule-Free, Prodigy, the tuned oracle) and the learned-scheduler method (:class:`Method`);
* :mod:`rlopt.bench.oracle` — the tuned oracle: its grid, tuning seeds, selection and stored file;
* :mod:`rlopt.bench.runner` — the tasks' data, one training pass, all passes over worker processes;
* :mod:`rlopt.bench.stats` — confidence intervals, paired wins, verdicts, the report and its files;
* :mod:`rlopt.bench.plots` — the figures (matplotlib, imported only when they are written);
* :mod:`rlopt.bench.flatness` — Zhang et al.'s flatness radius;
* :mod:`rlopt.bench.cli` — the ``evaluate.py`` / ``rlopt-evaluate`` command line.

``import rlopt`` never imports this package; this package never imports stable-baselines3,
gymnasium, ``envs`` or ``agents`` (a policy runs as :class:`rlopt.LearnedScheduler`), and imports
``schedulefree`` and ``prodigyopt`` only when their methods are built.

Example:
    >>> from rlopt.bench import EvaluationConfig, evaluate, format_report
    >>> config = EvaluationConfig(tasks=("mnist-cnn",), budgets=(250, 1000), seeds=2, baselines=("sgd", "prodigy"))
    >>> result = evaluate(config, "runs/eval")
    >>> print(format_report(result))
"""

from rlopt.bench.config import (
    DEVICES,
    GRIDS,
    Device,
    EvaluationConfig,
    Grid,
    SweepSettings,
    held_out_seeds,
    parse_budgets,
    parse_task_names,
)
from rlopt.bench.flatness import FlatnessSettings, flatness_radius, line_search_radius
from rlopt.bench.methods import (
    BASELINE_NAMES,
    ORACLE_NAMES,
    POLICY_PREFIX,
    BaselineName,
    BaselineSettings,
    Hook,
    Method,
    MethodRun,
    RunContext,
    baseline,
    parse_baseline_names,
    policy_method,
    resolve_method,
    schedule_factor,
)
from rlopt.bench.oracle import OracleConfig, OracleGrid, OracleTable, compute_oracle, load_oracle, select_oracle
from rlopt.bench.runner import (
    TRACE_NAMES,
    EvaluationResult,
    PreparedEvaluation,
    RunCurves,
    RunRecord,
    TaskData,
    evaluate,
    load_task_data,
    plan_jobs,
    prepare,
    run,
    run_one,
)
from rlopt.bench.stats import (
    CSV_COLUMNS,
    OUTPUT_FILES,
    OutputDirError,
    check_output_dir,
    format_report,
    mean_ci,
    paired_wins,
    summarize,
    t_quantile,
    write_outputs,
)

__all__ = [
    "BASELINE_NAMES",
    "CSV_COLUMNS",
    "DEVICES",
    "GRIDS",
    "ORACLE_NAMES",
    "OUTPUT_FILES",
    "POLICY_PREFIX",
    "TRACE_NAMES",
    "BaselineName",
    "BaselineSettings",
    "Device",
    "EvaluationConfig",
    "EvaluationResult",
    "FlatnessSettings",
    "Grid",
    "Hook",
    "Method",
    "MethodRun",
    "OracleConfig",
    "OracleGrid",
    "OracleTable",
    "OutputDirError",
    "PreparedEvaluation",
    "RunContext",
    "RunCurves",
    "RunRecord",
    "SweepSettings",
    "TaskData",
    "baseline",
    "check_output_dir",
    "compute_oracle",
    "evaluate",
    "flatness_radius",
    "format_report",
    "held_out_seeds",
    "line_search_radius",
    "load_oracle",
    "load_task_data",
    "mean_ci",
    "paired_wins",
    "parse_baseline_names",
    "parse_budgets",
    "parse_task_names",
    "plan_jobs",
    "policy_method",
    "prepare",
    "resolve_method",
    "run",
    "run_one",
    "schedule_factor",
    "select_oracle",
    "summarize",
    "t_quantile",
    "write_outputs",
]

"""The benchmark's command line (``evaluate.py`` and the ``rlopt-evaluate`` console script).

The flags are :class:`rlopt.bench.config.EvaluationConfig`'s fields, parsed by ``tyro.cli`` (their
docstrings are the help), plus ``--out`` and ``--progress/--no-progress``. Every problem found before
training (a bad value, an unusable output directory, policy file, oracle file, dataset, device, a
missing peer package, or with ``--backend ray`` a missing Ray or an unreachable cluster) is one line on
stderr and exit status 2; the output directory is checked first, and nothing is created on failure.
:func:`parse_config` is the same parsing for other command lines (``benchmarks/oracle.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, TypeVar

import tyro

from rlopt.bench.config import GRIDS, EvaluationConfig, baseline_help
from rlopt.bench.ray_backend import BackendUnavailable
from rlopt.bench.runner import TRACE_NAMES, prepare, run
from rlopt.bench.stats import OUTPUT_FILES, check_output_dir, format_report, format_totals, summarize, write_outputs
from rlopt.cli import UsageError, one_line, parse_config, with_flag_names
from rlopt.data import DataError
from rlopt.scheduler import PolicyFileError

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "EvaluateArgs", "UsageError", "main", "parse_args", "parse_config"]

T = TypeVar("T")

#: the name messages start with when ``main`` is given its arguments (tests, other programs)
PROG = "evaluate.py"
#: exit status for a setting, file or directory that cannot be used
EXIT_USAGE = 2
#: exit status after Ctrl-C (128 + SIGINT)
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class EvaluateArgs:
    """The command line: an evaluation, where its results go, and whether to show progress."""

    config: Annotated[EvaluationConfig, tyro.conf.arg(name="", prefix_name=False)] = field(
        default_factory=EvaluationConfig
    )
    """what to compare, on which tasks, for which budgets."""
    out: Annotated[Path, tyro.conf.arg(metavar="DIR")] = Path("runs/eval")
    """output directory (created if missing; existing result files in it are replaced)."""
    progress: bool = True
    """show a progress bar on stderr."""


def _description() -> str:
    outputs = ", ".join(OUTPUT_FILES.values())
    grids = "; ".join(
        f"{name}: tasks {','.join(g.tasks)}, budgets {','.join(map(str, g.budgets))}, {g.seeds} seeds, "
        f"baselines {','.join(g.baselines) if name != 'full' else 'all'}"
        for name, g in GRIDS.items()
    )
    return (
        "Train a fresh model with every method (exported learned schedulers and the baselines a user would pick "
        "instead) on every task, at every budget, from held-out seeds that agent training and oracle tuning never "
        "draw, and compare them. Within a task and seed every method starts from the same initial weights and "
        "sees the same batches in the same order (paired comparison). Budget-aware methods (cosine, linear, the "
        "oracles, learned schedulers) are told the budget. Per task x budget: mean and 95% confidence interval "
        "(Student t) of the final training loss, test loss and accuracy; steps to the threshold where reached; "
        "one verdict line (paired wins per seed) per learned scheduler and baseline.\n\n"
        f"Grids (--grid; --tasks/--budgets/--seeds/--baselines replace their part): {grids}.\n\n"
        f"Baselines: {baseline_help()}.\n\n"
        f"Outputs in --out: {outputs} (curves.npz: arrays TASK/BUDGET/TRACE [method, seed, step] of "
        f"{', '.join(TRACE_NAMES)}).\n\n"
        "Exit status 2: an unusable setting, policy file, oracle file, dataset, device, package or output directory."
    )


def parse_args(argv: Sequence[str] | None = None, *, prog: str = PROG) -> EvaluateArgs:
    """The command line as :class:`EvaluateArgs`; raises :class:`UsageError` (one line) for bad input.

    ``--help`` prints the help and raises ``SystemExit(0)``, as argparse does.
    """
    return parse_config(EvaluateArgs, argv, prog=prog, description=_description(), fields_of=EvaluationConfig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; returns the exit status."""
    prog = PROG if argv is not None else (Path(sys.argv[0]).name or PROG)

    def fail(message: str) -> int:
        print(f"{prog}: {with_flag_names(one_line(message), EvaluationConfig)}", file=sys.stderr)
        return EXIT_USAGE

    try:
        args = parse_args(argv, prog=prog)
    except UsageError as exc:
        return fail(str(exc))
    except SystemExit as exc:  # --help
        return 0 if exc.code is None else int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        check_output_dir(args.out)  # before anything is loaded or trained
        prepared = prepare(args.config)
    except (PolicyFileError, DataError, ValueError, RuntimeError) as exc:
        return fail(str(exc))
    try:
        result = run(prepared, progress=args.progress)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BackendUnavailable as exc:  # --backend ray: the cluster cannot be joined (checked before any pass)
        return fail(str(exc))
    summary = summarize(result)
    print(format_report(result, summary))  # first: the report survives an output directory removed meanwhile
    try:
        paths = write_outputs(result, args.out, summary)
    except (OSError, ValueError) as exc:  # the directory became unusable during the runs
        print(f"{prog}: could not write the results to {args.out}: {one_line(str(exc))}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    print(format_totals(result))
    return 0

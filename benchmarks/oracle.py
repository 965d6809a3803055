"""Compute the benchmark's tuned oracle and store it in benchmarks/results/oracle.json.

For each task and budget, and for SGD and Adam, every schedule (constant; cosine and linear decay to 0
with the cosine/linear baselines' warm-up) at every rate of a 5-point log grid trains on tuning seeds
(TUNING_SEED_BASE + i, never evaluation seeds); the lowest mean final validation loss wins
(rlopt.bench.oracle). ``evaluate.py``'s ``oracle-sgd`` and ``oracle-adam`` then run the stored choices.

The file records the command, the whole grid's validation losses and the compute (runs, CPU and wall
seconds). By default a run merges its tasks and budgets into an existing file tuned the same way, so
the tasks can be computed one at a time:

    python benchmarks/oracle.py --tasks mnist-cnn --workers 2            # the default grid's task
    python benchmarks/oracle.py --tasks held-out --workers 2             # the rest of the full grid
    python benchmarks/oracle.py --help
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import tyro

from rlopt.bench.cli import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, parse_config
from rlopt.bench.oracle import (
    OracleConfig,
    check_mergeable,
    compute_oracle,
    merge_oracle,
    oracle_header,
    write_oracle,
)
from rlopt.bench.stats import OutputDirError, check_output_dir
from rlopt.data import DataError

RESULTS = Path(__file__).resolve().parent / "results" / "oracle.json"
PROG = "oracle.py"


@dataclass(frozen=True)
class OracleArgs:
    """The oracle's command line."""

    config: Annotated[OracleConfig, tyro.conf.arg(name="", prefix_name=False)] = field(default_factory=OracleConfig)
    """what to tune, on which data."""
    out: Annotated[Path, tyro.conf.arg(metavar="FILE")] = RESULTS
    """the oracle file (evaluate.py reads benchmarks/results/oracle.json by default)."""
    merge: bool = True
    """add these tasks and budgets to an existing file tuned the same way (replacing their entries)."""
    progress: bool = True
    """show a progress bar on stderr."""


def _summary(payload: dict[str, Any]) -> str:
    lines = ["task  budget  optimizer  schedule  lr  validation loss"]
    for task, budgets in payload["entries"].items():
        for budget, optimizers in budgets.items():
            for optimizer, entry in optimizers.items():
                lines.append(f"{task}  {budget}  {optimizer}  {entry['schedule']}  {entry['lr']:g}  "
                             f"{entry['val_loss']:.4f}")
    total = payload["total_compute"]
    lines.append(f"compute (all runs in the file): {total['runs']} runs in {total['passes']} training passes, "
                 f"{total['cpu_s']:.0f} s CPU, {total['wall_s']:.0f} s wall")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Tune, select and write the oracle file; returns the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)

    def fail(message: str) -> int:
        print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_USAGE

    try:
        args = parse_config(OracleArgs, words, prog=PROG, description=__doc__ or "", fields_of=OracleConfig)
    except UsageError as exc:
        return fail(str(exc))
    except SystemExit as exc:  # --help
        return 0 if exc.code is None else EXIT_USAGE
    old: dict[str, Any] | None = None
    try:
        check_output_dir(args.out.parent)
        if args.out.is_dir():
            raise OutputDirError(f"{args.out} is a directory, not an oracle file")
        if args.merge and args.out.is_file():
            old = json.loads(args.out.read_text())
            check_mergeable(old, oracle_header(args.config))
    except (OSError, ValueError) as exc:
        return fail(f"{args.out}: {exc}")
    command = shlex.join(["python", "benchmarks/oracle.py", *words])
    try:
        payload = compute_oracle(args.config, progress=args.progress, command=command)
    except (DataError, ValueError, RuntimeError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if old is not None:
        payload = merge_oracle(old, payload)
    path = write_oracle(payload, args.out)
    print(_summary(json.loads(path.read_text())))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

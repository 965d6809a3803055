"""The benchmark's command line (``evaluate.py`` and the ``rlopt-evaluate`` console script).

The flags are :class:`rlopt.bench.runner.EvaluationConfig`'s fields, parsed by ``tyro.cli`` (their
docstrings are the help), plus ``--out`` and ``--progress/--no-progress``. Every problem found before
training (a bad value, an unusable output directory, policy file, dataset or device) is one line on
stderr and exit status 2; the output directory is checked first, and nothing is created on failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from rlopt.bench.methods import BASELINE_NAMES, baseline
from rlopt.bench.runner import TRACE_NAMES, EvaluationConfig, prepare, run
from rlopt.bench.stats import OUTPUT_FILES, check_output_dir, format_table, summarize, write_outputs
from rlopt.data import DataError
from rlopt.scheduler import PolicyFileError

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "EvaluateArgs", "UsageError", "main", "parse_args"]

#: the name messages start with when ``main`` is given its arguments (tests, other programs)
PROG = "evaluate.py"
#: exit status for a setting, file or directory that cannot be used
EXIT_USAGE = 2
#: exit status after Ctrl-C (128 + SIGINT)
EXIT_INTERRUPTED = 130

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BOX = "│╭╮╰╯─ "
#: where tyro's error box stops saying what went wrong
_BOX_TRAILERS = ("Argument helptext:", "For full helptext")
#: EvaluationConfig fields whose names appear in messages, and the flags users type for them
_FLAG_NAMES = {f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(EvaluationConfig) if "_" in f.name}
#: a field name standing alone (not part of a path or another name)
_FIELD_IN_MESSAGE = re.compile(r"(?<![\w/\\.-])(" + "|".join(map(re.escape, _FLAG_NAMES)) + r")(?![\w/\\-]|\.\w)")


@dataclass(frozen=True)
class EvaluateArgs:
    """The command line: an evaluation, where its results go, and whether to show progress."""

    config: Annotated[EvaluationConfig, tyro.conf.arg(name="", prefix_name=False)] = field(
        default_factory=EvaluationConfig
    )
    """what to compare, on which task, for how long."""
    out: Annotated[Path, tyro.conf.arg(metavar="DIR")] = Path("runs/eval")
    """output directory (created if missing; existing result files in it are replaced)."""
    progress: bool = True
    """show a progress bar on stderr."""


class UsageError(ValueError):
    """A command line that cannot be used; the message is one line."""


def _description() -> str:
    baselines = "; ".join(f"{name}: {baseline(name).description}" for name in BASELINE_NAMES)
    outputs = ", ".join(OUTPUT_FILES.values())
    return (
        "Train a fresh model with every method (exported learned schedulers and baselines) on held-out seeds "
        "that agent training never draws, and compare them. Within a seed every method starts from the same "
        "initial weights and sees the same batches in the same order (paired comparison). Per run: the "
        "training-loss curve, steps until the smoothed training loss first reaches the threshold ('not "
        "reached' otherwise), the final model's training loss, validation and test loss/accuracy, wall time, "
        "and the per-step traces.\n\n"
        f"Baselines: {baselines}.\n\n"
        f"Outputs in --out: {outputs} (curves.npz holds arrays [method, seed, step]: {', '.join(TRACE_NAMES)}; "
        "'not reached' is null in JSON and an empty cell in CSV).\n\n"
        "Exit status 2: an unusable setting, policy file, dataset, device or output directory."
    )


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _with_flag_names(message: str) -> str:
    """Messages name settings by field (``train_size``); the command line's user typed ``--train-size``."""
    return _FIELD_IN_MESSAGE.sub(lambda match: _FLAG_NAMES[match.group(1)], message)


def _condense_tyro_error(text: str) -> str:
    """tyro's boxed error message as one line: the box's body without its title and help trailer."""
    body: list[str] = []
    for raw in _ANSI.sub("", text).splitlines():
        line = raw.strip(_BOX)
        if line.startswith(_BOX_TRAILERS):
            break
        if line:
            body.append(line)
    return _one_line(" ".join(body[1:] or body)) or "invalid arguments (see --help)"


@contextlib.contextmanager
def _unwrapped_errors(argv: Sequence[str]) -> Iterator[None]:
    """Let tyro lay out error boxes wide enough that no message wraps (help keeps the terminal's width)."""
    if any(token in ("-h", "--help") for token in argv):
        yield
        return
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100000"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def parse_args(argv: Sequence[str] | None = None, *, prog: str = PROG) -> EvaluateArgs:
    """The command line as :class:`EvaluateArgs`; raises :class:`UsageError` (one line) for bad input.

    ``--help`` prints the help and raises ``SystemExit(0)``, as argparse does.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    captured = io.StringIO()
    try:
        with _unwrapped_errors(args), contextlib.redirect_stderr(captured):
            parsed = tyro.cli(EvaluateArgs, args=args, prog=prog, description=_description())
    except SystemExit as exc:
        if not exc.code:
            raise
        raise UsageError(_with_flag_names(_condense_tyro_error(captured.getvalue()))) from None
    except ValueError as exc:  # a check in EvaluationConfig.__post_init__ that tyro passed on
        raise UsageError(_with_flag_names(_one_line(str(exc)))) from None
    sys.stderr.write(captured.getvalue())  # warnings, if any
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; returns the exit status."""
    prog = PROG if argv is not None else (Path(sys.argv[0]).name or PROG)

    def fail(message: str) -> int:
        print(f"{prog}: {_with_flag_names(_one_line(message))}", file=sys.stderr)
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
    summary = summarize(result)
    print(format_table(result, summary))  # first: the table survives an output directory removed meanwhile
    try:
        paths = write_outputs(result, args.out, summary)
    except (OSError, ValueError) as exc:  # the directory became unusable during the runs
        print(f"{prog}: could not write the results to {args.out}: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0

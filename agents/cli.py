"""The command line of agent training (``rlopt-train``, ``python train_agent.py``): tyro over :class:`TrainConfig`.

    rlopt-train                                  # the default preset: minutes on 2 CPU cores
    rlopt-train --preset paper --episodes 50     # a preset, explicit flags on top
    rlopt-train --out runs/x --resume            # continue a run with the settings in runs/x/config.json

Defaults come from the chosen preset or, with ``--resume``, from ``OUT/config.json``; explicit flags
go on top. Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from agents.config import PresetName, TrainConfig, preset_config
from rlopt.cli import UsageError
from rlopt.cli import parse_config as parse_with_tyro

PROG = "rlopt-train"
DESCRIPTION = (
    "Train a DQN agent that controls an optimizer's hyperparameters while a CNN learns MNIST; checkpoint "
    "it, log to TensorBoard and export the learned scheduler (OUT/policy.rlopt). Defaults come from "
    "--preset, or with --resume from OUT/config.json; explicit flags go on top."
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Location:
    """The flags that choose the defaults of the others (read first, all other flags ignored)."""

    out: str = TrainConfig.out
    resume: bool = TrainConfig.resume
    preset: PresetName = TrainConfig.preset


def parse_config(argv: Sequence[str] | None = None, *, prog: str = PROG) -> TrainConfig:
    """Command line → :class:`TrainConfig`: the preset's values (or, with ``--resume``, the saved run's
    ``config.json``) first, explicit flags on top.

    Like argparse, bad input prints one line to stderr and raises ``SystemExit(2)``; ``--help``
    prints the help and raises ``SystemExit(0)``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    location, _ = _cli(_Location, args, prog, return_unknown_args=True, add_help=False)
    base = preset_config(location.preset)
    config_path = Path(location.out) / "config.json"
    if location.resume and config_path.is_file():
        try:
            saved = TrainConfig.load(config_path)
        except ValueError as exc:
            _fail(prog, f"--resume: {exc}")
        base = dataclasses.replace(saved, out=location.out, resume=True)
    return _cli(TrainConfig, args, prog, default=base)


def _cli(cls: type[_T], args: list[str], prog: str, **kwargs: Any) -> Any:
    """``tyro.cli`` with bad input as one ``prog: error: …`` line and exit status 2 (help is untouched)."""
    try:
        return parse_with_tyro(cls, args, prog=prog, description=DESCRIPTION, fields_of=TrainConfig, **kwargs)
    except UsageError as exc:
        _fail(prog, str(exc))


def _fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def resume_command(prog: str, out: str) -> str:
    """The command that continues the run in ``out``."""
    runner = f"python {prog}" if prog.endswith(".py") else prog
    return f"{runner} --out {shlex.quote(out)} --resume"


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Parse, train, export; returns the exit status (2: bad input or set-up, 130: interrupted)."""
    try:
        cfg = parse_config(argv, prog=prog)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except BrokenPipeError:
        # help piped into a reader that stopped (`--help | head`): end quietly, as the Python docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1

    from agents.train import RunInterrupted, TrainingSetupError, train  # SB3 and the envs: not for --help

    try:
        result = train(cfg)
    except TrainingSetupError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        print(f"\n{exc}. Continue with: {resume_command(prog, cfg.out)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    best = result.best_eval
    chosen = "the final agent"
    if result.selected == "best" and best is not None:
        diverged = f", {best.diverged} diverged" if best.diverged else ""
        chosen = (f"the best of the held-out evaluations (mean final validation loss {best.val_loss:.4f} on "
                  f"{best.episodes} episodes{diverged}; mean return {best.mean_return:.1f})")
    print(f"trained {result.num_timesteps} environment steps; exported {chosen} to {result.policy_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

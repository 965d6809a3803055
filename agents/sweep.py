"""Agent-training sweeps on Ray Tune (``rlopt-sweep FILE``, ``python -m agents.sweep FILE``).

A *sweep file* (JSON, or TOML on Python 3.11+) names training runs: every configuration in
``configs`` (settings of :class:`agents.config.TrainConfig`, on top of ``base``, on top of the
``preset``'s) once for every seed in ``seeds``::

    {
      "name": "lr-control",
      "base": {"episodes": 40, "task": "mnist-cnn"},
      "seeds": [0, 1, 2],
      "configs": {
        "dqn-lr-1e-3": {"dqn": {"learning_rate": 1e-3}},
        "dqn-lr-3e-4": {"dqn": {"learning_rate": 3e-4}}
      }
    }

Each trial (configuration × seed, named ``CONFIG-seedSEED``) is one Ray Tune function trial running
the ordinary training (:func:`agents.train.train`, :mod:`agents.sweep_trial`), so ``OUT/TRIAL/``
is the usual run directory: ``policy.rlopt``, ``tb/``, ``config.json``, ``checkpoints/``, ``best/``.
Each checkpoint the run writes is reported to Tune as a Tune checkpoint; a trial that fails (its
worker or node died) is restarted from its newest reported checkpoint, up to ``--max-failures``
times, and ``--resume`` continues a sweep whose driver was stopped. The best trial is the one the
training itself would export: the lowest mean final validation loss of the held-out evaluation
episodes, fewest diverged first (:class:`agents.callbacks.EvalScore`). Its policy is copied to
``OUT/policy.rlopt`` and ``OUT/sweep.json`` records every trial.

Ray is imported only when a sweep runs: ``--help`` and bad input need neither Ray nor
stable-baselines3. Population Based Training is not offered.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import tyro

from agents.config import TrainConfig, preset_config
from rlopt.cli import UsageError, one_line, parse_config

if TYPE_CHECKING:
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.callbacks import EvalScore

__all__ = [
    "SPEC_NAME",
    "SUMMARY_NAME",
    "SweepConfig",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "TrialOutcome",
    "load_spec",
    "main",
    "run_sweep",
]

PROG = "rlopt-sweep"
#: the sweep file as run, kept in OUT so that --resume can check it is the same sweep
SPEC_NAME = "sweep_spec.json"
#: every trial's outcome and the best trial
SUMMARY_NAME = "sweep.json"
#: Tune's experiment (state and checkpoints) inside the storage directory
EXPERIMENT_NAME = "trials"
#: settings a sweep file may not give per trial: the sweep decides them
_SWEEP_OWNED = ("out", "resume", "seed")
_TRIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SweepError(ValueError):
    """A sweep that cannot run as given (its file, its directory); the message is one line."""


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep trains: ``configs`` × ``seeds``, each on top of ``base`` (see the module docstring)."""

    name: str
    """names the default output directory runs/NAME."""
    base: dict[str, Any] = field(default_factory=dict)
    """TrainConfig settings of every trial (``preset`` included); ``dqn`` is a table of DQN settings."""
    seeds: tuple[int, ...] = (TrainConfig.seed,)
    """each configuration trains once per seed."""
    configs: dict[str, dict[str, Any]] = field(default_factory=lambda: {"base": {}})
    """configuration name → TrainConfig settings on top of ``base``."""

    def trial_name(self, config: str, seed: int) -> str:
        return f"{config}-seed{seed}"

    def trial_configs(self, out: Path) -> dict[str, TrainConfig]:
        """Every trial's :class:`TrainConfig`, its run directory ``out/TRIAL``; ``SweepError`` if one cannot run."""
        trials: dict[str, TrainConfig] = {}
        for config, settings in self.configs.items():
            merged = _merged(self.base, settings)
            preset = merged.pop("preset", TrainConfig.preset)
            for seed in self.seeds:
                name = self.trial_name(config, seed)
                try:
                    values = _merged(preset_config(preset).to_dict(), merged)
                except ValueError as exc:
                    raise SweepError(f"configuration {config!r}: {one_line(str(exc))}") from None
                values.update(seed=seed, out=str(out / name), resume=False)
                if values.get("data_dir") is not None:  # trials run elsewhere: no path relative to here
                    values["data_dir"] = str(Path(values["data_dir"]).expanduser().absolute())
                try:
                    trials[name] = TrainConfig.from_dict(values)
                except (TypeError, ValueError) as exc:
                    raise SweepError(f"configuration {config!r}: {one_line(str(exc))}") from None
        return trials

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "seeds": list(self.seeds), "configs": self.configs}


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` on top; nested tables (``dqn``) merge key by key."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _check_settings(where: str, settings: object) -> dict[str, Any]:
    if not isinstance(settings, dict):
        raise SweepError(f"{where} must be a table of training settings, got {settings!r}")
    owned = sorted(set(settings) & set(_SWEEP_OWNED))
    if owned:
        raise SweepError(f"{where} sets {', '.join(owned)}: the sweep sets these (seeds go in 'seeds', "
                         "directories under --out)")
    return settings


def spec_from_dict(data: object, default_name: str) -> SweepSpec:
    """A :class:`SweepSpec` from a sweep file's contents; ``SweepError`` (one line) for anything off."""
    if not isinstance(data, dict):
        raise SweepError("a sweep file holds one table (name, base, seeds, configs)")
    unknown = sorted(set(data) - {"name", "base", "seeds", "configs"})
    if unknown:
        raise SweepError(f"unknown sweep keys {unknown}: a sweep has name, base, seeds and configs")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not _TRIAL_NAME.match(name):
        raise SweepError(f"name must be letters, digits, '.', '_' or '-', got {name!r}")
    base = _check_settings("base", data.get("base", {}))
    seeds = data.get("seeds", list(SweepSpec.seeds))
    if (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                            for s in seeds)):
        raise SweepError(f"seeds must be a non-empty list of whole numbers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"seeds repeat: {seeds}")
    configs = data.get("configs", {"base": {}})
    if not isinstance(configs, dict) or not configs:
        raise SweepError("configs must be a non-empty table of name = training settings")
    for config, settings in configs.items():
        if not _TRIAL_NAME.match(config):
            raise SweepError(f"configuration name {config!r} must be letters, digits, '.', '_' or '-'")
        _check_settings(f"configuration {config!r}", settings)
    return SweepSpec(name=name, base=base, seeds=tuple(seeds), configs=configs)


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep file (``.toml``: TOML, anything else: JSON); ``SweepError`` (one line) if unusable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SweepError(f"{path}: cannot read the sweep file ({exc.strerror or exc})") from None
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise SweepError(f"{path}: TOML sweep files need Python 3.11+; write it as JSON") from None
            data: object = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError
        raise SweepError(f"{path}: not a readable sweep file ({one_line(str(exc))})") from None
    return spec_from_dict(data, default_name=path.stem)


@dataclass(frozen=True)
class SweepConfig:
    """How a sweep runs (what it trains is in the sweep file). Each field is a flag of ``rlopt-sweep``."""

    spec: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="FILE")]
    """the sweep file: JSON (or TOML on Python 3.11+) with name, base, seeds and configs."""
    out: Annotated[str | None, tyro.conf.arg(metavar="DIR")] = None
    """output directory: a run directory per trial, sweep.json and the best trial's policy.rlopt; None: runs/NAME."""
    address: Annotated[str | None, tyro.conf.arg(metavar="ADDR")] = None
    """the Ray cluster to join (HOST:PORT as `ray start --head` prints it, or auto); None: $RAY_ADDRESS if set,
    else a local Ray on this machine's cores."""
    storage: Annotated[str | None, tyro.conf.arg(metavar="PATH")] = None
    """where Tune keeps the sweep's state and the trials' checkpoints; on a cluster of several machines a
    directory they all share or a URI (s3://…); None: OUT/tune."""
    resume: bool = False
    """continue the sweep in --out: finished trials stay, the others resume from their newest checkpoint."""
    max_failures: int = 2
    """times a failed trial (its worker or node died) is restarted from its newest checkpoint."""
    keep_checkpoints: int = 2
    """checkpoints Tune keeps per trial (each is a copy of the trial's run directory)."""
    cpus_per_trial: int | None = None
    """CPUs each trial reserves; None: its environments' (n-envs × threads), at least 1."""
    progress: bool = True
    """show Tune's trial status while the sweep runs."""

    def __post_init__(self) -> None:
        for name in ("max_failures", "keep_checkpoints"):
            if getattr(self, name) < (0 if name == "max_failures" else 1):
                raise ValueError(f"{name} must be >= {0 if name == 'max_failures' else 1}, got {getattr(self, name)}")
        if self.cpus_per_trial is not None and self.cpus_per_trial < 1:
            raise ValueError(f"cpus_per_trial must be >= 1, got {self.cpus_per_trial}")


@dataclass(frozen=True)
class TrialOutcome:
    """One trial of a finished sweep."""

    name: str
    out: Path
    config: TrainConfig
    num_timesteps: int | None
    """environment steps trained; ``None`` when the trial never reported."""
    best_eval: EvalScore | None
    """the score of the agent its policy.rlopt exports; ``None``: no evaluation, or the trial failed."""
    error: str | None
    """why the trial failed, after its retries; ``None``: it finished."""

    def to_dict(self) -> dict[str, Any]:
        """For sweep.json: a validation loss that is not finite (every episode diverged) is ``None``."""
        score = None if self.best_eval is None else self.best_eval.to_dict()
        if score is not None and not math.isfinite(score["val_loss"]):
            score["val_loss"] = None
        return {"name": self.name, "out": str(self.out), "seed": self.config.seed, "num_timesteps": self.num_timesteps,
                "best_eval": score, "error": self.error, "config": self.config.to_dict()}


@dataclass(frozen=True)
class SweepResult:
    """Every trial, and the best one (``None`` when no trial finished with an evaluation)."""

    out: Path
    trials: tuple[TrialOutcome, ...]
    best: TrialOutcome | None
    policy_path: Path | None
    """the best trial's policy copied to OUT/policy.rlopt."""


def best_trial(trials: Sequence[TrialOutcome]) -> TrialOutcome | None:
    """The finished trial whose agent ranks first (:attr:`EvalScore.rank`); ties go to the first listed."""
    scored = [t for t in trials if t.error is None and t.best_eval is not None]
    return min(scored, key=lambda t: t.best_eval.rank) if scored else None  # type: ignore[union-attr]


def _trial_dirname(trial: Any) -> str:
    return str(trial.config["trial"])


def _check_out(out: Path, spec: SweepSpec, experiment: str, resume: bool) -> None:
    saved = out / SPEC_NAME
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} is a file, not a directory")
    if resume:
        if not saved.is_file():
            raise SweepError(f"--resume: {out} holds no sweep ({SPEC_NAME} is missing)")
        try:
            before = json.loads(saved.read_text())
        except (OSError, ValueError) as exc:
            raise SweepError(f"--resume: {saved} is unreadable ({exc})") from None
        if before != json.loads(json.dumps(spec.to_dict())):
            raise SweepError(f"--resume: the sweep file differs from the one {out} ran ({saved}); "
                             "resume with that file, or choose another --out")
        return
    if saved.is_file() or Path(experiment).exists():
        raise SweepError(f"{out} already holds a sweep; pass --resume to continue it, or choose another --out")


def run_sweep(
    spec: SweepSpec,
    settings: SweepConfig,
    *,
    extra_callbacks: Callable[[Path], list[BaseCallback]] | None = None,
) -> SweepResult:
    """Train every trial of ``spec`` on Ray Tune and select the best (see the module docstring).

    ``extra_callbacks(run_directory)`` makes further SB3 callbacks inside each trial (tests inject a
    failure with it).
    Raises :class:`SweepError` for an unusable sweep file or directory and
    :class:`rlopt.bench.ray_backend.BackendUnavailable` when Ray is missing or unreachable, both before
    any training.
    """
    from rlopt.bench.ray_backend import connect, require_ray

    out = Path(settings.out if settings.out is not None else Path("runs") / spec.name).expanduser().absolute()
    trials = spec.trial_configs(out)
    storage = settings.storage or str(out / "tune")
    experiment = f"{storage.rstrip('/')}/{EXPERIMENT_NAME}"
    _check_out(out, spec, experiment, settings.resume)
    require_ray("a sweep")
    started = connect(settings.address)
    try:
        from ray import tune

        from agents.sweep_trial import run_trial

        out.mkdir(parents=True, exist_ok=True)
        (out / SPEC_NAME).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
        cpus = settings.cpus_per_trial or max(max(c.n_envs * c.threads for c in trials.values()), 1)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, trials={n: c.to_dict() for n, c in trials.items()},
                                 extra_callbacks=extra_callbacks),
            {"cpu": cpus},
        )
        if settings.resume and tune.Tuner.can_restore(experiment):
            tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search(list(trials))},
                tune_config=tune.TuneConfig(trial_name_creator=_trial_dirname, trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(
                    name=EXPERIMENT_NAME,
                    storage_path=storage,
                    failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=settings.keep_checkpoints),
                    verbose=1 if settings.progress else 0,
                ),
            )
        grid = tuner.fit()
        outcomes = [_outcome(grid[i], trials) for i in range(len(grid))]
    finally:
        if started:
            import ray

            ray.shutdown()
    order = {name: i for i, name in enumerate(trials)}
    outcomes.sort(key=lambda t: order[t.name])
    best = best_trial(outcomes)
    policy_path = None
    if best is not None:
        policy_path = out / "policy.rlopt"
        shutil.copyfile(best.out / "policy.rlopt", policy_path)
    summary = {
        "name": spec.name,
        "selection": "lowest mean final validation loss of the held-out evaluation episodes, fewest diverged first",
        "best": None if best is None else best.name,
        "policy": None if policy_path is None else str(policy_path),
        "trials": [t.to_dict() for t in outcomes],
    }
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return SweepResult(out=out, trials=tuple(outcomes), best=best, policy_path=policy_path)


def _outcome(result: Any, trials: dict[str, TrainConfig]) -> TrialOutcome:
    """A Tune result as a :class:`TrialOutcome`; a trial that ran on another machine is copied here
    from its final checkpoint (the whole run directory)."""
    from agents.callbacks import EvalScore

    name = str(result.config["trial"])
    config = trials[name]
    out = Path(config.out)
    metrics = result.metrics or {}
    error = None if result.error is None else one_line(f"{type(result.error).__name__}: {result.error}")[:500]
    if error is None and result.checkpoint is not None and not (out / "policy.rlopt").is_file():
        result.checkpoint.to_directory(str(out))
    best = metrics.get("best_eval")
    score = EvalScore.from_dict(best) if error is None and isinstance(best, dict) else None
    steps = metrics.get("timesteps")
    return TrialOutcome(name=name, out=out, config=config, num_timesteps=None if steps is None else int(steps),
                        best_eval=score, error=error)


def format_summary(result: SweepResult) -> str:
    """One line per trial and the choice, for the terminal."""
    lines = [f"{'trial':<28} {'steps':>8} {'val loss':>9} {'diverged':>8}  status"]
    for t in result.trials:
        score = t.best_eval
        loss = f"{score.val_loss:.4f}" if score is not None else "-"
        diverged = f"{score.diverged}/{score.episodes}" if score is not None else "-"
        steps = str(t.num_timesteps) if t.num_timesteps is not None else "-"
        status = "failed: " + t.error if t.error else ("best" if t is result.best else "done")
        lines.append(f"{t.name:<28} {steps:>8} {loss:>9} {diverged:>8}  {status}")
    if result.best is not None:
        lines.append(f"best: {result.best.name} (lowest mean final validation loss); its policy: {result.policy_path}")
    else:
        lines.append("no trial finished with an evaluation: nothing selected")
    lines.append(f"wrote {result.out / SUMMARY_NAME}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run a sweep from the command line; returns the exit status (2: bad input, 1: a trial failed)."""
    from rlopt.bench.ray_backend import BackendUnavailable

    description = ("Train DQN agents over seeds and configurations as Ray Tune trials, one run directory each, "
                   "and select the best by the mean final validation loss of its held-out evaluation episodes.")
    try:
        settings = parse_config(SweepConfig, argv, prog=prog, description=description)
        result = run_sweep(load_spec(settings.spec), settings)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except (UsageError, SweepError, BackendUnavailable) as exc:
        print(f"{prog}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    print(format_summary(result))
    return 1 if any(t.error for t in result.trials) else 0


if __name__ == "__main__":
    sys.exit(main())

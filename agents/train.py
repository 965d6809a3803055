"""Train a DQN controller end to end: set-up checks, run directory, environments, agent, resume, export.

What happens when…

* **the settings cannot run** (``--out`` is a file, the device or the data is unavailable, sizes do not
  fit the data): :class:`TrainingSetupError` with a one-line message, before anything is created.
* **two runs share an ``--out``**: the second stops at once, naming the holder (:class:`agents.rundir.RunLock`).
* **a run is interrupted** (Ctrl-C): it writes a checkpoint and raises :class:`RunInterrupted`;
  ``--out OUT --resume`` continues it with the settings in ``OUT/config.json``.
* **a run is resumed**: the settings in :data:`RESUME_INVARIANTS` must equal the saved ones (a changed
  one is refused); the others (``--episodes``, ``--eval-every``, ``--device`` …) may change, and
  ``config.json`` and the policy metadata record what ran. ``tb/progress.csv`` is appended to.
* **the newest checkpoint is corrupt, tampered with or unrecorded**: it is set aside as ``rejected_*``
  and the run continues from the newest intact one, saying so on stderr. Checkpoint files are loaded
  only when their sha256 matches the manifest (see :mod:`agents.rundir`: a run directory is trusted
  input only through that manifest).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, make_output_format

from agents.callbacks import (
    BEST_EVAL_NAME,
    BEST_MODEL_NAME,
    AppendingCSVOutputFormat,
    ControlLoggingCallback,
    EvalScore,
    RecordBestModel,
    RunCheckpointCallback,
    ValLossEvalCallback,
    save_checkpoint,
)
from agents.config import TrainConfig
from agents.dqn import env_config, make_dqn, make_vec_env
from agents.export import export_policy
from agents.rundir import (
    MANIFEST_NAME,
    Checkpoint,
    Manifest,
    RunDirectoryError,
    RunLock,
    TrainingSetupError,
    check_output_directory,
    checkpoints_in,
    reject,
    remove_leftover_tmp_files,
)
from rlopt.data import DataError, load_dataset, task_splits
from rlopt.tasks import derive_dataset
from rlopt.training import resolve_device, seed_everything

__all__ = [
    "RESUME_INVARIANTS",
    "RunDirectoryError",
    "RunInterrupted",
    "TrainResult",
    "TrainingSetupError",
    "check_setup",
    "train",
]

#: settings a resumed run must share with the run it continues: they define the task, the agent and
#: the layout of its replay buffer (one column per environment), so a change would not continue the run
RESUME_INVARIANTS: tuple[str, ...] = (
    "control", "task", "optimizer", "start", "preset", "episode_steps", "max_episode_steps", "random_lr_init",
    "batch_size", "train_size", "validation_size", "data_dir", "seed", "n_envs", "dqn", "lr_init",
    "reinforcement_init", "clamp_bounds", "rewards", "decision_interval",
)


@dataclass(frozen=True)
class TrainResult:
    policy_path: Path
    num_timesteps: int
    resumed_from: int
    selected: str  # "best" (lowest mean final validation loss on the held-out episodes) or "last"
    best_eval: EvalScore | None


class RunInterrupted(KeyboardInterrupt):
    """Training was interrupted; ``checkpoint`` holds the state at ``steps`` environment steps."""

    def __init__(self, steps: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted at {steps} steps; saved {checkpoint}")
        self.steps = steps
        self.checkpoint = checkpoint


def check_device(device: str) -> torch.device:
    """The torch device ``device`` names, if this machine has it; else a one-line ``TrainingSetupError``."""
    try:
        resolved = resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainingSetupError(f"--device {device}: {first_line}") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (resolved.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(resolved.type, False):
        have = ", ".join(name for name, ok in available.items() if ok)
        raise TrainingSetupError(f"--device {device} is not available on this machine (available: {have}, auto)")
    return resolved


def check_setup(cfg: TrainConfig, *, progress: bool = True) -> None:
    """Everything that can be checked before the run directory is touched; raises ``TrainingSetupError``."""
    out = Path(cfg.out)
    check_output_directory(out)
    check_device(cfg.device)
    if cfg.resume and not checkpoints_in(out / "checkpoints"):
        raise RunDirectoryError(f"--resume: no checkpoint in {out / 'checkpoints'} to continue from")
    try:
        ecfg = env_config(cfg)
        # load (and on first use fetch) the data here, once, as the env will, so a problem is one line
        # now rather than a traceback inside every environment worker
        base = load_dataset(cfg.data_dir, progress=progress)
        for task in ecfg.task_specs:
            data = derive_dataset(base, task.dataset)
            task_splits(data, cfg.train_size, cfg.validation_size, seed=ecfg.data_seed, batch_size=task.batch_size)
    except (DataError, ValueError) as exc:
        raise TrainingSetupError(str(exc)) from exc


def changed_settings(saved: TrainConfig, cfg: TrainConfig) -> list[str]:
    """``"--flag saved → new"`` for each of :data:`RESUME_INVARIANTS` where ``cfg`` differs from ``saved``."""
    changed = []
    for name in RESUME_INVARIANTS:
        before, after = getattr(saved, name), getattr(cfg, name)
        if dataclasses.is_dataclass(before):  # a settings group (--dqn.*, --rewards.*): name its fields
            for f in dataclasses.fields(before):
                old, new = getattr(before, f.name), getattr(after, f.name)
                if old != new:
                    changed.append(f"--{name}.{f.name.replace('_', '-')} {old!r} → {new!r}")
        elif before != after:
            changed.append(f"--{name.replace('_', '-')} {before!r} → {after!r}")
    return changed


def _check_run_state(cfg: TrainConfig, out: Path) -> None:
    """A new run needs a directory without a run; a resumed one the same fixed settings as the saved run."""
    checkpoint_dir = out / "checkpoints"
    if not cfg.resume:
        found = checkpoints_in(checkpoint_dir)
        if found or (checkpoint_dir / MANIFEST_NAME).is_file():
            what = found[0].model.name if found else MANIFEST_NAME
            raise RunDirectoryError(
                f"{out} already holds a training run ({what}); pass --resume to continue it, or choose another --out"
            )
        return
    config_path = out / "config.json"
    if not config_path.is_file():
        raise RunDirectoryError(f"--resume: {config_path} is missing, so the saved run's settings are unknown")
    try:
        saved = TrainConfig.load(config_path)
    except ValueError as exc:
        raise RunDirectoryError(f"--resume: {exc}") from None
    changed = changed_settings(saved, cfg)
    if changed:
        raise RunDirectoryError(
            f"--resume cannot change {', '.join(changed)}; leave those flags out to continue the run as it "
            "was, or choose another --out"
        )


def _load_dqn(path: Path) -> DQN:
    with warnings.catch_warnings():
        # a saved n-step DQN records its NStepReplayBuffer class; SB3 then warns that n_steps is
        # "ignored", although that buffer already carries n_steps (its replay is unchanged)
        warnings.filterwarnings("ignore", "`n_steps=")
        return DQN.load(path, device="cpu")


def load_newest_intact(checkpoint_dir: Path, manifest: Manifest) -> tuple[DQN, Checkpoint]:
    """The newest checkpoint whose files match the manifest and load; the others are set aside.

    Nothing is unpickled unless its sha256 is the one this code recorded when it wrote the file.
    """
    for checkpoint in checkpoints_in(checkpoint_dir):
        problem = next(
            (f"{path.name} is {why}" if why == "missing" else f"{path.name}: {why}"
             for path in checkpoint.files if (why := manifest.problem_with(path)) is not None),
            None,
        )
        if problem is None:
            try:
                model = _load_dqn(checkpoint.model)
                model.load_replay_buffer(checkpoint.replay_buffer)
            # a recorded file can still fail to load (say, written by another SB3 version); zip,
            # torch and pickle raise many types, and each means the same: try an older checkpoint
            except Exception as exc:
                problem = f"{checkpoint.model.name} does not load ({type(exc).__name__}: {exc})"
            else:
                return model, checkpoint
        moved = reject(checkpoint, manifest)
        print(
            f"--resume: skipping the checkpoint at {checkpoint.steps} steps ({problem}); "
            f"set aside as {', '.join(p.name for p in moved) or 'nothing'}; trying an older one",
            file=sys.stderr,
        )
    raise RunDirectoryError(f"--resume: no intact checkpoint left in {checkpoint_dir}")


def checkpoint_save_freq(cfg: TrainConfig) -> int:
    """Callback calls between checkpoints: each call is one step of every one of the ``n_envs`` envs."""
    return max(cfg.checkpoint_every // cfg.n_envs, 1)


def read_best_eval(out: Path) -> EvalScore | None:
    """The recorded score of the run's best agent (``best/best_eval.json``); ``None`` if absent or unreadable."""
    try:
        data = json.loads((out / "best" / BEST_EVAL_NAME).read_text())
        return EvalScore.from_dict(data) if isinstance(data, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _best_so_far(out: Path, manifest: Manifest) -> EvalScore | None:
    """The score of the run's best agent, if its ``best_model.zip`` is the one the run recorded."""
    if manifest.problem_with(out / "best" / BEST_MODEL_NAME) is not None:
        return None
    return read_best_eval(out)


def train(cfg: TrainConfig, *, progress: bool = True, callbacks: Sequence[BaseCallback] = ()) -> TrainResult:
    """Run (or resume) a training run as configured; returns where the exported policy is.

    ``callbacks`` run at every step after the run's own (logging, checkpoints, evaluation): a Ray Tune
    sweep reports each new checkpoint through one (:mod:`agents.sweep_trial`).

    Raises:
        TrainingSetupError: the run cannot start (nothing created, or nothing changed in an existing
            run directory); :class:`RunDirectoryError` for problems with ``cfg.out``.
        RunInterrupted: Ctrl-C during training, after a checkpoint was written.
    """
    check_setup(cfg, progress=progress)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        for path in remove_leftover_tmp_files(out):
            print(f"removed {path}, left by an interrupted write", file=sys.stderr)
        _check_run_state(cfg, out)
        return _run(cfg, out, Manifest.load(out), progress=progress, extra_callbacks=callbacks)


def _run(cfg: TrainConfig, out: Path, manifest: Manifest, *, progress: bool,
         extra_callbacks: Sequence[BaseCallback] = ()) -> TrainResult:
    checkpoint_dir = out / "checkpoints"
    seed_everything(cfg.seed)
    model: DQN | None = None
    resumed_from = 0
    if cfg.resume:
        model, checkpoint = load_newest_intact(checkpoint_dir, manifest)
        resumed_from = model.num_timesteps
        print(f"resuming {out} from {checkpoint.model.name} ({resumed_from} steps)", file=sys.stderr)
    # a resumed run draws fresh start points instead of repeating the first run's sequence
    env_seed = cfg.seed + resumed_from
    ecfg = env_config(cfg)
    vec = eval_env = None
    logger: Logger | None = None
    try:
        vec = make_vec_env(ecfg, cfg.n_envs, seed=env_seed, device=cfg.device, threads=cfg.threads)
        if model is None:
            model = make_dqn(vec, cfg.dqn, seed=cfg.seed)
        else:
            model.set_env(vec)
        cfg.save(out / "config.json")

        tb = out / "tb"
        logger = Logger(
            folder=str(tb),
            output_formats=[make_output_format("tensorboard", str(tb)), AppendingCSVOutputFormat(tb / "progress.csv")],
        )
        model.set_logger(logger)
        logger.record("config", cfg.markdown_table(), exclude=("csv",))
        logger.dump(model.num_timesteps)

        checkpointer = RunCheckpointCallback(
            checkpoint_save_freq(cfg), checkpoint_dir, manifest, keep=cfg.keep_checkpoints
        )
        callbacks: list[BaseCallback] = [ControlLoggingCallback(cfg.log_every, progress=progress), checkpointer]
        if cfg.eval_every > 0:
            eval_env = make_vec_env(
                env_config(cfg, held_out=True), 1, seed=cfg.seed + 1, device=cfg.device, threads=cfg.threads
            )
            # the evaluation env runs in this process while training envs may run in workers
            warnings.filterwarnings("ignore", "Training and eval env are not of the same type")
            # the same model-selection episodes at every evaluation, also after a resume
            evaluator = ValLossEvalCallback(
                eval_env,
                seed=cfg.seed + 1,
                callback_on_new_best=RecordBestModel(out / "best", manifest),
                n_eval_episodes=cfg.eval_episodes,
                eval_freq=max(cfg.eval_every // cfg.n_envs, 1),
                log_path=str(out / "eval"),
                best_model_save_path=str(out / "best"),
            )
            if resumed_from:  # a resumed run keeps the best so far
                evaluator.best = _best_so_far(out, manifest)
            callbacks.append(evaluator)
        callbacks.extend(extra_callbacks)

        remaining = cfg.total_timesteps - model.num_timesteps
        if remaining > 0:
            try:
                model.learn(remaining, callback=callbacks, reset_num_timesteps=not resumed_from, log_interval=4)
            except KeyboardInterrupt:
                saved = save_checkpoint(model, checkpoint_dir, manifest)
                checkpointer.prune()
                raise RunInterrupted(model.num_timesteps, saved.model) from None
            save_checkpoint(model, checkpoint_dir, manifest)
            checkpointer.prune()

        specs = (ecfg.observation_spec(), ecfg.action_spec())
        # the policy file declares the optimizer the env trained and the rate its episodes started from
        export = functools.partial(export_policy, optimizer=cfg.optimizer, initial_lr=ecfg.initial_lr)
        metadata = {"train_config": cfg.to_dict(), "env_config": ecfg.to_dict(), "resumed_from": resumed_from}
        export(model, out / "policy_last.rlopt", *specs, metadata={**metadata, "selected": "last"})
        best_path = out / "best" / BEST_MODEL_NAME
        best_eval = _best_so_far(out, manifest)
        if best_path.exists() and best_eval is None:
            print(f"not exporting {best_path}: {manifest.problem_with(best_path) or 'no recorded evaluation'}; "
                  "exporting the final agent instead", file=sys.stderr)
        selected = "best" if best_eval is not None else "last"
        chosen = _load_dqn(best_path) if selected == "best" else model
        record = None if best_eval is None else best_eval.to_dict()
        policy_path = export(
            chosen, out / "policy.rlopt", *specs, metadata={**metadata, "selected": selected, "best_eval": record}
        )
    finally:
        if logger is not None:
            logger.close()
        for env in (vec, eval_env):
            if env is not None:
                env.close()
    return TrainResult(
        policy_path=policy_path,
        num_timesteps=model.num_timesteps,
        resumed_from=resumed_from,
        selected=selected,
        best_eval=best_eval,
    )

"""Train a DQN controller end to end: environments, agent, callbacks, checkpoints, resume, export."""

from __future__ import annotations

import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.logger import configure

from agents.callbacks import ControlLoggingCallback, PeriodicCheckpoint, latest_checkpoint, save_checkpoint
from agents.config import TrainConfig
from agents.dqn import env_config, make_dqn, make_vec_env
from agents.export import export_policy
from rlopt.data import DataError, load_idx_dataset, load_mnist
from rlopt.training import resolve_device, seed_everything

#: settings a resumed run must share with the run it continues
_RESUME_INVARIANTS = ("control", "optimizer", "start", "episode_steps", "batch_size", "train_size", "data_dir")


@dataclass(frozen=True)
class TrainResult:
    policy_path: Path
    num_timesteps: int
    resumed_from: int
    selected: str  # "best" (highest held-out evaluation return) or "last"
    best_eval_return: float | None


class TrainingSetupError(RuntimeError):
    """A run that cannot start as configured (device, data, output directory); nothing was trained."""


class RunDirectoryError(TrainingSetupError):
    """The output directory does not fit the request (an existing run without --resume, …)."""


def _load_dqn(path: Path) -> DQN:
    with warnings.catch_warnings():
        # a saved n-step DQN records its NStepReplayBuffer class; SB3 then warns that n_steps is
        # "ignored", although that buffer already carries n_steps (its replay is unchanged)
        warnings.filterwarnings("ignore", "`n_steps=")
        return DQN.load(path, device="cpu")


def _check_out_dir(cfg: TrainConfig, out: Path) -> None:
    config_path = out / "config.json"
    checkpoints = latest_checkpoint(out / "checkpoints")
    if not cfg.resume:
        if checkpoints is not None:
            raise RunDirectoryError(
                f"{out} already holds a training run ({checkpoints[0].name}); pass --resume to continue "
                f"it, or choose another --out"
            )
        return
    if checkpoints is None:
        raise RunDirectoryError(f"--resume: no checkpoint in {out / 'checkpoints'} to continue from")
    if config_path.is_file():
        previous = json.loads(config_path.read_text())
        changed = [k for k in _RESUME_INVARIANTS if previous.get(k) != getattr(cfg, k)]
        if changed:
            details = ", ".join(f"{k}: {previous.get(k)!r} → {getattr(cfg, k)!r}" for k in changed)
            raise RunDirectoryError(f"--resume with settings that differ from the saved run ({details})")


def train(cfg: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Run (or resume) a training run as configured; returns where the exported policy is."""
    out = Path(cfg.out)
    _check_out_dir(cfg, out)
    try:  # fail here, in one line, rather than inside every environment worker
        resolve_device(cfg.device)
        if cfg.data_dir is None:
            # fetch and cache MNIST here, with progress shown, before worker processes look for it
            load_mnist(progress=progress)
        else:
            load_idx_dataset(cfg.data_dir)
    except (RuntimeError, DataError) as exc:
        raise TrainingSetupError(str(exc)) from exc
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out / "checkpoints"
    seed_everything(cfg.seed)

    resumed_from = 0
    found = latest_checkpoint(checkpoint_dir) if cfg.resume else None
    # a resumed run draws fresh start points instead of repeating the first run's sequence
    env_seed = cfg.seed
    vec = None
    try:
        if found is not None:
            model_path, _buffer_path = found
            model = _load_dqn(model_path)
            resumed_from = model.num_timesteps
            env_seed = cfg.seed + resumed_from
        vec = make_vec_env(env_config(cfg), cfg.n_envs, seed=env_seed, device=cfg.device, threads=cfg.threads)
        if found is not None:
            model.set_env(vec)
            model.load_replay_buffer(found[1])
        else:
            model = make_dqn(vec, cfg.dqn, seed=cfg.seed)
        cfg.save(out / "config.json")

        logger = configure(str(out / "tb"), ["tensorboard", "csv"])
        model.set_logger(logger)
        logger.record("config", cfg.markdown_table(), exclude=("csv",))
        logger.dump(model.num_timesteps)

        callbacks: list[BaseCallback] = [
            ControlLoggingCallback(cfg.log_every, progress=progress),
            PeriodicCheckpoint(checkpoint_dir, cfg.checkpoint_every),
        ]
        evaluator: EvalCallback | None = None
        if cfg.eval_every > 0:
            eval_env = make_vec_env(
                env_config(cfg, held_out=True), 1, seed=cfg.seed + 1, device=cfg.device, threads=cfg.threads
            )
            # the evaluation env runs in this process while training envs may run in workers
            warnings.filterwarnings("ignore", "Training and eval env are not of the same type")
            evaluator = EvalCallback(
                eval_env,
                n_eval_episodes=cfg.eval_episodes,
                eval_freq=max(cfg.eval_every // cfg.n_envs, 1),
                log_path=str(out / "eval"),
                best_model_save_path=str(out / "best"),
                deterministic=True,
                verbose=0,
            )
            best_file = out / "best" / "best_eval_return.json"
            if found is not None and best_file.is_file():  # a resumed run keeps the best so far
                evaluator.best_mean_reward = float(json.loads(best_file.read_text())["best_eval_return"])
            callbacks.append(evaluator)
        remaining = cfg.total_timesteps - model.num_timesteps
        try:
            if remaining > 0:
                model.learn(
                    remaining, callback=callbacks, reset_num_timesteps=found is None, log_interval=4
                )
        except KeyboardInterrupt:
            path = save_checkpoint(model, checkpoint_dir)
            print(
                f"\ninterrupted at {model.num_timesteps} steps; saved {path}. Continue with: "
                f"python train_agent.py --out {cfg.out} --resume",
                file=sys.stderr,
            )
            raise
        save_checkpoint(model, checkpoint_dir)
        ecfg = env_config(cfg)
        specs = (ecfg.observation_spec(), ecfg.action_spec())
        metadata = {"train_config": cfg.to_dict(), "env_config": ecfg.to_dict()}
        export_policy(model, out / "policy_last.rlopt", *specs, metadata={**metadata, "selected": "last"})
        best_path = out / "best" / "best_model.zip"
        best_return: float | None = None
        if evaluator is not None and math.isfinite(evaluator.best_mean_reward):
            best_return = float(evaluator.best_mean_reward)
            (out / "best" / "best_eval_return.json").write_text(json.dumps({"best_eval_return": best_return}))
        selected = "best" if best_path.is_file() else "last"
        chosen = _load_dqn(best_path) if selected == "best" else model
        policy_path = export_policy(
            chosen, out / "policy.rlopt", *specs,
            metadata={**metadata, "selected": selected, "best_eval_return": best_return},
        )
    finally:
        if vec is not None:
            vec.close()
    return TrainResult(
        policy_path=policy_path,
        num_timesteps=model.num_timesteps,
        resumed_from=resumed_from,
        selected=selected,
        best_eval_return=best_return,
    )

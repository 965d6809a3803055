"""stable-baselines3 callbacks: TensorBoard records of the controlled training, progress, checkpoints."""

from __future__ import annotations

import math
import re
from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from tqdm.auto import tqdm

_CHECKPOINT = re.compile(r"dqn_(\d+)_steps\.zip$")


class ControlLoggingCallback(BaseCallback):
    """Writes what the agent does to the optimizer, namespaced as CleanRL does.

    * every ``log_every`` steps (first environment): ``env/lr``, ``env/reinforce_prob``, ``env/loss``,
      ``env/reward_tier``;
    * every finished episode: ``charts/episodic_return``, ``charts/episodic_length``,
      ``charts/val_loss``, ``charts/val_accuracy``, ``charts/steps_to_threshold`` (−1: not reached).

    Also shows a progress bar over the run's environment steps.
    """

    def __init__(self, log_every: int = 10, progress: bool = True) -> None:
        super().__init__()
        self.log_every = log_every
        self.progress = progress
        self.episodes = 0
        self._bar: tqdm | None = None

    def _on_training_start(self) -> None:
        if self.progress:
            total = self.locals["total_timesteps"] - self.model.num_timesteps
            self._bar = tqdm(total=total, unit="step", desc="training agent", dynamic_ncols=True)

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        dones = self.locals["dones"]
        if self.n_calls % self.log_every == 0:
            info = infos[0]
            self.logger.record("env/lr", info["lr"])
            self.logger.record("env/reinforce_prob", info["reinforce_prob"])
            self.logger.record("env/loss", info["loss"] if math.isfinite(info["loss"]) else float("nan"))
            self.logger.record("env/reward_tier", info["reward_tier"])
            self.logger.dump(self.num_timesteps)
        for done, info in zip(dones, infos, strict=False):
            if not done or "episode" not in info:
                continue
            self.episodes += 1
            self.logger.record("charts/episodic_return", info["episode"]["r"])
            self.logger.record("charts/episodic_length", info["episode"]["l"])
            self.logger.record("charts/val_loss", info.get("val_loss", float("nan")))
            self.logger.record("charts/val_accuracy", info.get("val_accuracy", float("nan")))
            self.logger.record("charts/steps_to_threshold", info["steps_to_threshold"])
            self.logger.record("charts/final_lr", info["lr"])
            self.logger.dump(self.num_timesteps)
            if self._bar is not None:
                self._bar.set_postfix(
                    episode=self.episodes, ret=f"{info['episode']['r']:.1f}",
                    val_acc=f"{info.get('val_accuracy', float('nan')):.3f}",
                )
        if self._bar is not None:
            self._bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def save_checkpoint(model: OffPolicyAlgorithm, directory: Path) -> Path:
    """Model and replay buffer, written under temporary names and renamed, buffer first.

    A checkpoint counts only once its model file exists, so a crash mid-save never leaves a
    half-written checkpoint that :func:`latest_checkpoint` would pick.
    """
    directory.mkdir(parents=True, exist_ok=True)
    steps = model.num_timesteps
    buffer_path = directory / f"dqn_replay_buffer_{steps}_steps.pkl"
    model_path = directory / f"dqn_{steps}_steps.zip"
    tmp_buffer = buffer_path.with_name(buffer_path.name + ".tmp")
    model.save_replay_buffer(tmp_buffer)
    tmp_buffer.replace(buffer_path)
    tmp_model = directory / f"tmp_dqn_{steps}_steps.zip"
    model.save(tmp_model)
    tmp_model.replace(model_path)
    return model_path


def latest_checkpoint(directory: Path) -> tuple[Path, Path] | None:
    """``(model.zip, replay_buffer.pkl)`` of the most advanced complete checkpoint, if any."""
    found: list[tuple[int, Path, Path]] = []
    for path in directory.glob("dqn_*_steps.zip"):
        match = _CHECKPOINT.search(path.name)
        if match is None:
            continue
        buffer = directory / f"dqn_replay_buffer_{match.group(1)}_steps.pkl"
        if buffer.is_file():
            found.append((int(match.group(1)), path, buffer))
    if not found:
        return None
    _, model_path, buffer_path = max(found)
    return model_path, buffer_path


class PeriodicCheckpoint(BaseCallback):
    """Checkpoint (model + replay buffer) every ``every`` environment steps, keeping the last ``keep``."""

    def __init__(self, directory: Path, every: int, keep: int = 3) -> None:
        super().__init__()
        self.directory = directory
        self.every = every
        self.keep = keep
        self._last = 0

    def _on_training_start(self) -> None:
        self._last = self.model.num_timesteps

    def _on_step(self) -> bool:
        if self.model.num_timesteps - self._last >= self.every:
            self._last = self.model.num_timesteps
            save_checkpoint(self.model, self.directory)  # type: ignore[arg-type]
            self._prune()
        return True

    def _prune(self) -> None:
        saved = sorted(
            (int(m.group(1)), p)
            for p in self.directory.glob("dqn_*_steps.zip")
            if (m := _CHECKPOINT.search(p.name))
        )
        for steps, path in saved[: -self.keep]:
            path.unlink(missing_ok=True)
            (self.directory / f"dqn_replay_buffer_{steps}_steps.pkl").unlink(missing_ok=True)


"""stable-baselines3 callbacks and log writers: TensorBoard records, progress, checkpoints, the best agent.

The best agent is chosen by what a user of the exported scheduler cares about: the mean final
validation loss of the network it trained, over the same held-out episodes at every evaluation
(:class:`ValLossEvalCallback`), not the return.

The progress bar is our own tqdm bar rather than SB3's ``ProgressBarCallback``: SB3's needs ``rich``
(not a dependency of rlopt) and cannot show the last episode's return and validation accuracy.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import CSVOutputFormat, filter_excluded_keys
from stable_baselines3.common.vec_env import VecEnv
from tqdm.auto import tqdm

from agents.rundir import TMP_PREFIX, Checkpoint, Manifest, checkpoints_in, sha256_of, write_text_atomic

BEST_MODEL_NAME = "best_model.zip"
BEST_EVAL_NAME = "best_eval.json"


class ControlLoggingCallback(BaseCallback):
    """Writes what the agent does to the optimizer, namespaced as CleanRL does.

    * every ``log_every`` steps (first environment): ``env/lr``, ``env/reinforcement``, ``env/loss``,
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
            self.logger.record("env/reinforcement", info["reinforcement"])
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
            # the episode's start point: a resumed run continues the stream of these draws
            self.logger.record("charts/model_seed", info["model_seed"])
            self.logger.record("charts/start_lr", info["lr_init"])
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


def save_checkpoint(model: BaseAlgorithm, directory: Path, manifest: Manifest) -> Checkpoint:
    """Model and replay buffer of ``model``, written atomically and recorded in ``manifest``.

    Both files are written under ``tmp_`` names, hashed, renamed into place, and only then recorded:
    a crash at any point leaves either no file under a real name or one the manifest does not vouch
    for, and ``--resume`` loads neither.
    """
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint.at(directory, int(model.num_timesteps))
    digests: dict[Path, str] = {}
    for path in checkpoint.files:
        tmp = path.with_name(TMP_PREFIX + path.name)
        if path == checkpoint.model:
            model.save(tmp)
        else:
            model.save_replay_buffer(tmp)  # type: ignore[attr-defined]
        digests[path] = sha256_of(tmp)
        os.replace(tmp, path)
    manifest.record(digests)
    return checkpoint


class RunCheckpointCallback(CheckpointCallback):
    """SB3's ``CheckpointCallback`` (model + replay buffer every ``save_freq`` calls, SB3's file names)
    with atomic writes, a sha256 manifest, and only the newest ``keep`` checkpoints kept.

    As in SB3, one call is ``n_envs`` environment steps: pass ``max(every // n_envs, 1)``.
    """

    def __init__(self, save_freq: int, directory: Path, manifest: Manifest, keep: int = 3) -> None:
        super().__init__(save_freq, str(directory), name_prefix="dqn", save_replay_buffer=True)
        self.directory = directory
        self.manifest = manifest
        self.keep = keep

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            self.save()
        return True

    def save(self) -> Checkpoint:
        """Checkpoint the model now (also used at the end of a run and on interruption)."""
        checkpoint = save_checkpoint(self.model, self.directory, self.manifest)
        if self.verbose >= 2:
            print(f"Saving model checkpoint to {checkpoint.model}")
        self.prune()
        return checkpoint

    def prune(self) -> None:
        stale = checkpoints_in(self.directory)[self.keep :]
        for checkpoint in stale:
            for path in checkpoint.files:
                path.unlink(missing_ok=True)
        if stale:
            self.manifest.forget(*(path for checkpoint in stale for path in checkpoint.files))


@dataclass(frozen=True)
class EvalScore:
    """One greedy evaluation of the agent on the held-out episodes; lower :attr:`rank` is better.

    Attributes:
        val_loss: mean final validation loss over the episodes whose network did not diverge
            (NaN when all did).
        diverged: episodes that ended with a non-finite validation loss (a broken network).
        episodes: episodes evaluated.
        mean_return: mean episode return, for the record; it does not rank.
        num_timesteps: agent training steps when it was evaluated.
    """

    val_loss: float
    diverged: int
    episodes: int
    mean_return: float
    num_timesteps: int

    @property
    def rank(self) -> tuple[int, float]:
        """``(diverged, val_loss)``: an agent that broke fewer networks always ranks first, as a
        scheduler that sometimes collapses training is worse than none; then the lower mean loss."""
        return self.diverged, self.val_loss if math.isfinite(self.val_loss) else math.inf

    def better_than(self, other: EvalScore | None) -> bool:
        return other is None or self.rank < other.rank

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalScore:
        return cls(
            val_loss=float(data["val_loss"]), diverged=int(data["diverged"]), episodes=int(data["episodes"]),
            mean_return=float(data["mean_return"]), num_timesteps=int(data["num_timesteps"]),
        )


class ValLossEvalCallback(EvalCallback):
    """SB3's ``EvalCallback``, selecting the agent by the final validation loss of held-out episodes.

    Every ``eval_freq`` calls it runs ``n_eval_episodes`` greedy episodes (SB3's ``evaluate_policy``)
    and reads ``info["val_loss"]`` at the end of each. Before every evaluation the evaluation env is
    re-seeded with ``seed``, so each evaluation trains the same networks from the same start points
    (task, length, starting rate, initialisation and batch order are all drawn from that seed):
    two agents are compared on identical episodes, and only their actions differ. An agent whose
    :class:`EvalScore` ranks before the best so far is saved as ``best_model.zip`` and
    ``callback_on_new_best`` runs (:class:`RecordBestModel`); :attr:`best` holds its score.

    Logs ``eval/val_loss``, ``eval/val_accuracy``, ``eval/diverged``, ``eval/mean_reward`` and
    ``eval/mean_ep_length``; ``evaluations.npz`` in ``log_path`` also holds every episode's
    ``val_losses``. One evaluation costs ``n_eval_episodes`` full episodes of network training.
    """

    def __init__(
        self,
        eval_env: gym.Env | VecEnv,
        *,
        seed: int,
        callback_on_new_best: BaseCallback | None = None,
        n_eval_episodes: int = 5,
        eval_freq: int = 10000,
        log_path: str | None = None,
        best_model_save_path: str | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(
            eval_env,
            callback_on_new_best=callback_on_new_best,
            n_eval_episodes=n_eval_episodes,
            eval_freq=eval_freq,
            log_path=log_path,
            best_model_save_path=best_model_save_path,
            deterministic=True,
            verbose=verbose,
        )
        self.seed = seed
        self.best: EvalScore | None = None
        self.last: EvalScore | None = None
        self.evaluations_val_losses: list[list[float]] = []
        self._val_losses: list[float] = []
        self._val_accuracies: list[float] = []

    def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        super()._log_success_callback(locals_, globals_)
        if not locals_["done"]:
            return
        info = locals_["info"]
        if "val_loss" not in info:
            raise RuntimeError("the evaluation env reports no info['val_loss'] at the end of an episode; "
                               "ValLossEvalCallback needs rlopt's HyperparamControlEnv")
        value = float(info["val_loss"])
        self._val_losses.append(value if math.isfinite(value) else math.nan)
        self._val_accuracies.append(float(info.get("val_accuracy", math.nan)))

    def evaluate(self) -> EvalScore:
        """Run the held-out episodes now, log them, and return their score (does not select)."""
        self.eval_env.seed(self.seed)  # the same episodes at every evaluation
        self._is_success_buffer, self._val_losses, self._val_accuracies = [], [], []
        episode_rewards, episode_lengths = evaluate_policy(
            self.model,
            self.eval_env,
            n_eval_episodes=self.n_eval_episodes,
            deterministic=True,
            return_episode_rewards=True,
            warn=self.warn,
            callback=self._log_success_callback,
        )
        assert isinstance(episode_rewards, list) and isinstance(episode_lengths, list)
        losses = np.asarray(self._val_losses, dtype=np.float64)
        finite = losses[np.isfinite(losses)]
        score = EvalScore(
            val_loss=float(finite.mean()) if finite.size else math.nan,
            diverged=int(losses.size - finite.size),
            episodes=len(episode_rewards),
            mean_return=float(np.mean(episode_rewards)),
            num_timesteps=int(self.num_timesteps),
        )
        self.last = score
        self.last_mean_reward = score.mean_return
        if self.log_path is not None:
            self.evaluations_timesteps.append(self.num_timesteps)
            self.evaluations_results.append([float(r) for r in episode_rewards])
            self.evaluations_length.append([int(n) for n in episode_lengths])
            self.evaluations_val_losses.append(list(self._val_losses))
            np.savez(
                self.log_path,
                timesteps=self.evaluations_timesteps,
                results=self.evaluations_results,
                ep_lengths=self.evaluations_length,
                val_losses=self.evaluations_val_losses,
            )
        self.logger.record("eval/val_loss", score.val_loss)
        self.logger.record("eval/val_accuracy", float(np.nanmean(self._val_accuracies)) if finite.size else math.nan)
        self.logger.record("eval/diverged", score.diverged)
        self.logger.record("eval/mean_reward", score.mean_return)
        self.logger.record("eval/mean_ep_length", float(np.mean(episode_lengths)))
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(self.num_timesteps)
        if self.verbose >= 1:
            print(f"Eval num_timesteps={self.num_timesteps}, val_loss={score.val_loss:.4f}, "
                  f"diverged={score.diverged}/{score.episodes}, return={score.mean_return:.2f}")
        return score

    def _on_step(self) -> bool:
        if self.eval_freq <= 0 or self.n_calls % self.eval_freq != 0:
            return True
        score = self.evaluate()
        continue_training = True
        if score.better_than(self.best):
            if self.best_model_save_path is not None:
                self.model.save(os.path.join(self.best_model_save_path, "best_model"))
            self.best = score
            if self.callback_on_new_best is not None:
                continue_training = self.callback_on_new_best.on_step()
        if self.callback is not None:
            continue_training = continue_training and self._on_event()
        return continue_training


class RecordBestModel(BaseCallback):
    """``ValLossEvalCallback(callback_on_new_best=...)``: record the best model's sha256 and its score.

    The evaluation callback has just written ``best_model.zip``; this records it in the manifest (so
    a resumed run may load it) and writes its :class:`EvalScore` to ``best_eval.json`` next to it.
    """

    def __init__(self, best_dir: Path, manifest: Manifest) -> None:
        super().__init__()
        self.best_dir = best_dir
        self.manifest = manifest

    def _on_step(self) -> bool:
        parent = self.parent
        assert isinstance(parent, ValLossEvalCallback) and parent.best is not None, (
            "RecordBestModel is ValLossEvalCallback's callback_on_new_best"
        )
        best_model = self.best_dir / BEST_MODEL_NAME
        self.manifest.record({best_model: sha256_of(best_model)})
        write_text_atomic(self.best_dir / BEST_EVAL_NAME, json.dumps(parent.best.to_dict()) + "\n")
        return True


class AppendingCSVOutputFormat(CSVOutputFormat):
    """SB3's CSV log writer, continuing an existing file instead of truncating it.

    SB3's ``CSVOutputFormat`` opens ``progress.csv`` with ``"w+"``, so a resumed run would erase the rows
    logged before the interruption. This one opens an existing file with ``"r+"``, takes its header as
    the known columns and appends; new columns still rewrite the header as SB3 does. A record with
    nothing for the CSV (the config table meant for TensorBoard) writes no empty row.
    """

    def __init__(self, filename: str | os.PathLike[str]) -> None:
        path = Path(filename)
        if not path.is_file() or path.stat().st_size == 0:
            super().__init__(str(path))
            return
        with path.open("rb") as raw:
            raw.seek(-1, os.SEEK_END)
            # a run killed mid-row leaves no newline: the next row starts on a line of its own
            unfinished = raw.read(1) != b"\n"
        self.file = path.open("r+")  # closed by close(), as in SB3
        self.separator = ","
        self.quotechar = '"'
        header = self.file.readline().rstrip("\n")
        self.keys = header.split(self.separator) if header else []
        self.file.seek(0, os.SEEK_END)
        if unfinished:
            self.file.write("\n")

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        if filter_excluded_keys(key_values, key_excluded, "csv"):
            super().write(key_values, key_excluded, step)

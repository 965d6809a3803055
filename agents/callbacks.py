"""stable-baselines3 callbacks and log writers: TensorBoard records, progress, checkpoints, the best agent.

The progress bar is our own tqdm bar rather than SB3's ``ProgressBarCallback``: SB3's needs ``rich``
(not a dependency of rlopt) and cannot show the last episode's return and validation accuracy.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.logger import CSVOutputFormat, filter_excluded_keys
from tqdm.auto import tqdm

from agents.rundir import TMP_PREFIX, Checkpoint, Manifest, checkpoints_in, sha256_of, write_text_atomic

BEST_MODEL_NAME = "best_model.zip"
BEST_RETURN_NAME = "best_eval_return.json"


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


class RecordBestModel(BaseCallback):
    """``EvalCallback(callback_on_new_best=...)``: record the best model's sha256 and its return.

    SB3's ``EvalCallback`` has just written ``best_model.zip``; this records it in the manifest (so a
    resumed run may load it) and writes ``best_eval_return.json`` next to it.
    """

    def __init__(self, best_dir: Path, manifest: Manifest) -> None:
        super().__init__()
        self.best_dir = best_dir
        self.manifest = manifest

    def _on_step(self) -> bool:
        assert isinstance(self.parent, EvalCallback), "RecordBestModel is EvalCallback's callback_on_new_best"
        best_model = self.best_dir / BEST_MODEL_NAME
        self.manifest.record({best_model: sha256_of(best_model)})
        record = {"best_eval_return": float(self.parent.best_mean_reward), "num_timesteps": self.num_timesteps}
        write_text_atomic(self.best_dir / BEST_RETURN_NAME, json.dumps(record) + "\n")
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

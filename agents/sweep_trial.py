"""One trial of an agent-training sweep (:mod:`agents.sweep`): the Ray Tune function trainable.

A trial is an ordinary training run (:func:`agents.train.train`) in its run directory ``OUT/TRIAL``.
**The run directory is the trial's state**, and Tune's checkpoint API carries it:

* whenever the run writes a checkpoint (``checkpoints/dqn_N_steps.zip``), :class:`ReportCheckpoints`
  reports the whole run directory to Tune as a checkpoint (``tune.report(metrics, checkpoint=…)``,
  which copies it to the sweep's storage before training goes on); so does the end of the run, with
  the exported ``policy.rlopt``;
* a restarted trial (its worker or node died, or the sweep was resumed) gets its newest reported
  checkpoint from ``tune.get_checkpoint()``. Unless the run directory on this machine already holds a
  newer checkpoint of its own, the reported one is copied back into it, and training continues with
  ``--resume``: the run's manifest-checked checkpoint loading, as after a Ctrl-C.

Imports stable-baselines3 and Ray Tune: only Tune's trial workers and a running sweep import it.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray import tune
from stable_baselines3.common.callbacks import BaseCallback

from agents.callbacks import EvalScore
from agents.config import TrainConfig
from agents.rundir import checkpoints_in
from agents.train import checkpoint_save_freq, read_best_eval, train

__all__ = ["ReportCheckpoints", "newest_checkpoint_steps", "report_run", "run_trial"]


def newest_checkpoint_steps(out: Path) -> int:
    """Environment steps of the newest checkpoint in the run directory ``out`` (0: none)."""
    found = checkpoints_in(out / "checkpoints")
    return found[0].steps if found else 0


def report_run(trial: str, out: Path, steps: int, score: EvalScore | None, *, done: bool) -> None:
    """Report the run directory ``out`` to Tune as a checkpoint, with the best evaluation so far."""
    metrics: dict[str, Any] = {
        "trial": trial,
        "timesteps": steps,
        "val_loss": score.val_loss if score is not None else math.nan,
        "diverged": score.diverged if score is not None else -1,
        "best_eval": None if score is None else score.to_dict(),
        "finished": done,
    }
    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(out)))


class ReportCheckpoints(BaseCallback):
    """After each step: if the run wrote a new checkpoint, report the run directory to Tune.

    It runs after the run's own callbacks (:func:`agents.train.train`'s ``callbacks``), so the
    checkpoint and any new best agent are on disk when it looks.
    """

    def __init__(self, trial: str, out: Path, save_freq: int) -> None:
        super().__init__()
        self.trial = trial
        self.out = out
        self.save_freq = save_freq  # the run's checkpointer writes only on these calls: no directory scan between
        self.reported = newest_checkpoint_steps(out)  # a restored checkpoint is in Tune already

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq != 0:
            return True
        steps = newest_checkpoint_steps(self.out)
        if steps > self.reported:
            self.reported = steps
            report_run(self.trial, self.out, steps, read_best_eval(self.out), done=False)
        return True


def restore_run_directory(out: Path) -> None:
    """Put the trial's newest state in ``out``: Tune's checkpoint, unless ``out`` holds a newer one.

    Without any checkpoint, a directory left by an attempt that failed before its first checkpoint is
    removed (it holds no trained agent), so the run starts afresh.
    """
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as directory:
            if newest_checkpoint_steps(Path(directory)) > newest_checkpoint_steps(out):
                shutil.rmtree(out, ignore_errors=True)
                shutil.copytree(directory, out)
    if out.exists() and not newest_checkpoint_steps(out):
        shutil.rmtree(out)


def run_trial(
    config: dict[str, Any],
    *,
    trials: dict[str, dict[str, Any]],
    extra_callbacks: Callable[[Path], list[BaseCallback]] | None = None,
) -> None:
    """The function trainable: train trial ``config["trial"]`` (settings in ``trials``), reporting its
    checkpoints, then report the finished run with its exported policy's evaluation."""
    name = str(config["trial"])
    cfg = TrainConfig.from_dict(trials[name])
    out = Path(cfg.out)
    restore_run_directory(out)
    cfg = replace(cfg, resume=newest_checkpoint_steps(out) > 0)
    callbacks: list[BaseCallback] = [ReportCheckpoints(name, out, checkpoint_save_freq(cfg))]
    if extra_callbacks is not None:
        callbacks += extra_callbacks(out)
    result = train(cfg, progress=False, callbacks=callbacks)
    report_run(name, out, result.num_timesteps, result.best_eval, done=True)

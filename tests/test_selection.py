"""Agent selection by the final validation loss of held-out episodes (ValLossEvalCallback, EvalScore)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import fake_image_data, save_idx_dataset
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.vec_env import VecEnv

from agents import TrainConfig, env_config, make_dqn, make_vec_env
from agents.callbacks import BEST_EVAL_NAME, EvalScore, RecordBestModel, ValLossEvalCallback
from agents.config import DQNSettings
from agents.rundir import Manifest
from agents.train import train
from rlopt.data import ImageData
from rlopt.scheduler import load_policy

EPISODE = 12


class Recorder(KVWriter):
    """An SB3 log writer that keeps every dumped record in memory."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        self.records.append(dict(key_values))


def score(val_loss: float, diverged: int = 0, mean_return: float = 0.0) -> EvalScore:
    return EvalScore(val_loss=val_loss, diverged=diverged, episodes=4, mean_return=mean_return, num_timesteps=0)


def test_scores_rank_by_divergence_then_validation_loss_never_by_return() -> None:
    assert score(0.5, mean_return=-100).better_than(score(0.6, mean_return=100))
    assert score(2.0, diverged=0).better_than(score(0.1, diverged=1))
    assert score(0.9, diverged=1).better_than(score(math.nan, diverged=4))
    assert not score(0.5).better_than(score(0.5))  # ties keep the earlier agent
    assert score(math.nan, diverged=4).better_than(None)
    assert EvalScore.from_dict(json.loads(json.dumps(score(0.3, 1, 2.5).to_dict()))) == score(0.3, 1, 2.5)


def tiny_setup(
    tiny_data: ImageData, tmp_path: Path, *, episodes: int = 3
) -> tuple[ValLossEvalCallback, Recorder, tuple[VecEnv, VecEnv]]:
    """A DQN on a tiny env and its evaluator: 3 held-out episodes of 12-24 steps, random starting rates."""
    cfg = TrainConfig(episodes=1, episode_steps=EPISODE, max_episode_steps=2 * EPISODE, random_lr_init=True,
                      dqn=DQNSettings(learning_starts=5, buffer_size=100, batch_size=8))
    data = {"data": tiny_data}
    train_env = make_vec_env(env_config(cfg), 1, seed=0, env_kwargs=data)
    eval_env = make_vec_env(env_config(cfg, held_out=True), 1, seed=7, env_kwargs=data)
    model = make_dqn(train_env, cfg.dqn, seed=0)
    recorder = Recorder()
    model.set_logger(Logger(folder=None, output_formats=[recorder]))
    manifest = Manifest(tmp_path)
    evaluator = ValLossEvalCallback(
        eval_env, seed=7, n_eval_episodes=episodes, eval_freq=1, log_path=str(tmp_path / "eval"),
        best_model_save_path=str(tmp_path / "best"), callback_on_new_best=RecordBestModel(tmp_path / "best", manifest),
    )
    evaluator.init_callback(model)
    return evaluator, recorder, (train_env, eval_env)


def test_every_evaluation_replays_the_same_held_out_episodes(tiny_data: ImageData, tmp_path: Path) -> None:
    evaluator, recorder, envs = tiny_setup(tiny_data, tmp_path)
    try:
        first = evaluator.evaluate()
        losses = list(evaluator._val_losses)
        again = evaluator.evaluate()  # the same agent: without re-seeding these would be new episodes
        assert list(evaluator._val_losses) == losses and again == first
    finally:
        for env in envs:
            env.close()
    assert len(set(losses)) == 3  # three different episodes (network seed, length, starting rate)
    assert first.episodes == 3 and first.diverged == 0
    assert first.val_loss == pytest.approx(np.mean(losses))
    logged = [r for r in recorder.records if "eval/val_loss" in r]
    assert len(logged) == 2 and logged[0]["eval/val_loss"] == pytest.approx(first.val_loss)
    assert {"eval/val_accuracy", "eval/diverged", "eval/mean_reward", "eval/mean_ep_length"} <= set(logged[0])


def test_the_lowest_validation_loss_is_kept_whatever_the_return(
    tiny_data: ImageData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluator, _, envs = tiny_setup(tiny_data, tmp_path)
    scripted = iter([score(1.0, mean_return=5.0), score(0.4, mean_return=-30.0), score(0.7, mean_return=90.0)])
    monkeypatch.setattr(evaluator, "evaluate", lambda: next(scripted))
    best_model = tmp_path / "best" / "best_model.zip"
    saved_at = []
    try:
        for _ in range(3):
            mtime = best_model.stat().st_mtime_ns if best_model.exists() else None
            assert evaluator.on_step()
            saved_at.append(best_model.exists() and best_model.stat().st_mtime_ns != mtime)
    finally:
        for env in envs:
            env.close()
    assert saved_at == [True, True, False]
    assert evaluator.best is not None and evaluator.best.val_loss == 0.4
    assert json.loads((tmp_path / "best" / BEST_EVAL_NAME).read_text())["val_loss"] == 0.4
    assert Manifest.load(tmp_path).problem_with(best_model) is None  # recorded for --resume


def test_an_env_without_validation_loss_is_a_clear_error(tiny_data: ImageData, tmp_path: Path) -> None:
    evaluator, _, envs = tiny_setup(tiny_data, tmp_path)
    for env in envs:
        env.close()
    with pytest.raises(RuntimeError, match="val_loss"):
        evaluator._log_success_callback({"done": True, "info": {}}, {})


def test_training_exports_the_agent_with_the_lowest_validation_loss(tmp_path: Path) -> None:
    idx_dir = save_idx_dataset(fake_image_data(n_train=360, n_test=60, seed=0, n_validation=60), tmp_path / "idx")
    out = tmp_path / "run"
    cfg = TrainConfig(
        episodes=4, episode_steps=EPISODE, n_envs=1, data_dir=str(idx_dir), train_size=256, validation_size=40,
        out=str(out), checkpoint_every=100, eval_every=12, eval_episodes=2, log_every=5,
        dqn=DQNSettings(learning_starts=5, buffer_size=100, batch_size=8),
    )
    result = train(cfg, progress=False)
    evaluations = np.load(out / "eval" / "evaluations.npz")
    means = evaluations["val_losses"].mean(axis=1)
    assert len(means) == 4 and evaluations["val_losses"].shape == (4, 2)
    assert result.selected == "best" and result.best_eval is not None
    assert result.best_eval.val_loss == pytest.approx(float(np.min(means)))
    assert result.best_eval.num_timesteps == int(evaluations["timesteps"][int(np.argmin(means))])
    recorded = load_policy(result.policy_path).metadata["best_eval"]
    assert recorded["val_loss"] == pytest.approx(result.best_eval.val_loss)

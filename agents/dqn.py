"""Environments and the stable-baselines3 DQN set up for hyperparameter control."""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from agents.config import DQNSettings, TrainConfig
from envs import EnvConfig, env_id_for


def env_config(cfg: TrainConfig, *, held_out: bool = False) -> EnvConfig:
    """The environment settings of a training run (``held_out``: evaluation start points)."""
    return EnvConfig(
        control=cfg.control,
        task=cfg.task,
        optimizer=cfg.optimizer,
        start="random" if held_out else cfg.start,
        episode_steps=cfg.episode_steps,
        max_episode_steps=cfg.max_episode_steps,
        episode_lengths=cfg.eval_lengths if held_out else None,
        random_lr_init=cfg.random_lr_init,
        lr_init=cfg.lr_init,
        reinforcement_init=cfg.reinforcement_init,
        clamp_bounds=cfg.clamp_bounds,
        decision_interval=cfg.decision_interval,
        rewards=cfg.rewards,
        batch_size=cfg.batch_size,
        train_size=cfg.train_size,
        validation_size=cfg.validation_size,
        data_dir=cfg.data_dir,
        held_out=held_out,
    )


def _make_env(config: EnvConfig, device: str, threads: int, env_kwargs: dict[str, Any]) -> gym.Env:
    # runs inside each worker process: one process's torch threads must not fight the others'
    torch.set_num_threads(threads)
    # the env truncates at config.episode_steps itself (no TimeLimit patch needed)
    return Monitor(gym.make(env_id_for(config.control), config=config, device=device, **env_kwargs))


def make_vec_env(
    config: EnvConfig,
    n_envs: int,
    *,
    seed: int,
    device: str = "cpu",
    threads: int = 1,
    env_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """``n_envs`` monitored environments: in this process for 1, in worker processes for more."""
    factory = functools.partial(_make_env, config, device, threads, env_kwargs or {})
    vec: VecEnv = DummyVecEnv([factory]) if n_envs == 1 else SubprocVecEnv([factory] * n_envs)
    vec.seed(seed)
    return vec


def make_dqn(env: VecEnv, settings: DQNSettings, *, seed: int, tensorboard_log: str | None = None) -> DQN:
    """A DQN with :class:`agents.config.DQNSettings`; the Q-network always runs on the CPU (it is tiny)."""
    return DQN(
        "MlpPolicy",
        env,
        learning_rate=settings.learning_rate,
        buffer_size=settings.buffer_size,
        learning_starts=settings.learning_starts,
        batch_size=settings.batch_size,
        gamma=settings.gamma,
        train_freq=settings.train_freq,
        gradient_steps=settings.gradient_steps,
        n_steps=settings.n_steps,
        target_update_interval=settings.target_update_interval,
        exploration_fraction=settings.exploration_fraction,
        exploration_final_eps=settings.exploration_final_eps,
        policy_kwargs={"net_arch": list(settings.net_arch)},
        tensorboard_log=tensorboard_log,
        seed=seed,
        device="cpu",
        verbose=0,
    )

"""stable-baselines3 agents that learn to control an optimizer's hyperparameters.

Names load on first use, so ``rlopt-train --help`` (:mod:`agents.cli`) imports neither
stable-baselines3 nor the environments.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.callbacks import (
        ControlLoggingCallback,
        EvalScore,
        RunCheckpointCallback,
        ValLossEvalCallback,
        save_checkpoint,
    )
    from agents.cli import main, parse_config
    from agents.config import DQNSettings, TrainConfig
    from agents.dqn import env_config, make_dqn, make_vec_env
    from agents.export import export_policy, q_network_of
    from agents.train import RunDirectoryError, RunInterrupted, TrainingSetupError, TrainResult, train

_HOME = {
    "ControlLoggingCallback": "agents.callbacks",
    "RunCheckpointCallback": "agents.callbacks",
    "EvalScore": "agents.callbacks",
    "ValLossEvalCallback": "agents.callbacks",
    "save_checkpoint": "agents.callbacks",
    "main": "agents.cli",
    "parse_config": "agents.cli",
    "DQNSettings": "agents.config",
    "TrainConfig": "agents.config",
    "env_config": "agents.dqn",
    "make_dqn": "agents.dqn",
    "make_vec_env": "agents.dqn",
    "export_policy": "agents.export",
    "q_network_of": "agents.export",
    "RunDirectoryError": "agents.train",
    "RunInterrupted": "agents.train",
    "TrainResult": "agents.train",
    "TrainingSetupError": "agents.train",
    "train": "agents.train",
}

__all__ = [
    "ControlLoggingCallback",
    "DQNSettings",
    "EvalScore",
    "RunCheckpointCallback",
    "RunDirectoryError",
    "RunInterrupted",
    "TrainConfig",
    "TrainResult",
    "TrainingSetupError",
    "ValLossEvalCallback",
    "env_config",
    "export_policy",
    "main",
    "make_dqn",
    "make_vec_env",
    "parse_config",
    "q_network_of",
    "save_checkpoint",
    "train",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'agents' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)

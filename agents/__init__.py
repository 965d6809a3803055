"""stable-baselines3 agents that learn to control an optimizer's hyperparameters."""

from agents.callbacks import ControlLoggingCallback, PeriodicCheckpoint, latest_checkpoint, save_checkpoint
from agents.config import DQNSettings, TrainConfig, parse_config
from agents.dqn import env_config, make_dqn, make_vec_env
from agents.export import export_policy, q_network_of
from agents.train import RunDirectoryError, TrainingSetupError, TrainResult, train

__all__ = [
    "ControlLoggingCallback",
    "DQNSettings",
    "PeriodicCheckpoint",
    "RunDirectoryError",
    "TrainConfig",
    "TrainResult",
    "TrainingSetupError",
    "env_config",
    "export_policy",
    "latest_checkpoint",
    "make_dqn",
    "make_vec_env",
    "parse_config",
    "q_network_of",
    "save_checkpoint",
    "train",
]

"""Training tasks: what one controlled training run learns, and how big it is.

A task is a dataset (variant), a model, a batch size and an optimizer family. The environment
trains on tasks and the benchmark measures on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

#: the optimizer families a task trains with and a policy can be trained on
OptimizerName = Literal["sgd", "adam", "rsgd"]
OPTIMIZER_NAMES: tuple[OptimizerName, ...] = get_args(OptimizerName)


@dataclass(frozen=True)
class TaskSize:
    """The size of a training task: the one home of these defaults (Zhu, Hayashi & Ohsawa §4).

    The environment, agent training and the evaluation take their defaults from here.

    Attributes:
        train_size: training images the network learns from (8,000 MNIST images in §4).
        validation_size: held-out images (from the dataset's validation split) scored at the end
            of an episode or run.
        batch_size: mini-batch size (32).
        episode_steps: training steps of one agent-training episode (250).
    """

    train_size: int = 8000
    validation_size: int = 2000
    batch_size: int = 32
    episode_steps: int = 250

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.episode_steps < 1 or self.validation_size < 0:
            raise ValueError(
                f"batch_size and episode_steps must be >= 1 and validation_size >= 0, got {self}"
            )
        if self.train_size < self.batch_size:
            raise ValueError(f"train_size {self.train_size} is smaller than one batch of {self.batch_size}")

"""Export a trained DQN as a ``.rlopt`` learned-scheduler file (format: :mod:`rlopt.scheduler`)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from stable_baselines3 import DQN
from torch import nn

import rlopt
from rlopt.control import ActionSpec, ObservationSpec
from rlopt.scheduler import save_policy


def q_network_of(model: DQN) -> nn.Sequential:
    """A CPU copy of the DQN's online Q-network (``q_net.q_net``: Linear/ReLU layers).

    SB3's ``MlpPolicy`` for a flat ``Box`` observation has a parameter-free ``FlattenExtractor`` and no
    observation normalisation, so this Sequential computes exactly the Q-values ``model.predict`` uses.
    """
    q_net = model.q_net.q_net
    if not isinstance(q_net, nn.Sequential):
        raise TypeError(f"unexpected DQN q_net layout: {type(q_net).__name__}")
    if any(p.numel() for p in model.q_net.features_extractor.parameters()):
        raise TypeError("the DQN's features extractor has parameters: only MlpPolicy on flat observations exports")
    return copy.deepcopy(q_net).cpu()


def export_policy(
    model: DQN,
    path: str | os.PathLike[str],
    observation: ObservationSpec,
    actions: ActionSpec,
    *,
    optimizer: str,
    initial_lr: float,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` (``policy.rlopt``) from a trained DQN and the env's observation/action specs.

    ``optimizer`` and ``initial_lr`` are the optimizer the env trained with and the rate its episodes
    started from; they become the policy file's declared fields.
    """
    activation = model.policy.activation_fn.__name__.lower() if hasattr(model.policy, "activation_fn") else "relu"
    meta = {"rlopt_version": rlopt.__version__, "num_timesteps": int(model.num_timesteps), **(metadata or {})}
    return save_policy(
        path, q_network_of(model), observation, actions,
        optimizer=optimizer, initial_lr=initial_lr, activation=activation, metadata=meta,
    )

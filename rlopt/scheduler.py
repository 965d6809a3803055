"""The exported learned scheduler: a trained Q-network that sets hyperparameters in any torch loop.

A ``.rlopt`` policy file is one ``torch.save`` dictionary that :func:`torch.load` reads with
``weights_only=True`` (tensors, numbers, strings, lists and dicts only — never arbitrary pickle):

==============  ==================================================================================
key             content
==============  ==================================================================================
format          ``"rlopt-policy"``
version         :data:`POLICY_VERSION`; files of another version are refused
observation     :class:`rlopt.control.ObservationSpec` as a dict: feature names and order, window
                lengths, horizon, clip (the normalisation: features are scale-free by construction
                and clipped to ±clip; no running statistics), observation version
actions         :class:`rlopt.control.ActionSpec` as a dict: mode, factors, bounds, starting Γ
optimizer       ``{"name": "sgd" | "adam" | "rsgd", "initial_lr": float}``: the optimizer the policy
                was trained with and the rate its training runs started from
network         ``{"sizes": [19, 64, 64, 3], "activation": "relu"}``: the Q-network's layout
weights         the Q-network's tensors, ``nn.Sequential`` names (``"0.weight"``, ...)
metadata        free-form: training configuration, rlopt version, results
==============  ==================================================================================

Nothing here imports gymnasium or stable-baselines3.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from rlopt.control import (
    OBSERVATION_VERSION,
    ActionSpec,
    Controller,
    ObservationSpec,
    check_within_bounds,
    reinforcement_of,
)
from rlopt.tasks import OPTIMIZER_NAMES

POLICY_FORMAT = "rlopt-policy"
POLICY_VERSION = 2
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class PolicyFileError(ValueError):
    """A policy file that cannot be used; the message names the file and the reason."""


def build_q_network(sizes: list[int], activation: str = "relu") -> nn.Sequential:
    """``Linear → act → … → Linear``, the layout of stable-baselines3's DQN ``q_net``."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


@dataclass(frozen=True, eq=False)
class Policy:
    """A learned policy as read from a ``.rlopt`` file (:func:`load_policy`).

    Attributes:
        q_network: the Q-network; the greedy action is its argmax.
        observation: what it observes (:class:`rlopt.control.ObservationSpec`).
        actions: what its actions do (:class:`rlopt.control.ActionSpec`).
        optimizer: the optimizer it was trained with: ``"sgd"``, ``"adam"`` or ``"rsgd"``.
        initial_lr: the learning rate its training runs started from.
        activation: the hidden layers' activation, ``"relu"`` or ``"tanh"``.
        metadata: free-form training record (configuration, rlopt version, results).
    """

    q_network: nn.Sequential
    observation: ObservationSpec
    actions: ActionSpec
    optimizer: str
    initial_lr: float
    activation: str = "relu"
    metadata: dict[str, Any] = field(default_factory=dict)


def save_policy(
    path: str | os.PathLike[str],
    q_network: nn.Sequential,
    observation: ObservationSpec,
    actions: ActionSpec,
    *,
    optimizer: str,
    initial_lr: float,
    activation: str = "relu",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a ``.rlopt`` policy file (atomically: a crash never leaves a half-written file)."""
    linears = [m for m in q_network if isinstance(m, nn.Linear)]
    sizes = [linears[0].in_features, *(m.out_features for m in linears)]
    if sizes[0] != observation.size or sizes[-1] != actions.n_actions:
        raise ValueError(
            f"network maps {sizes[0]} → {sizes[-1]} but the specs need {observation.size} → {actions.n_actions}"
        )
    if optimizer not in OPTIMIZER_NAMES:
        raise ValueError(f"optimizer must be one of {OPTIMIZER_NAMES}, got {optimizer!r}")
    if not 0 < initial_lr < math.inf:
        raise ValueError(f"initial_lr must be a positive finite rate, got {initial_lr}")
    payload = {
        "format": POLICY_FORMAT,
        "version": POLICY_VERSION,
        "observation": observation.to_dict(),
        "actions": actions.to_dict(),
        "optimizer": {"name": optimizer, "initial_lr": float(initial_lr)},
        "network": {"sizes": sizes, "activation": activation},
        "weights": {k: v.detach().cpu().clone() for k, v in q_network.state_dict().items()},
        "metadata": metadata or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy file; every problem is a :class:`PolicyFileError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PolicyFileError(f"{path}: no such policy file (train_agent.py writes DIR/policy.rlopt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise PolicyFileError(f"{path}: not a readable rlopt policy file ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != POLICY_FORMAT:
        raise PolicyFileError(f"{path}: not an rlopt policy file (no format tag {POLICY_FORMAT!r})")
    if payload.get("version") != POLICY_VERSION:
        raise PolicyFileError(
            f"{path}: policy file version {payload.get('version')!r}, this rlopt reads version "
            f"{POLICY_VERSION}; re-export it with this rlopt's train_agent.py"
        )
    try:
        observation = ObservationSpec.from_dict(payload["observation"])
        actions = ActionSpec.from_dict(payload["actions"])
        network = payload["network"]
        activation = str(network["activation"])
        q_network = build_q_network(list(network["sizes"]), activation)
        q_network.load_state_dict(payload["weights"])
        optimizer = payload["optimizer"]
        optimizer_name, initial_lr = str(optimizer["name"]), float(optimizer["initial_lr"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise PolicyFileError(f"{path}: malformed policy file ({exc.__class__.__name__}: {exc})") from exc
    metadata = payload.get("metadata", {})
    if not isinstance(metadata, dict):
        raise PolicyFileError(f"{path}: malformed policy file (metadata is a {type(metadata).__name__}, not a dict)")
    if optimizer_name not in OPTIMIZER_NAMES or not 0 < initial_lr < math.inf:
        raise PolicyFileError(
            f"{path}: malformed policy file (optimizer {optimizer_name!r} at initial lr {initial_lr}; "
            f"expected one of {OPTIMIZER_NAMES} at a positive finite rate)"
        )
    if not all(torch.isfinite(p).all() for p in q_network.parameters()):
        raise PolicyFileError(f"{path}: the Q-network has non-finite weights (NaN or inf); the policy is unusable")
    current = ObservationSpec()
    if observation.version != OBSERVATION_VERSION or observation.features != current.features:
        raise PolicyFileError(
            f"{path}: the policy observes features {list(observation.features)} (observation version "
            f"{observation.version}) but this rlopt computes {list(current.features)} (version "
            f"{OBSERVATION_VERSION}); retrain or use the rlopt version it was trained with"
        )
    if q_network[0].in_features != observation.size or q_network[-1].out_features != actions.n_actions:
        raise PolicyFileError(f"{path}: network shape does not match its observation/action specs")
    q_network.eval()
    return Policy(q_network, observation, actions, optimizer_name, initial_lr, activation, dict(metadata))


class GreedyQ:
    """The greedy action of a ``Linear → act → … → Linear`` Q-network, in NumPy on cached weights.

    The Q-values are computed in float64 from the float32 weights, so they differ from the
    network's own float32 forward pass only by float32 rounding. The action therefore equals
    ``q_network(obs).argmax()`` except where the two best Q-values lie within that rounding
    (:data:`TIE_TOLERANCE` relative to the largest |Q|, far above it); ties go to the lowest action.
    NumPy instead of torch because each torch call costs more than this whole network right after
    a training step.
    """

    #: relative gap under which the float64 and the float32 argmax may differ (float32 ε is 1.2e-7)
    TIE_TOLERANCE = 1e-4

    def __init__(self, q_network: nn.Sequential, activation: str) -> None:
        linears = [m for m in q_network if isinstance(m, nn.Linear)]
        self.weights = [m.weight.detach().cpu().double().numpy().T.copy() for m in linears]
        self.biases = [
            (m.bias.detach().cpu().double().numpy() if m.bias is not None else np.zeros(m.out_features))
            for m in linears
        ]
        self.tanh = activation == "tanh"

    def q_values(self, observation: np.ndarray) -> np.ndarray:
        x = np.asarray(observation, dtype=np.float64).reshape(-1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w + b
            if i < last:
                x = np.tanh(x) if self.tanh else np.maximum(x, 0.0)
        return x

    def __call__(self, observation: np.ndarray) -> int:
        return int(np.argmax(self.q_values(observation)))  # argmax: the first of equal maxima


class LearnedScheduler(LRScheduler):
    """Set an optimizer's hyperparameters every step with a learned DQN policy (greedy actions).

    A ``torch.optim.lr_scheduler.LRScheduler`` that, like ``ReduceLROnPlateau``, needs an input:
    call ``step(loss)`` once after every ``optimizer.step()``. It observes the step just taken
    through :class:`rlopt.control.Controller` (the same code the training environment runs): the
    loss, and the gradient and update statistics that the optimizer's step hooks take inside
    ``optimizer.step()``, so it does not matter on which side of the step ``zero_grad()`` is called.
    It then takes the action with the highest Q-value (:class:`GreedyQ`) and writes the new learning
    rate and/or R-SGD Γ into ``optimizer.param_groups``; new values are clamped to the policy's bounds.

    Args:
        optimizer: the optimizer to steer. Its starting rate must lie within the policy's lr bounds
            (``ValueError`` otherwise); a policy that controls Γ needs :class:`rlopt.RSGD`.
        policy: a ``.rlopt`` path or a loaded :class:`Policy`.
        total_steps: the run's budget in optimizer steps, as ``OneCycleLR`` takes it: the ``step``
            feature becomes t / total_steps. Without it the feature counts to the horizon the policy
            was trained with and stays at 1 beyond it, so the policy acts as at the end of its
            training episodes.
        lr_bounds: override the trained lr bounds (e.g. for Adam, whose useful rates lie below SGD's).

    A policy that controls Γ owns it from construction on: Γ is set to the value the policy was
    trained from (``actions.reinforcement_init``), overriding the optimizer's schedule.

    ``state_dict()`` holds the loss and gradient history (a few dozen numbers), not the optimizer
    or the network; memory is three flat buffers the size of all parameters, on their device.

    Example:
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> sched = LearnedScheduler(opt, "runs/default/policy.rlopt", total_steps=2000)
        >>> for x, y in batches:
        ...     loss = F.cross_entropy(model(x), y); loss.backward(); opt.step(); opt.zero_grad()
        ...     sched.step(loss.item())
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        policy: str | os.PathLike[str] | Policy,
        *,
        total_steps: int | None = None,
        lr_bounds: tuple[float, float] | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a torch.optim.Optimizer")
        # like ReduceLROnPlateau, no LRScheduler.__init__: it would take a step without a loss
        self.optimizer = optimizer
        self.policy = policy if isinstance(policy, Policy) else load_policy(policy)
        actions = self.policy.actions
        if lr_bounds is not None:
            actions = replace(actions, lr_bounds=(float(lr_bounds[0]), float(lr_bounds[1])))
        check_within_bounds(optimizer, actions)
        self.controller = Controller(optimizer, self.policy.observation, actions, horizon=total_steps)
        self.total_steps = total_steps
        self._greedy = GreedyQ(self.policy.q_network, self.policy.activation)
        self.last_epoch = 0
        self.last_action: int | None = None
        self._last_lr = [float(g["lr"]) for g in optimizer.param_groups]

    @classmethod
    def load(cls, path: str | os.PathLike[str], optimizer: torch.optim.Optimizer, **kwargs: Any) -> LearnedScheduler:
        """``LearnedScheduler(optimizer, path, **kwargs)``, with a mode/optimizer mismatch reported
        as a :class:`PolicyFileError` naming the file."""
        policy = load_policy(path)
        try:
            return cls(optimizer, policy, **kwargs)
        except ValueError as exc:
            raise PolicyFileError(f"{path}: {exc}") from exc

    @property
    def observation(self) -> ObservationSpec:
        return self.controller.observation

    @property
    def actions(self) -> ActionSpec:
        return self.controller.actions

    @property
    def metadata(self) -> dict[str, Any]:
        return self.policy.metadata

    def decide(self, observation: torch.Tensor | np.ndarray) -> int:
        """Greedy action for one observation (what ``DQN.predict(obs, deterministic=True)`` returns,
        up to :attr:`GreedyQ.TIE_TOLERANCE`)."""
        if isinstance(observation, torch.Tensor):
            observation = observation.detach().cpu().numpy()
        return self._greedy(np.asarray(observation, dtype=np.float32).reshape(-1))

    def step(self, loss: float | torch.Tensor | None = None) -> None:
        """Observe the optimizer step just taken (with its mini-batch ``loss``) and act.

        Raises ``TypeError`` without a loss and ``RuntimeError`` if no ``optimizer.step()`` ran since
        the previous call.
        """
        if loss is None:
            raise TypeError("LearnedScheduler.step(loss) needs the step's training loss, as ReduceLROnPlateau "
                            "needs its metric")
        action = self._greedy(self.controller.observe(float(loss)))
        self.controller.act(action)
        self.last_action = action
        self.last_epoch += 1
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    def get_last_reinforcement(self) -> list[float]:
        """R-SGD Γ of each param group for the next step (0 for optimizers without one)."""
        return [reinforcement_of(self.optimizer, i) for i in range(len(self.optimizer.param_groups))]

    def state_dict(self) -> dict[str, Any]:
        """The observation history, step count and last action; not the optimizer, not the network."""
        return {
            "controller": self.controller.state_dict(),
            "last_epoch": self.last_epoch,
            "last_action": self.last_action,
            "last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.controller.load_state_dict(state_dict["controller"])
        self.last_epoch = int(state_dict["last_epoch"])
        self.last_action = state_dict["last_action"]
        self._last_lr = list(state_dict["last_lr"])

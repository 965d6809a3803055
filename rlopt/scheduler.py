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
optimizer       ``{"name": "sgd" | "momentum" | "adam" | "rsgd", "initial_lr": float}``: the optimizer the policy
                was trained with and the rate its training runs started from
network         ``{"sizes": [19, 64, 64, 3], "activation": "relu"}``: the Q-network's layout
weights         the Q-network's tensors, ``nn.Sequential`` names (``"0.weight"``, ...)
metadata        free-form: training configuration, rlopt version, results
==============  ==================================================================================

Pretrained policies ship inside the package as ``rlopt/policies/<name>.rlopt``
(:func:`pretrained_names`, :meth:`LearnedScheduler.pretrained`); ``rlopt/policies/README.md`` records
the command, training CPU time and commit that made each.

Nothing here imports gymnasium or stable-baselines3.
"""

from __future__ import annotations

import importlib.resources
import itertools
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    ema_update,
    reinforcement_of,
    set_lr,
)
from rlopt.optim import RSGD
from rlopt.tasks import OPTIMIZER_NAMES
from rlopt.training import MOMENTUM

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

POLICY_FORMAT = "rlopt-policy"
POLICY_VERSION = 2
#: the package whose ``<name>.rlopt`` files are the pretrained policies
PRETRAINED_PACKAGE = "rlopt.policies"
POLICY_SUFFIX = ".rlopt"
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
        optimizer: the optimizer it was trained with: ``"sgd"``, ``"momentum"`` (SGD with momentum
            0.9), ``"adam"`` or ``"rsgd"``.
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


def _pretrained_files() -> dict[str, Traversable]:
    """``{name: resource}`` of every ``<name>.rlopt`` in :data:`PRETRAINED_PACKAGE`."""
    try:
        root = importlib.resources.files(PRETRAINED_PACKAGE)
    except ModuleNotFoundError:  # an install without the policies package ships none
        return {}
    return {
        entry.name.removesuffix(POLICY_SUFFIX): entry
        for entry in root.iterdir()
        if entry.name.endswith(POLICY_SUFFIX) and entry.is_file()
    }


def pretrained_names() -> tuple[str, ...]:
    """Names of the pretrained policies this rlopt ships, sorted (``LearnedScheduler.pretrained(name, ...)``)."""
    return tuple(sorted(_pretrained_files()))


def pretrained_policy(name: str) -> Policy:
    """The shipped policy ``name`` (see :func:`pretrained_names`), read with :func:`load_policy`.

    Raises ``ValueError`` for a name this rlopt does not ship (the message lists those it does) and
    :class:`PolicyFileError` for a shipped file that does not load.
    """
    files = _pretrained_files()
    if name not in files:
        if not files:
            raise ValueError(
                f"no pretrained policy {name!r}: this rlopt ships no pretrained policies yet ({PRETRAINED_PACKAGE} "
                "holds no .rlopt file); train one with rlopt-train and pass its policy.rlopt path to LearnedScheduler"
            )
        raise ValueError(f"no pretrained policy {name!r}; this rlopt ships {', '.join(sorted(files))}")
    with importlib.resources.as_file(files[name]) as path:
        return load_policy(path)


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


@dataclass(frozen=True)
class SafetyConfig:
    """When a :class:`LearnedScheduler` overrides its policy to keep a run from collapsing.

    A learned policy can raise the rate until training breaks; the safety net makes a scheduler
    that is never much worse than doing nothing. It is a setting of the deployed scheduler, not of
    the policy: policy files do not store it, and the training environment (:mod:`envs`) runs
    without it, so agents are trained and selected on what the policy alone does.

    The scheduler keeps its own moving average S_t of the finite losses (β = ``loss_smoothing``)
    and B_t, the lowest S so far; S_1 is the first. It **backs off** — multiplies every param
    group's learning rate by ``backoff``, no lower than the policy's lower lr bound, *instead of*
    the policy's action — when

    * the loss is NaN or ±inf (at every such step), or
    * S_t > ``rise_factor`` · B_t **and** S_t − B_t > ``progress_fraction`` · (S_1 − B_t): the smoothed
      loss is above its best and has given back a large share of the progress made since the
      start. The second test keeps the net quiet on the small, noisy losses late in a run; the
      first on the noise of the first steps, before there is progress to lose, while still
      catching the early blow-up of a rate raised too far. (For B_t ≤ 0, a loss that can be
      negative, only the second applies.) A rise backs off at most once per ``cooldown_steps`` steps,
      so the moving average can show the lowered rate's effect before the next back-off.

    Before the run has made progress (below), a rise backs off only while some param group's rate is
    above the one the run started with: at or below it the run trains as doing nothing would, and
    S_1 and B_t are still a few noisy mini-batches, so a lucky first batch would pass for progress
    lost: a regression loss that scatters by ±40 % per batch sits more than 10 % above a lucky first
    batch for many steps, and backing off at every cooldown would take the rate to its lower bound.
    ``rise_before_progress=True`` backs off for such a rise too. (Only for S_1 > 0, where progress is
    defined: a loss that starts at or below zero backs off for a rise at any rate.)

    After a back-off the policy acts as usual, except that the learning rate cannot rise above the
    value it was backed off to: by default for the rest of the run (``hold_steps=None``), since the
    rates above it have been tried on this run and made its loss rise; a new back-off lowers the cap
    again. ``hold_steps=k`` lifts the cap after k steps, which lets a policy raise the rate again and
    again into the same rise, each time undoing progress.

    A run can also fail without a rising loss: a rate raised too far can hold the loss on a plateau
    (dead ReLUs, saturated units) from the very start, so there is no progress to give back. The
    **stall cap** covers that: from step ``stall_steps`` on (by default from the first step), until the
    smoothed loss has once been ``stall_progress`` below its first value (B_t ≤ (1 − ``stall_progress``)
    · S_1), no param group's learning rate may exceed its ceiling (below). By default, then, a policy
    raises the rate above its ceiling only once training has shown progress: a raise
    on a loss that has not yet moved is a gamble that a wrong guess turns into a dead network. A
    positive ``stall_steps`` lets the policy try higher rates for that many steps first. (Only for
    S_1 > 0.)

    A raise can also undo progress without a rise the back-off test sees: on a loss near its
    starting plateau, a return from B_t to S_1 is a small multiple of B_t. With ``relapse_cap``,
    a run that has made progress and then, after step ``stall_steps``, lost it, its smoothed loss
    back above (1 − ``stall_progress``) · S_1, is held at or below its ceiling (below) **for the rest of
    the run**: the policy's higher rates have been tried on this run and undone its progress, so they
    are not tried again. It may still lower the rate. A run whose loss falls well below its first
    value, as every run that gains from a raise does, never comes back there, and the rule never acts.

    Both caps hold the rate at or below a **ceiling**: the rate the run started with or, with
    ``trained_rate_ceiling``, the rate the policy's training runs started from (the policy file's
    ``initial_lr``, 0.1 for the shipped ``sgd``) if that is higher. A run started far too low may then
    still be raised to where the policy was trained, while one started at or above that rate is held at
    its own. The trained rate counts only on an optimizer of the policy's kind and the policy's own lr
    bounds (no ``lr_bounds`` override), where it means the same step size: ``torch.optim.SGD`` without
    momentum for an ``sgd`` policy, with momentum 0.9 for a ``momentum`` one, ``Adam`` (or a subclass) for
    ``adam``, :class:`rlopt.RSGD` for ``rsgd``. Each param group's ceiling keeps its ratio to the first
    group's.

    It acts on the learning rate only: a policy that controls just R-SGD's Γ (mode ``"rsgd"``) runs
    without it. ``LearnedScheduler(..., safety=None)`` switches it off.
    """

    rise_factor: float = 1.1
    """back off when the smoothed loss exceeds this multiple of its lowest value (and the progress test holds)."""
    progress_fraction: float = 0.3
    """... and its rise above the lowest value exceeds this share of the progress from the first value to it."""
    backoff: float = 0.5
    """factor applied to the learning rate at a back-off (the lower lr bound is the floor)."""
    cooldown_steps: int = 10
    """steps between back-offs for a rising loss; about the memory 1 / (1 − β) of the moving average."""
    hold_steps: int | None = None
    """steps after a back-off during which the learning rate may not exceed its backed-off value; None: the rest
    of the run."""
    loss_smoothing: float = ObservationSpec.loss_smoothing
    """β of the safety net's moving average of the loss."""
    stall_steps: int | None = 0
    """steps after which a run without progress is held at or below its ceiling (0: from the start, so no raise
    above it before progress); None: no stall cap."""
    stall_progress: float = 0.05
    """share of the first smoothed loss that the smoothed loss must once fall by to count as progress."""
    trained_rate_ceiling: bool = True
    """let the caps' ceiling rise to the policy's training start rate when the run started lower; False: the
    run's starting rates are the ceiling."""
    relapse_cap: bool = True
    """after step stall_steps, hold a run whose smoothed loss is back above (1 − stall_progress) · S_1 after
    progress at or below its ceiling for the rest of the run; needs the stall cap (stall_steps)."""
    rise_before_progress: bool = False
    """back off for a rise before progress even while every rate is at or below the run's starting one."""

    def __post_init__(self) -> None:
        if not 1 < self.rise_factor < math.inf:
            raise ValueError(f"rise_factor must be a finite number > 1, got {self.rise_factor}")
        if not 0 <= self.progress_fraction <= 1:
            raise ValueError(f"progress_fraction must lie in [0, 1], got {self.progress_fraction}")
        if not 0 < self.backoff < 1:
            raise ValueError(f"backoff must lie in (0, 1), got {self.backoff}")
        if self.cooldown_steps < 1 or (self.hold_steps is not None and self.hold_steps < 0):
            raise ValueError(f"cooldown_steps must be >= 1 and hold_steps >= 0 (or None: the rest of the run), got "
                             f"{self.cooldown_steps}, {self.hold_steps}")
        if not 0 <= self.loss_smoothing < 1:
            raise ValueError(f"loss_smoothing must lie in [0, 1), got {self.loss_smoothing}")
        if self.stall_steps is not None and self.stall_steps < 0:
            raise ValueError(f"stall_steps must be >= 0 or None, got {self.stall_steps}")
        if not 0 < self.stall_progress < 1:
            raise ValueError(f"stall_progress must lie in (0, 1), got {self.stall_progress}")


#: the safety net a :class:`LearnedScheduler` runs with unless told otherwise
DEFAULT_SAFETY = SafetyConfig()


def _same_kind(optimizer: torch.optim.Optimizer, name: str) -> bool:
    """Whether ``optimizer`` is the kind of optimizer a policy declared as ``name`` was trained with, so that
    its training start rate means the same step size here (the safety net's trained-rate ceiling)."""
    if name == "adam":
        return isinstance(optimizer, torch.optim.Adam)
    if name == "rsgd":
        return isinstance(optimizer, RSGD)
    if name in ("sgd", "momentum") and isinstance(optimizer, torch.optim.SGD):
        momenta = {float(group.get("momentum", 0.0)) for group in optimizer.param_groups}
        return momenta == ({0.0} if name == "sgd" else {MOMENTUM})
    return False


class SafetyNet:
    """The run state of :class:`SafetyConfig`'s rules: the moving average, its best and first
    values, and the cooldown and hold counters. :meth:`LearnedScheduler.step` drives it."""

    def __init__(self, config: SafetyConfig, ceilings: list[float], start_rates: list[float]) -> None:
        self.config = config
        self.smoothed: float | None = None
        self.best: float | None = None
        self.first: float | None = None
        self.steps_since_backoff = config.cooldown_steps  # the first rise may back off at once
        self.hold_left: int | None = 0  # None: the hold lasts for the rest of the run
        self.hold_caps: list[float] = []
        self.ceilings = list(ceilings)  # what the stall and relapse caps hold each param group's rate to
        self.initial_rates = list(start_rates)  # the rates doing nothing would keep
        self.steps = 0
        self.progressed = False
        self.relapsed = False

    def should_back_off(self, loss: float, rates: list[float]) -> bool:
        """Record one step's loss, taken at ``rates`` (one per param group); ``True`` when the rules call for
        a back-off now."""
        cfg = self.config
        self.steps_since_backoff += 1
        self.steps += 1
        if not math.isfinite(loss):
            return True  # kept out of the average: one inf would make it inf for good
        smoothed = self.smoothed = ema_update(self.smoothed, loss, cfg.loss_smoothing)
        first = self.first = smoothed if self.first is None else self.first
        best = self.best = smoothed if self.best is None else min(self.best, smoothed)
        if first > 0 and best <= (1 - cfg.stall_progress) * first:
            relapse = cfg.relapse_cap and cfg.stall_steps is not None and self.steps > cfg.stall_steps
            if relapse and self.progressed and smoothed > (1 - cfg.stall_progress) * first:
                self.relapsed = True
            self.progressed = True
        rose = smoothed - best > cfg.progress_fraction * (first - best) and (
            best <= 0 or smoothed > cfg.rise_factor * best
        )
        if rose and first > 0 and not (self.progressed or cfg.rise_before_progress):
            rose = any(rate > start for rate, start in zip(rates, self.initial_rates, strict=True))
        return rose and self.steps_since_backoff >= cfg.cooldown_steps

    def backed_off(self, rates: list[float]) -> None:
        """Start the cooldown and the hold at the backed-off ``rates`` (one per param group)."""
        self.steps_since_backoff = 0
        self.hold_left = self.config.hold_steps
        self.hold_caps = list(rates)

    @property
    def stalled(self) -> bool:
        """No progress (:attr:`SafetyConfig.stall_progress`) after :attr:`SafetyConfig.stall_steps` steps,
        or progress lost again (:attr:`SafetyConfig.relapse_cap`)."""
        limit = self.config.stall_steps
        if limit is None or (self.first or 0) <= 0:
            return False
        return self.relapsed or (self.steps >= limit and not self.progressed)

    def cap(self, rates: list[float]) -> list[float]:
        """``rates`` held at or below the backed-off ones while a hold lasts (one step of it), and at
        or below the :attr:`ceilings` while the run is :attr:`stalled`."""
        if self.stalled:
            rates = [min(rate, ceiling) for rate, ceiling in zip(rates, self.ceilings, strict=True)]
        if self.hold_left is not None:
            if self.hold_left <= 0:
                return rates
            self.hold_left -= 1
        return [min(rate, cap) for rate, cap in zip(rates, self.hold_caps, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "smoothed": self.smoothed,
            "best": self.best,
            "first": self.first,
            "steps_since_backoff": self.steps_since_backoff,
            "hold_left": self.hold_left,
            "hold_caps": list(self.hold_caps),
            "ceilings": list(self.ceilings),
            "initial_rates": list(self.initial_rates),
            "steps": self.steps,
            "progressed": self.progressed,
            "relapsed": self.relapsed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.smoothed, self.best, self.first = state["smoothed"], state["best"], state["first"]
        self.steps_since_backoff = int(state["steps_since_backoff"])
        self.hold_left = None if state["hold_left"] is None else int(state["hold_left"])
        self.hold_caps = [float(c) for c in state["hold_caps"]]
        # states saved before the trained-rate ceiling named it "start_rates"; before the stall cap existed
        # there is none: keep this run's ceilings, count from here
        saved = state.get("ceilings", state.get("start_rates", self.ceilings))
        self.ceilings = [float(r) for r in saved]
        # a state saved before the no-rise-before-progress rule resumes under the rule it had: every rate
        # counts as raised
        self.initial_rates = [float(r) for r in state.get("initial_rates", [0.0] * len(self.ceilings))]
        self.steps = int(state.get("steps", 0))
        self.progressed = bool(state.get("progressed", True))
        self.relapsed = bool(state.get("relapsed", False))


class LearnedScheduler(LRScheduler):
    """Set an optimizer's hyperparameters every step with a learned DQN policy (greedy actions).

    A ``torch.optim.lr_scheduler.LRScheduler`` that, like ``ReduceLROnPlateau``, needs an input:
    call ``step(loss)`` once after every ``optimizer.step()``. It observes the step just taken
    through :class:`rlopt.control.Controller` (the same code the training environment runs): the
    loss, and the gradient and update statistics that the optimizer's step hooks take inside
    ``optimizer.step()``, so it does not matter on which side of the step ``zero_grad()`` is called.
    It then takes the action with the highest Q-value (:class:`GreedyQ`) and writes the new learning
    rate and/or R-SGD Γ into ``optimizer.param_groups``; new values are clamped to the policy's bounds.
    A safety net (:class:`SafetyConfig`, on by default) overrides the policy when the loss rises
    sharply or stops being finite: it halves the learning rate and keeps it from rising again;
    and until training has made progress, or for good once it has lost the progress it made, it holds
    the rate at or below the one the run started from (or, if higher, the one the policy was trained
    from).

    Args:
        optimizer: the optimizer to steer. Its starting rate must lie within the policy's lr bounds
            (``ValueError`` otherwise); a policy that controls Γ needs :class:`rlopt.RSGD`.
        policy: a ``.rlopt`` path or a loaded :class:`Policy`.
        total_steps: the run's budget in optimizer steps, as ``OneCycleLR`` takes it: the ``step``
            feature becomes t / total_steps. Without it the feature counts to the horizon the policy
            was trained with and stays at 1 beyond it, so the policy acts as at the end of its
            training episodes.
        lr_bounds: override the trained lr bounds (e.g. for Adam, whose useful rates lie below SGD's).
        safety: when to back the learning rate off against the policy (:class:`SafetyConfig`);
            ``None`` lets the policy act alone, as it did in training.

    A policy trained with a decision interval (``actions.interval`` = k) acts on every k-th call only
    (calls 1, 1 + k, …), as in training; the safety net still watches every step.

    After each ``step``: ``last_action`` is the policy's latest greedy action; ``last_backed_off`` says
    whether the safety net replaced it by a back-off on that step (the action was then not applied);
    ``backoffs`` counts the back-offs of the run.

    A policy that controls Γ owns it from construction on: Γ is set to the value the policy was
    trained from (``actions.reinforcement_init``), overriding the optimizer's schedule.

    ``state_dict()`` holds the loss and gradient history (a few dozen numbers), not the optimizer
    or the network; memory is three flat buffers the size of all parameters, on their device.

    Example:
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> sched = LearnedScheduler(opt, "runs/default/policy.rlopt", total_steps=2000)
        >>> # or a shipped one: LearnedScheduler.pretrained("sgd", opt, total_steps=2000)
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
        safety: SafetyConfig | None = DEFAULT_SAFETY,
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
        self.safety = safety
        # the safety net moves the learning rate; a policy that only sets Γ runs without it
        start_rates = [float(g["lr"]) for g in optimizer.param_groups]
        ceilings = start_rates
        if safety is not None and safety.trained_rate_ceiling and lr_bounds is None and start_rates[0] > 0:
            if _same_kind(optimizer, self.policy.optimizer):
                lift = max(1.0, self.policy.initial_lr / start_rates[0])
                ceilings = [rate * lift for rate in start_rates]
        self._safety = (SafetyNet(safety, ceilings, start_rates) if safety is not None and actions.controls_lr
                        else None)
        self.last_backed_off = False
        self.backoffs = 0
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

    @classmethod
    def pretrained(
        cls, name: str, optimizer: torch.optim.Optimizer, *, total_steps: int | None = None, **kwargs: Any
    ) -> LearnedScheduler:
        """A scheduler driven by the policy ``name`` that ships with rlopt (:func:`pretrained_names`).

        ``LearnedScheduler.pretrained("sgd", opt, total_steps=T)``; other keyword arguments as for the
        constructor. An unknown name is a ``ValueError`` listing the shipped ones.
        """
        return cls(optimizer, pretrained_policy(name), total_steps=total_steps, **kwargs)

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
        """Observe the optimizer step just taken (with its mini-batch ``loss``) and act: apply the
        policy's greedy action, or back the learning rate off where the safety net says so.

        A call with no ``optimizer.step()`` since the previous one (``torch.amp.GradScaler`` skips the
        steps whose gradients overflow) does nothing but warn: there is no step to observe, and
        ``total_steps`` counts optimizer steps. Raises ``TypeError`` without a loss.
        """
        if loss is None:
            raise TypeError("LearnedScheduler.step(loss) needs the step's training loss, as ReduceLROnPlateau "
                            "needs its metric")
        if not self.controller.stepped:
            warnings.warn(
                "LearnedScheduler.step(loss) was called with no optimizer.step() since its last call (a "
                "GradScaler skips steps whose gradients overflow); this call was skipped. Call it once after "
                "each optimizer.step().",
                UserWarning,
                stacklevel=2,
            )
            return
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        observation = self.controller.observe(value)
        action = None
        # a policy with a decision interval acts after step 1, 1 + interval, 1 + 2·interval, …
        if self.last_epoch % self.actions.interval == 0:
            action = self.last_action = self._greedy(observation)
        safety = self._safety
        groups = self.optimizer.param_groups
        self.last_backed_off = safety is not None and safety.should_back_off(value, [float(g["lr"]) for g in groups])
        if safety is not None and self.last_backed_off:
            lowest = self.actions.lr_bounds[0]
            for group in groups:
                set_lr(group, max(float(group["lr"]) * safety.config.backoff, lowest))
            safety.backed_off([float(g["lr"]) for g in groups])
            self.backoffs += 1
        else:
            if action is not None:
                self.controller.act(action)
            if safety is not None:
                for group, lr in zip(groups, safety.cap([float(g["lr"]) for g in groups]), strict=True):
                    set_lr(group, lr)
        self.last_epoch += 1
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    def get_last_reinforcement(self) -> list[float]:
        """R-SGD Γ of each param group for the next step (0 for optimizers without one)."""
        return [reinforcement_of(self.optimizer, i) for i in range(len(self.optimizer.param_groups))]

    def state_dict(self) -> dict[str, Any]:
        """The observation history, step count, last action and safety-net state; not the optimizer,
        not the network, not the :class:`SafetyConfig` (pass it to the constructor again)."""
        return {
            "controller": self.controller.state_dict(),
            "last_epoch": self.last_epoch,
            "last_action": self.last_action,
            "last_lr": list(self._last_lr),
            "last_backed_off": self.last_backed_off,
            "backoffs": self.backoffs,
            "safety": None if self._safety is None else self._safety.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.controller.load_state_dict(state_dict["controller"])
        self.last_epoch = int(state_dict["last_epoch"])
        self.last_action = state_dict["last_action"]
        self._last_lr = list(state_dict["last_lr"])
        self.last_backed_off = bool(state_dict.get("last_backed_off", False))
        self.backoffs = int(state_dict.get("backoffs", 0))
        saved = state_dict.get("safety")
        if self._safety is not None and saved is not None:  # a state saved without the net starts it afresh
            self._safety.load_state_dict(saved)

"""The methods ``evaluate.py`` compares: hand-set baselines and exported learned schedulers.

A :class:`Method` is a name and a ``build(model, context) -> (optimizer, hook)`` factory. The
evaluation builds a fresh optimizer for every run and calls ``hook(loss)`` after each
``optimizer.step()`` with that step's mini-batch loss; the hook is where a scheduler steps.

=====================  ============================================================================
name                   method (numbers from :class:`BaselineSettings`)
=====================  ============================================================================
``adam``               ``torch.optim.Adam``, lr 1e-3 (Zhu et al.'s Adam baseline)
``sgd``                ``torch.optim.SGD``, lr 0.1 (Zhu et al. start SGD at 0.1)
``momentum``           SGD with momentum 0.9, lr 0.01: the effective step lr/(1 − μ) = 0.1 of ``sgd``
``nesterov-adaptive``  SGD ``nesterov=True`` with ρ_t = Γ(t) = 1 − 1/√t (R-SGD paper Eq. (7)), lr 0.01
``rsgd``               :class:`rlopt.optim.RSGD` with its paper schedules: Γ(t) = 1 − 1/√t and the
                       per-epoch decay :class:`rlopt.schedules.PaperLRDecay`; lr 0.01 (see below)
``cosine``             SGD 0.1 + ``torch.optim.lr_scheduler.CosineAnnealingLR`` over the run's steps
``plateau``            SGD 0.1 + ``torch.optim.lr_scheduler.ReduceLROnPlateau`` stepped every step
                       with the smoothed training loss; patience 100 steps, factor 0.5
``policy:PATH``        a ``.rlopt`` learned scheduler on the optimizer its metadata names
=====================  ============================================================================

Why lr 0.01 for the momentum methods and R-SGD on the 3-layer CNN (measured on real MNIST, 8000
training images, batch 32, one held-out seed, smoothed loss after 200/400/.../1000 steps):

- SGD + momentum 0.9 at lr 0.1 (effective step 1.0) stalls at a smoothed loss of 0.28; at lr 0.01 it
  tracks plain SGD at 0.1 (0.24, 0.16, 0.085, 0.082, 0.068).
- Nesterov with ρ_t = Γ(t) → 1 at lr 0.1 diverges to the chance loss (~1.0 after 400 steps); at
  0.01 it tracks SGD.
- R-SGD with Γ(t) = 1 − 1/√t has E[g̃_t] like momentum ρ_t = Γ(t), an effective step growing like
  lr·√t. At lr 0.1 the loss sits at chance (2.34) from step 400 on, at 0.03 it rises again after
  ~600 steps; at 0.01 it trains (0.27, 0.16, 0.099, ...) and over 2000 steps wanders between 0.06
  and 0.13. The paper's lr 0.8 is for its sigmoid MLP with quadratic error; its floor
  η_min = 0.02 is scaled by the same 0.01/0.8 (to 2.5e-4), else the floor would *raise* the rate.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau

from rlopt.control import check_optimizer_supports, ema_update
from rlopt.optim import RSGD
from rlopt.scheduler import LearnedScheduler, PolicyFileError, load_policy
from rlopt.schedules import PaperLRDecay, PowerReinforcement, make_momentum_sgd
from rlopt.training import OPTIMIZER_PRESETS, make_optimizer

__all__ = [
    "BASELINE_NAMES",
    "POLICY_PREFIX",
    "BaselineSettings",
    "Hook",
    "LossEMA",
    "Method",
    "RunContext",
    "baseline",
    "policy_method",
    "resolve_method",
]

#: called after every ``optimizer.step()`` with that step's mini-batch loss (its return is ignored)
Hook = Callable[[float], object]

#: the baselines ``evaluate.py`` runs by default, in table order
BASELINE_NAMES: tuple[str, ...] = ("adam", "sgd", "momentum", "nesterov-adaptive", "rsgd", "cosine", "plateau")

#: ``policy:PATH`` names a learned scheduler
POLICY_PREFIX = "policy:"


@dataclass(frozen=True)
class BaselineSettings:
    """Every number of the baseline methods (module docstring: why these values)."""

    adam_lr: float = 1e-3
    """Adam's step size (Zhu et al.'s Adam baseline; torch's default)."""
    sgd_lr: float = 0.1
    """learning rate of ``sgd``, ``cosine`` (its starting rate) and ``plateau`` (its starting rate)."""
    momentum: float = 0.9
    """heavy-ball momentum μ of ``momentum``."""
    momentum_lr: float = 0.01
    """lr of ``momentum``: lr/(1 − μ) = 0.1 matches ``sgd``'s step; lr 0.1 stalls (loss 0.28)."""
    nesterov_lr: float = 0.01
    """lr of ``nesterov-adaptive`` (ρ_t = Γ(t) → 1); lr 0.1 diverges on the CNN."""
    rsgd_lr: float = 0.01
    """R-SGD's η0 on the CNN; the paper's 0.8 is for its MLP, 0.1 and 0.03 diverge here."""
    rsgd_decay_beta: float = 0.999
    """β of the paper's per-epoch decay η_n = η_{n-1}·β^n (Algorithm 1)."""
    rsgd_min_lr: float = 2.5e-4
    """floor of that decay: the paper's η_min/η0 = 0.02/0.8 times ``rsgd_lr``."""
    cosine_eta_min: float = 0.0
    """the rate ``CosineAnnealingLR`` reaches at the last step (T_max = the run's steps)."""
    plateau_factor: float = 0.5
    """``ReduceLROnPlateau``: the lr is multiplied by this on a plateau."""
    plateau_patience: int = 100
    """``ReduceLROnPlateau``: steps (not epochs: it is stepped every step) without improvement."""
    plateau_threshold: float = 0.01
    """``ReduceLROnPlateau``: an improvement is a smoothed loss below (1 − this) × the best so far."""
    plateau_min_lr: float = 1e-3
    """``ReduceLROnPlateau``: lowest rate (the lower lr bound of Zhu et al. §4.1)."""
    plateau_smoothing: float = 0.9
    """EMA constant β of the loss ``ReduceLROnPlateau`` watches (the evaluation's threshold EMA)."""


@dataclass(frozen=True)
class RunContext:
    """What a method may know about the run it is built for."""

    steps: int
    """training steps of the run (``CosineAnnealingLR``'s T_max)."""
    steps_per_epoch: int
    """mini-batches per pass over the training images (``PaperLRDecay`` steps once per epoch)."""
    seed: int
    """the run's seed; seeds R-SGD's Bernoulli draws (the same for every method of a seed)."""


@dataclass(frozen=True)
class Method:
    """A named way to train: ``build(model, context)`` returns a fresh ``(optimizer, hook)``."""

    name: str
    """how tables, plots and files name it (``sgd``, ``policy:runs/x/policy.rlopt``)."""
    kind: Literal["baseline", "policy"]
    """baselines are what paired wins are counted against."""
    description: str
    """one line for results.json and the table's legend."""
    build: Callable[[nn.Module, RunContext], tuple[torch.optim.Optimizer, Hook]]
    """the factory, called once per run with a freshly initialised model."""


class LossEMA:
    """Exponential moving average s_t = β·s_{t−1} + (1 − β)·ℓ_t, started at s_1 = ℓ_1 (no bias)."""

    def __init__(self, beta: float) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"the EMA constant must be in [0, 1), got {beta}")
        self.beta = beta
        self.value: float | None = None

    def update(self, loss: float) -> float:
        """Add one loss and return the new average."""
        self.value = ema_update(self.value, loss, self.beta)
        return self.value


def _no_hook(loss: float) -> None:
    """Methods without a scheduler."""


def _adam(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> tuple[torch.optim.Optimizer, Hook]:
        return torch.optim.Adam(model.parameters(), lr=settings.adam_lr), _no_hook

    return Method("adam", "baseline", f"Adam lr {settings.adam_lr:g}", build)


def _sgd(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> tuple[torch.optim.Optimizer, Hook]:
        return torch.optim.SGD(model.parameters(), lr=settings.sgd_lr), _no_hook

    return Method("sgd", "baseline", f"SGD lr {settings.sgd_lr:g}", build)


def _momentum(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> tuple[torch.optim.Optimizer, Hook]:
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.momentum_lr, momentum=settings.momentum)
        return optimizer, _no_hook

    description = f"SGD lr {settings.momentum_lr:g}, momentum {settings.momentum:g}"
    return Method("momentum", "baseline", description, build)


def _nesterov_adaptive(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> tuple[torch.optim.Optimizer, Hook]:
        optimizer, schedule = make_momentum_sgd(
            model.parameters(), settings.nesterov_lr, PowerReinforcement(), nesterov=True
        )
        return optimizer, lambda loss: schedule.step()

    description = f"Nesterov SGD lr {settings.nesterov_lr:g}, ρ_t = Γ(t) = 1 − 1/√t"
    return Method("nesterov-adaptive", "baseline", description, build)


def _rsgd(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> tuple[torch.optim.Optimizer, Hook]:
        optimizer = RSGD(model.parameters(), lr=settings.rsgd_lr, reinforcement=PowerReinforcement(),
                         seed=context.seed)
        decay = PaperLRDecay(optimizer, beta=settings.rsgd_decay_beta, min_lr=settings.rsgd_min_lr)
        steps_done = 0

        def hook(loss: float) -> None:
            nonlocal steps_done
            steps_done += 1
            if steps_done % context.steps_per_epoch == 0:
                decay.step()

        return optimizer, hook

    description = (
        f"R-SGD lr {settings.rsgd_lr:g}, Γ(t) = 1 − 1/√t, per-epoch decay β={settings.rsgd_decay_beta:g}"
    )
    return Method("rsgd", "baseline", description, build)


def _cosine(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> tuple[torch.optim.Optimizer, Hook]:
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.sgd_lr)
        schedule = CosineAnnealingLR(optimizer, T_max=context.steps, eta_min=settings.cosine_eta_min)
        return optimizer, lambda loss: schedule.step()

    return Method("cosine", "baseline", f"SGD lr {settings.sgd_lr:g}, cosine annealing to "
                  f"{settings.cosine_eta_min:g} over the run", build)


def _plateau(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> tuple[torch.optim.Optimizer, Hook]:
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.sgd_lr)
        schedule = ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=settings.plateau_factor,
            patience=settings.plateau_patience,
            threshold=settings.plateau_threshold,
            threshold_mode="rel",
            min_lr=settings.plateau_min_lr,
        )
        smoothed = LossEMA(settings.plateau_smoothing)

        def hook(loss: float) -> None:
            if math.isfinite(loss):
                schedule.step(smoothed.update(loss))

        return optimizer, hook

    description = (
        f"SGD lr {settings.sgd_lr:g}, ReduceLROnPlateau ×{settings.plateau_factor:g} after "
        f"{settings.plateau_patience} steps without improvement of the smoothed loss"
    )
    return Method("plateau", "baseline", description, build)


_BASELINES: dict[str, Callable[[BaselineSettings], Method]] = {
    "adam": _adam,
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov-adaptive": _nesterov_adaptive,
    "rsgd": _rsgd,
    "cosine": _cosine,
    "plateau": _plateau,
}


def baseline(name: str, settings: BaselineSettings | None = None) -> Method:
    """The baseline called ``name`` (one of :data:`BASELINE_NAMES`)."""
    if name not in _BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINE_NAMES)}")
    return _BASELINES[name](settings or BaselineSettings())


def _policy_optimizer(path: Path, metadata: dict[str, Any]) -> tuple[str, float | None]:
    """The optimizer a policy was trained on (``train_config.optimizer``, default sgd) and its start lr.

    The start lr is ``env_config.lr_init`` when the policy recorded one, else the optimizer's preset
    (what the training environment started every episode from).
    """
    train_config = metadata.get("train_config") or {}
    env_config = metadata.get("env_config") or {}
    name = train_config.get("optimizer", "sgd") if isinstance(train_config, dict) else "sgd"
    if name not in OPTIMIZER_PRESETS:
        raise PolicyFileError(
            f"{path}: its metadata names optimizer {name!r}; this rlopt has {sorted(OPTIMIZER_PRESETS)}"
        )
    lr_init = env_config.get("lr_init") if isinstance(env_config, dict) else None
    return str(name), None if lr_init is None else float(lr_init)


def policy_method(path: str | Path) -> Method:
    """A learned scheduler read from ``path``, on the optimizer named in its metadata.

    The file is read and checked here, once, so a corrupt file or a policy whose action mode its
    optimizer cannot take (an ``rsgd`` policy whose metadata says ``sgd``) fails before any training
    with :class:`rlopt.scheduler.PolicyFileError`. The greedy Q-network has no state, so every run
    shares it; each run gets its own :class:`rlopt.LearnedScheduler` (observation history).
    """
    name = f"{POLICY_PREFIX}{os.fspath(path)}"  # the path as the user wrote it
    path = Path(path)
    q_network, observation, actions, metadata = load_policy(path)
    optimizer_name, lr_init = _policy_optimizer(path, metadata)
    probe = make_optimizer(optimizer_name, [torch.zeros(1, requires_grad=True)], lr_init)
    try:
        check_optimizer_supports(probe, actions.mode)
    except ValueError as exc:
        raise PolicyFileError(
            f"{path}: a {actions.mode!r} policy cannot drive {type(probe).__name__} (its metadata "
            f"says train_config.optimizer={optimizer_name!r}): {exc}"
        ) from exc

    def build(model: nn.Module, context: RunContext) -> tuple[torch.optim.Optimizer, Hook]:
        optimizer = make_optimizer(optimizer_name, model.parameters(), lr_init, seed=context.seed)
        scheduler = LearnedScheduler(optimizer, q_network, observation, actions, metadata=metadata)
        return optimizer, scheduler.step

    start = OPTIMIZER_PRESETS[optimizer_name].lr if lr_init is None else lr_init
    description = f"learned scheduler ({actions.mode} mode) on {optimizer_name} lr {start:g} from {path}"
    return Method(name, "policy", description, build)


def resolve_method(name: str, settings: BaselineSettings | None = None) -> Method:
    """A baseline by name, or ``policy:PATH``."""
    if name.startswith(POLICY_PREFIX):
        return policy_method(name[len(POLICY_PREFIX):])
    return baseline(name, settings)

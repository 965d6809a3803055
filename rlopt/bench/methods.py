"""The methods the benchmark compares: hand-set baselines and exported learned schedulers.

A :class:`Method` is a name and a ``build(model, context) -> (optimizer, hook)`` factory. The
benchmark builds a fresh optimizer for every run and calls ``hook(loss)`` after each
``optimizer.step()`` with that step's mini-batch loss; the hook is where a scheduler steps.

=====================  ============================================================================
name                   method (numbers from :class:`BaselineSettings`)
=====================  ============================================================================
``adam``               ``torch.optim.Adam``, lr 1e-3 (Zhu et al.'s Adam baseline)
``sgd``                ``torch.optim.SGD``, lr 0.1 (Zhu et al. start SGD at 0.1)
``momentum``           SGD with momentum 0.9, lr 0.01: the effective step lr/(1 − μ) = 0.1 of ``sgd``
``nesterov-adaptive``  SGD ``nesterov=True`` with ρ_t = Γ(t) = 1 − 1/√t (R-SGD paper Eq. (7)), lr 0.01
``rsgd``               :class:`rlopt.optim.RSGD` with its paper schedules: Γ(t) = 1 − 1/√t and the
                       per-epoch decay :class:`rlopt.schedules.PaperLRDecay`; lr 0.01
``cosine``             SGD 0.1 + ``torch.optim.lr_scheduler.CosineAnnealingLR`` over the run's steps
``plateau``            SGD 0.1 + ``torch.optim.lr_scheduler.ReduceLROnPlateau`` stepped every step
                       with the smoothed training loss; patience 100 steps, factor 0.5
``policy:PATH``        a ``.rlopt`` learned scheduler (:class:`rlopt.LearnedScheduler`) on the
                       optimizer and starting rate the policy file declares
=====================  ============================================================================

Why lr 0.01 for the momentum methods and R-SGD on the CNN: see ``docs/benchmarks.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau

from rlopt.control import ObservationSpec, ema_update
from rlopt.optim import RSGD
from rlopt.scheduler import LearnedScheduler, PolicyFileError, load_policy
from rlopt.schedules import PaperLRDecay, PowerReinforcement, make_momentum_sgd
from rlopt.training import make_optimizer

__all__ = [
    "BASELINE_NAMES",
    "POLICY_PREFIX",
    "BaselineName",
    "BaselineSettings",
    "Hook",
    "Method",
    "RunContext",
    "baseline",
    "parse_baseline_names",
    "policy_method",
    "resolve_method",
]

#: called after every ``optimizer.step()`` with that step's mini-batch loss (its return is ignored)
Hook = Callable[[float], object]

#: the baselines, in table order
BaselineName = Literal["adam", "sgd", "momentum", "nesterov-adaptive", "rsgd", "cosine", "plateau"]
#: every baseline; the benchmark runs all of them by default
BASELINE_NAMES: tuple[BaselineName, ...] = get_args(BaselineName)

#: ``policy:PATH`` names a learned scheduler
POLICY_PREFIX = "policy:"

#: the word that selects no baseline in :func:`parse_baseline_names`
NO_BASELINES = "none"


@dataclass(frozen=True)
class BaselineSettings:
    """Every number of the baseline methods (docs/benchmarks.md: why these values)."""

    adam_lr: float = 1e-3
    """Adam's step size (Zhu et al.'s Adam baseline; torch's default)."""
    sgd_lr: float = 0.1
    """learning rate of sgd, cosine (its starting rate) and plateau (its starting rate)."""
    momentum: float = 0.9
    """heavy-ball momentum μ of momentum."""
    momentum_lr: float = 0.01
    """lr of momentum: lr/(1 − μ) = 0.1 matches sgd's effective step."""
    nesterov_lr: float = 0.01
    """lr of nesterov-adaptive (ρ_t = Γ(t) → 1, so the effective step keeps growing)."""
    rsgd_lr: float = 0.01
    """R-SGD's η0 on the CNN; the paper's 0.8 is for its sigmoid MLP with quadratic error."""
    rsgd_decay_beta: float = 0.999
    """β of the paper's per-epoch decay η_n = η_{n-1}·β^n (Algorithm 1)."""
    rsgd_min_lr: float = 2.5e-4
    """floor of that decay: the paper's η_min/η0 = 0.02/0.8 times rsgd_lr."""
    cosine_eta_min: float = 0.0
    """the rate CosineAnnealingLR reaches at the last step (T_max = the run's steps)."""
    plateau_factor: float = 0.5
    """ReduceLROnPlateau: the lr is multiplied by this on a plateau."""
    plateau_patience: int = 100
    """ReduceLROnPlateau: steps (not epochs: it is stepped every step) without improvement."""
    plateau_threshold: float = 0.01
    """ReduceLROnPlateau: an improvement is a smoothed loss below (1 − this) × the best so far."""
    plateau_min_lr: float = 1e-3
    """ReduceLROnPlateau: lowest rate (the lower lr bound of Zhu et al. §4.1)."""
    plateau_smoothing: float = ObservationSpec.loss_smoothing
    """EMA constant β of the loss ReduceLROnPlateau watches (the controller's loss smoothing)."""

    def __post_init__(self) -> None:
        rates = ("adam_lr", "sgd_lr", "momentum_lr", "nesterov_lr", "rsgd_lr")
        for name in rates:
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a positive finite rate, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.rsgd_decay_beta <= 1 or self.rsgd_min_lr < 0 or self.cosine_eta_min < 0:
            raise ValueError("rsgd_decay_beta must be in (0, 1], rsgd_min_lr and cosine_eta_min >= 0")
        if not 0 < self.plateau_factor < 1 or self.plateau_patience < 0 or self.plateau_threshold < 0:
            raise ValueError("plateau_factor must be in (0, 1), plateau_patience and plateau_threshold >= 0")
        if self.plateau_min_lr < 0 or not 0 <= self.plateau_smoothing < 1:
            raise ValueError("plateau_min_lr must be >= 0 and plateau_smoothing in [0, 1)")


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
        smoothed: float | None = None

        def hook(loss: float) -> None:
            nonlocal smoothed
            if math.isfinite(loss):
                smoothed = ema_update(smoothed, loss, settings.plateau_smoothing)
                schedule.step(smoothed)

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
assert tuple(_BASELINES) == BASELINE_NAMES


def _unknown_baseline(name: str) -> ValueError:
    return ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINE_NAMES)}")


def parse_baseline_names(values: Sequence[str]) -> tuple[BaselineName, ...]:
    """Baseline names from command-line words: each word may list several, comma-separated;
    ``none`` (alone) selects no baseline. Unknown names raise ``ValueError``."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    chosen: list[BaselineName] = []
    for name in names:
        if name == NO_BASELINES:
            continue
        if name not in _BASELINES:
            raise _unknown_baseline(name)
        chosen.append(name)  # type: ignore[arg-type]  # checked just above
    return tuple(chosen)


def baseline(name: str, settings: BaselineSettings | None = None) -> Method:
    """The baseline called ``name`` (one of :data:`BASELINE_NAMES`)."""
    if name not in _BASELINES:
        raise _unknown_baseline(name)
    return _BASELINES[name](settings or BaselineSettings())


def policy_method(path: str | os.PathLike[str]) -> Method:
    """A learned scheduler read from ``path``, on the optimizer and starting rate its file declares.

    The file is read and checked here, once: a corrupt file, or a policy whose actions its declared
    optimizer cannot take (an ``rsgd`` policy declared for ``sgd``), fails before any training with
    :class:`rlopt.scheduler.PolicyFileError`. The loaded policy has no per-run state, so every run
    shares it; each run gets its own :class:`rlopt.LearnedScheduler` (observation history).
    """
    name = f"{POLICY_PREFIX}{os.fspath(path)}"  # the path as the user wrote it
    path = Path(path)
    policy = load_policy(path)
    probe = make_optimizer(policy.optimizer, [torch.zeros(1, requires_grad=True)], policy.initial_lr)
    try:
        LearnedScheduler(probe, policy)
    except ValueError as exc:
        message = " ".join(str(exc).split())
        raise PolicyFileError(
            f"{path}: a {policy.actions.mode!r} policy cannot drive {type(probe).__name__} (the optimizer "
            f"the file declares, {policy.optimizer!r}, at lr {policy.initial_lr:g}): {message}"
        ) from exc

    def build(model: nn.Module, context: RunContext) -> tuple[torch.optim.Optimizer, Hook]:
        optimizer = make_optimizer(policy.optimizer, model.parameters(), policy.initial_lr, seed=context.seed)
        return optimizer, LearnedScheduler(optimizer, policy).step

    description = (
        f"learned scheduler ({policy.actions.mode} mode) on {policy.optimizer} lr {policy.initial_lr:g} from {path}"
    )
    return Method(name, "policy", description, build)


def resolve_method(name: str, settings: BaselineSettings | None = None) -> Method:
    """A baseline by name, or ``policy:PATH``."""
    if name.startswith(POLICY_PREFIX):
        return policy_method(name[len(POLICY_PREFIX):])
    return baseline(name, settings)

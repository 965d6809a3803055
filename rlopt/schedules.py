r"""Hyperparameter schedules: reinforcement probability Γ(t), momentum μ_t, learning-rate decay.

Two kinds of object live here.

*Schedules* are small frozen dataclasses, callable with the 1-based update index ``t`` (the t-th
optimizer update) and returning a float in ``[0, 1]``:

- :class:`ConstantReinforcement`, :class:`ExpReinforcement`, :class:`PowerReinforcement` — the
  reinforcement probability Γ(t) of R-SGD (Huang & Toyoizumi, Eq. (8) and Sec. V B);
- :class:`SutskeverMomentum` — the momentum schedule of Sutskever et al. (2013), Eq. (5).

Any of them can be the ``reinforcement`` of :class:`rlopt.optim.RSGD` or the ``schedule`` of
:class:`MomentumSchedule`; :func:`schedule_to_dict` / :func:`schedule_from_dict` turn them into
plain dicts that ``torch.load(..., weights_only=True)`` accepts.

*Schedulers* drive a torch optimizer in the ``torch.optim.lr_scheduler`` sense (``step()``,
``state_dict()`` without the optimizer, ``load_state_dict()``):

- :class:`PaperLRDecay` — the R-SGD paper's per-epoch learning-rate decay with a floor;
- :class:`MomentumSchedule` — writes ``group["momentum"]`` before every update, for SGD with
  adaptive momentum ρ_t = Γ(t) (Eq. (6)) and Nesterov's method with ρ_t = Γ(t) (Eq. (7)).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "ConstantReinforcement",
    "ExpReinforcement",
    "MomentumSchedule",
    "PaperLRDecay",
    "PowerReinforcement",
    "ReinforcementSchedule",
    "SutskeverMomentum",
    "make_momentum_sgd",
    "schedule_from_dict",
    "schedule_to_dict",
]


@runtime_checkable
class ReinforcementSchedule(Protocol):
    """Anything callable with the 1-based update index ``t`` that returns a probability in [0, 1]."""

    def __call__(self, t: int, /) -> float: ...


def _check_update_index(t: int) -> None:
    if t < 1:
        raise ValueError(f"the update index t is 1-based, got t={t}")


@dataclasses.dataclass(frozen=True)
class ConstantReinforcement:
    """Γ(t) = ``prob`` for every update t.

    ``ConstantReinforcement(0.0)`` is plain SGD; ``ConstantReinforcement(1.0)`` sums all gradients.
    """

    prob: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {self.prob}")

    def __call__(self, t: int) -> float:
        _check_update_index(t)
        return float(self.prob)


@dataclasses.dataclass(frozen=True)
class ExpReinforcement:
    r"""Γ(t) = 1 - γ^t with γ = γ0·exp(-λ·t_ep), the R-SGD paper's first schedule (Sec. III, Alg. 1).

    ``t_ep = (t - 1) // steps_per_epoch`` is the 0-based epoch index, so γ = γ0 throughout the first
    epoch and γ0·e^{-λ} in the second, as Algorithm 1 updates γ at the end of each epoch. The paper's
    Algorithm 1 counts t from 0 (Γ = 0 on its first update); here t is 1-based, so the first update
    already uses Γ(1) = 1 - γ0. With (γ0, λ) = (1, 0) one recovers vanilla SGD.

    Args:
        gamma0: γ0 in (0, 1]; the paper uses 0.9995 (Sec. V A).
        lam: λ >= 0; the paper uses 1e-4.
        steps_per_epoch: updates per epoch, M/B in the paper (>= 1).
    """

    gamma0: float = 0.9995
    lam: float = 1e-4
    steps_per_epoch: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.gamma0 <= 1.0:
            raise ValueError(f"gamma0 must be in (0, 1], got {self.gamma0}")
        if not self.lam >= 0.0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")

    def __call__(self, t: int) -> float:
        _check_update_index(t)
        epoch = (t - 1) // self.steps_per_epoch
        gamma = self.gamma0 * math.exp(-self.lam * epoch)
        return 1.0 - gamma**t


@dataclasses.dataclass(frozen=True)
class PowerReinforcement:
    r"""Γ(t) = 1 - a0 / t^{b0}, clamped to [0, 1] (R-SGD paper, Sec. III and V B).

    The defaults give the paper's MNIST schedule Γ(t) = 1 - 1/√t, with Γ(1) = 0, Γ(4) = 0.5 and
    Γ(100) = 0.9.

    Args:
        a0: a0 >= 0 (default 1.0).
        b0: b0 >= 0 (default 0.5).
    """

    a0: float = 1.0
    b0: float = 0.5

    def __post_init__(self) -> None:
        if not self.a0 >= 0.0:
            raise ValueError(f"a0 must be >= 0, got {self.a0}")
        if not self.b0 >= 0.0:
            raise ValueError(f"b0 must be >= 0, got {self.b0}")

    def __call__(self, t: int) -> float:
        _check_update_index(t)
        return min(1.0, max(0.0, 1.0 - self.a0 / float(t) ** self.b0))


@dataclasses.dataclass(frozen=True)
class SutskeverMomentum:
    r"""μ_t = min(1 - 2^{-1-\log_2(⌊t/250⌋+1)}, μ_max), Eq. (5) of Sutskever et al. (2013).

    Since 2^{-1-\log_2 k} = 1/(2k) this is computed exactly as ``min(1 - 1/(2k), mu_max)`` with
    ``k = t // interval + 1``: μ = 0.5 for t < 250, 0.75 for 250 <= t < 500, 5/6 for 500 <= t < 750...
    Used as the ``schedule`` of :class:`MomentumSchedule` it receives the 1-based update index; the
    paper's t presumably counts from 0, a shift of one update.

    Args:
        mu_max: the cap μ_max in [0, 1); the paper tries 0.9, 0.99, 0.995 and 0.999.
        interval: the 250 of Eq. (5), updates between momentum increases (>= 1).
    """

    mu_max: float = 0.99
    interval: int = 250

    def __post_init__(self) -> None:
        if not 0.0 <= self.mu_max < 1.0:
            raise ValueError(f"mu_max must be in [0, 1), got {self.mu_max}")
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")

    def __call__(self, t: int) -> float:
        if t < 0:
            raise ValueError(f"t must be >= 0, got {t}")
        k = t // self.interval + 1
        return min(1.0 - 1.0 / (2 * k), self.mu_max)


_SCHEDULE_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (ConstantReinforcement, ExpReinforcement, PowerReinforcement, SutskeverMomentum)
}


def schedule_to_dict(schedule: Callable[[int], float]) -> dict[str, Any] | None:
    """A weights-only friendly dict ``{"type": name, **fields}`` for a schedule of this module.

    Returns ``None`` for any other callable (a lambda, a user class), which cannot be rebuilt.
    """
    name = type(schedule).__name__
    if _SCHEDULE_TYPES.get(name) is not type(schedule):
        return None
    return {"type": name, **dataclasses.asdict(schedule)}  # type: ignore[call-overload]


def schedule_from_dict(data: dict[str, Any]) -> Callable[[int], float]:
    """Rebuild a schedule from :func:`schedule_to_dict`'s output."""
    fields = dict(data)
    name = fields.pop("type", None)
    if name not in _SCHEDULE_TYPES:
        raise ValueError(f"unknown schedule type {name!r}; known: {sorted(_SCHEDULE_TYPES)}")
    schedule: Callable[[int], float] = _SCHEDULE_TYPES[name](**fields)
    return schedule


class PaperLRDecay(LRScheduler):
    r"""The R-SGD paper's learning-rate decay η_{t_ep} = η_{t_ep-1}·β^{t_ep}, floored at ``min_lr``.

    Step it once per EPOCH, after the epoch's optimizer updates. After n epoch steps

    .. math::
        η_n = \max(η_{min},\ η_{n-1} β^{n}) = \max(η_{min},\ η_0 β^{n(n+1)/2})

    so the rates are η0, η0β, η0β³, η0β⁶, ... The paper (Sec. III, Algorithm 1) uses η0 = 0.8,
    β = 0.999 and η_min = 0.02. Like torch's chainable schedulers, :meth:`step` multiplies the
    group's *current* ``lr`` (so a controller's change to ``lr`` persists), while
    ``step(epoch)`` uses the closed form from the starting rate. The floor is applied as in the
    paper: a group whose rate starts below ``min_lr`` is raised to ``min_lr`` at the first step.

    Args:
        optimizer: the wrapped optimizer.
        beta: β in (0, 1] (default 0.999).
        min_lr: the floor η_min >= 0 (default 0.02).
        last_epoch: as in :class:`torch.optim.lr_scheduler.LRScheduler` (default -1).

    Example::

        opt = RSGD(model.parameters(), lr=0.8)
        decay = PaperLRDecay(opt)  # beta=0.999, min_lr=0.02 as in the paper
        for epoch in range(100):
            train_one_epoch(model, opt)
            decay.step()
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        beta: float = 0.999,
        min_lr: float = 0.02,
        last_epoch: int = -1,
    ) -> None:
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        if not min_lr >= 0.0:
            raise ValueError(f"min_lr must be >= 0, got {min_lr}")
        self.beta = beta
        self.min_lr = min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | torch.Tensor]:
        """η_n = max(min_lr, η_{n-1}·β^n) from each group's current ``lr`` (n = ``last_epoch``)."""
        if self.last_epoch == 0:
            return [group["lr"] for group in self.optimizer.param_groups]
        factor = self.beta**self.last_epoch
        return [max(self.min_lr, group["lr"] * factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float | torch.Tensor]:
        """η_n = max(min_lr, η_0·β^{n(n+1)/2})."""
        n = self.last_epoch
        factor = self.beta ** (n * (n + 1) // 2)
        return [max(self.min_lr, base_lr * factor) for base_lr in self.base_lrs]


class MomentumSchedule:
    r"""Sets every param group's ``momentum`` to ρ_t = ``schedule(t)`` before the t-th update.

    Protocol (the same as torch's LR schedulers): construction sets ρ_1 for the first update; call
    :meth:`step` once per update, AFTER ``optimizer.step()``, and it sets ρ_{t+1} for the next one.
    With ``schedule=PowerReinforcement()`` this is the R-SGD paper's "SGDM with adaptive momentum
    ρ_t = Γ(t)" (Eq. (6)); over ``torch.optim.SGD(..., nesterov=True)`` it is "NAG with
    ρ_t = Γ(t)" in torch's reformulation of Eq. (7); with :class:`SutskeverMomentum` it is
    Eq. (5) of Sutskever et al.

    ρ_t = 0 and torch's SGD: torch keeps no momentum buffer for a step taken with momentum 0 (and,
    when the momentum becomes non-zero, would start the buffer from the current gradient alone,
    dropping ρ_t·ν_{t-1} of Eq. (6a)). For a ``torch.optim.SGD`` optimizer this class therefore
    registers a step pre-hook that, before a step taken with momentum 0, stores that step's
    gradient (after weight decay and ``maximize``, as torch computes it) as the momentum buffer, so
    that ν_t = g_t and the next step with ρ_{t+1} > 0 gives ν_{t+1} = ρ_{t+1} g_t + g_{t+1} exactly.
    torch's ``nesterov=True`` requires momentum > 0 at construction only (see
    :func:`make_momentum_sgd`); a scheduled ρ_1 = 0 is fine afterwards.

    Args:
        optimizer: an optimizer whose param groups have a ``momentum`` key (e.g. torch SGD).
        schedule: a callable of the 1-based update index returning ρ_t in [0, 1].
        last_step: updates already taken (default 0, a fresh run).

    Example::

        opt, sched = make_momentum_sgd(model.parameters(), 0.1, PowerReinforcement(), nesterov=True)
        for x, y in batches:
            opt.zero_grad(); lossf(model(x), y).backward(); opt.step()
            sched.step()
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Callable[[int], float],
        last_step: int = 0,
    ) -> None:
        for i, group in enumerate(optimizer.param_groups):
            if "momentum" not in group:
                raise ValueError(f"param group {i} of {type(optimizer).__name__} has no 'momentum'")
        if last_step < 0:
            raise ValueError(f"last_step must be >= 0, got {last_step}")
        self.optimizer = optimizer
        self.schedule = schedule
        self.last_step = last_step
        self._last_momentum: list[float] = []
        self._hook = (
            optimizer.register_step_pre_hook(_seed_momentum_buffers)
            if isinstance(optimizer, torch.optim.SGD)
            else None
        )
        self._set_momentum(self.last_step + 1)

    def _set_momentum(self, t: int) -> None:
        rho = float(self.schedule(t))
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"momentum schedule returned {rho} at t={t}; expected a value in [0, 1]")
        for group in self.optimizer.param_groups:
            group["momentum"] = rho
        self._last_momentum = [rho] * len(self.optimizer.param_groups)

    def step(self) -> None:
        """Record one update and set ρ_{t+1} for the next one; call after ``optimizer.step()``."""
        self.last_step += 1
        self._set_momentum(self.last_step + 1)

    def get_last_momentum(self) -> list[float]:
        """The momentum this scheduler last wrote into each param group (ρ of the next update)."""
        return list(self._last_momentum)

    def state_dict(self) -> dict[str, Any]:
        """``last_step``, the last momenta and the schedule as a dict (None if not rebuildable)."""
        return {
            "last_step": self.last_step,
            "last_momentum": list(self._last_momentum),
            "schedule": schedule_to_dict(self.schedule),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a schedule saved as None keeps the current one (like LambdaLR).

        The optimizer's ``momentum`` values come back with the optimizer's own ``load_state_dict``.
        """
        self.last_step = int(state_dict["last_step"])
        self._last_momentum = [float(m) for m in state_dict["last_momentum"]]
        if state_dict.get("schedule") is not None:
            self.schedule = schedule_from_dict(state_dict["schedule"])


def _seed_momentum_buffers(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Step pre-hook: before a torch-SGD step with momentum 0, store ν_t = g_t as the buffer."""
    with torch.no_grad():
        for group in optimizer.param_groups:
            if group["momentum"] != 0:
                continue
            for p in group["params"]:
                if p.grad is None or p.grad.is_sparse:
                    continue
                grad = p.grad if not group["maximize"] else -p.grad
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = optimizer.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    state["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    # torch's recurrence buf = ρ·buf + (1 - dampening)·g with ρ = 0
                    buf.copy_(grad).mul_(1 - group["dampening"])


def make_momentum_sgd(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    lr: float,
    schedule: Callable[[int], float],
    *,
    nesterov: bool,
    weight_decay: float = 0.0,
) -> tuple[torch.optim.SGD, MomentumSchedule]:
    """``torch.optim.SGD`` with momentum ρ_t = ``schedule(t)`` and its :class:`MomentumSchedule`.

    Builds SGD with a placeholder momentum of 0.5 (torch requires momentum > 0 for Nesterov at
    construction) that the scheduler immediately replaces with ρ_1. Call ``sched.step()`` after
    every ``opt.step()``.
    """
    opt = torch.optim.SGD(params, lr=lr, momentum=0.5, nesterov=nesterov, weight_decay=weight_decay)
    return opt, MomentumSchedule(opt, schedule)

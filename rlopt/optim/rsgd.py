r"""Reinforced stochastic gradient descent (R-SGD), Huang & Toyoizumi, Eq. (8) and Algorithm 1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

import torch
from torch.optim.optimizer import ParamsT

from rlopt.optim._rng import SeededOptimizer
from rlopt.schedules import PowerReinforcement, ReinforcementSchedule, schedule_from_dict, schedule_to_dict

__all__ = ["RSGD"]

Reinforcement = float | ReinforcementSchedule


def _check_prob(prob: float, what: str) -> float:
    if not 0.0 <= prob <= 1.0:  # also rejects NaN
        raise ValueError(f"{what} must be in [0, 1], got {prob}")
    return prob


def _gamma(reinforcement: Reinforcement, t: int) -> float:
    """Γ(t) for a constant or a schedule, validated to lie in [0, 1]."""
    if isinstance(reinforcement, int | float):
        return _check_prob(float(reinforcement), "reinforcement")
    return _check_prob(float(reinforcement(t)), f"reinforcement schedule at t={t}")


class RSGD(SeededOptimizer):
    r"""Reinforced SGD: each gradient component is reinforced by the accumulated previous ones.

    Eq. (8) of Huang & Toyoizumi, applied to every component i independently, then the SGD step:

    .. math::
        (\tilde g_t)_i =
        \begin{cases}
            (g_t)_i + (\tilde g_{t-1})_i & \text{with probability } \Gamma(t), \\
            (g_t)_i & \text{with probability } 1 - \Gamma(t),
        \end{cases}
        \qquad \theta_t = \theta_{t-1} - \eta\, \tilde g_t,

    with :math:`g_t = \nabla_\theta L(\theta_{t-1}) + \lambda \theta_{t-1}` (weight decay λ, as in
    torch's SGD), :math:`\tilde g_0 = 0` and t the 1-based update index. On average
    :math:`\mathbb{E}[\tilde g_t \mid \tilde g_{t-1}] = g_t + \Gamma(t)\, \tilde g_{t-1}`, SGD with
    momentum ρ_t = Γ(t) (Eq. (6)). One buffer per parameter, so the memory of momentum SGD.

    Args:
        params: iterable of parameters or param-group dicts.
        lr: learning rate η >= 0 (default 0.8, the paper's η0).
        reinforcement: Γ: a probability in [0, 1], or a schedule called with the update index t
            (default :class:`~rlopt.schedules.PowerReinforcement`, Γ(t) = 1 - 1/√t, the paper's
            MNIST choice; :class:`~rlopt.schedules.ExpReinforcement` is its Γ(t) = 1 - γ^t).
        weight_decay: L2 penalty λ >= 0 (default 0).
        seed: seed of the Bernoulli draws (default None: derived from :func:`torch.initial_seed`,
            so ``torch.manual_seed(s)`` before construction makes runs reproducible).
        maximize: maximize the objective instead of minimizing it (default False).

    Param-group keys and run-time control. ``step()`` re-reads every group on each call, as torch
    does for ``lr``:

    - ``lr``, ``weight_decay``, ``maximize``: as in :class:`torch.optim.SGD`.
    - ``reinforcement``: Γ, the reinforcement probability — the float or schedule given. **A
      controller overrides Γ by writing a float into** ``group["reinforcement"]``; the next step
      uses it (and keeps using it until the entry is changed again; writing a schedule back resumes
      the schedule at the current update index). :meth:`reinforcement` gives the Γ the next step
      will use, whichever of the two the group holds.

    Per-parameter state: ``state[p]["reinforced_grad"]`` (:math:`\tilde g_t`) and ``state[p]["step"]``
    (an ``int``, the update index t of the last update of ``p``).

    Randomness comes from a private :class:`torch.Generator` per device (on the parameters' device,
    so CUDA parameters draw on the GPU). ``state_dict()`` holds the generator states and step
    counts, so ``load_state_dict()`` continues the identical random stream; schedules of
    :mod:`rlopt.schedules` are stored as plain dicts, so ``torch.load(..., weights_only=True)``
    reads the result. Any other callable ``reinforcement`` is saved as ``None`` and, on load, the
    loading optimizer's own ``reinforcement`` is kept (as ``LambdaLR`` does with lambdas).

    Differences from the paper:

    - Algorithm 1 starts its update counter at t = 0; here t = 1 on the first update, so with
      ``ExpReinforcement`` the first update uses Γ(1) = 1 - γ0 rather than Γ(0) = 0. (With the
      default power schedule, Γ(1) = 0 and t = 0 would divide by zero.)
    - The learning-rate decay of Algorithm 1 is not built in: use
      :class:`~rlopt.schedules.PaperLRDecay` (stepped once per epoch).
    - Weight decay and ``maximize`` are additions, applied to g_t before Eq. (8) as torch's SGD does.
    - Where Γ(t) is 0 or 1 no random numbers are drawn (the outcome is certain); with Γ ≡ 0 the
      parameters equal those of ``torch.optim.SGD(lr, weight_decay=...)`` bit for bit.

    Example:
        >>> model = torch.nn.Linear(784, 10)
        >>> opt = RSGD(model.parameters(), lr=0.8, seed=0)
        >>> x, y = torch.randn(32, 784), torch.randint(10, (32,))
        >>> opt.zero_grad()
        >>> torch.nn.functional.cross_entropy(model(x), y).backward()
        >>> opt.step()
        >>> opt.param_groups[0]["reinforcement"] = 0.3  # a controller sets Γ for the next steps
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.8,
        reinforcement: Reinforcement = PowerReinforcement(),  # noqa: B008 (frozen, immutable)
        *,
        weight_decay: float = 0.0,
        seed: int | None = None,
        maximize: bool = False,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "reinforcement": reinforcement,
            "weight_decay": weight_decay,
            "maximize": maximize,
        }
        super().__init__(params, defaults, seed)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group, validated (Γ of its first update must lie in [0, 1])."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            if not group["lr"] >= 0.0:
                raise ValueError(f"Invalid learning rate: {group['lr']}")
            if not group["weight_decay"] >= 0.0:
                raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
            reinforcement = group["reinforcement"]
            if not isinstance(reinforcement, int | float) and not callable(reinforcement):
                raise TypeError(f"reinforcement must be a float or a schedule, got {type(reinforcement)}")
            _gamma(reinforcement, self._next_step(group))
        except (TypeError, ValueError):
            self.param_groups.pop()  # leave the optimizer as it was
            raise

    def _next_step(self, group: dict[str, Any]) -> int:
        return 1 + max((self.state[p].get("step", 0) for p in group["params"]), default=0)

    def reinforcement(self, group_index: int = 0) -> float:
        """Γ that the next :meth:`step` will use for ``param_groups[group_index]``: the group's
        ``reinforcement``, evaluated at the next update index when it is a schedule."""
        group = self.param_groups[group_index]
        return _gamma(group["reinforcement"], self._next_step(group))

    def _encode_group(self, group: dict[str, Any]) -> dict[str, Any]:
        reinforcement = group["reinforcement"]
        if not isinstance(reinforcement, int | float):
            group["reinforcement"] = schedule_to_dict(reinforcement)
        return group

    def _decode_group(self, saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
        reinforcement = saved.get("reinforcement")
        if reinforcement is None:
            saved["reinforcement"] = current["reinforcement"]
        elif isinstance(reinforcement, dict):
            saved["reinforcement"] = schedule_from_dict(reinforcement)
        return saved

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one R-SGD update, Eq. (8) then θ ← θ - η g̃.

        Args:
            closure: optional; re-evaluates the model and returns the loss.

        Raises:
            ValueError: if Γ (the group's float or its schedule's value) lies outside [0, 1].
            RuntimeError: on sparse gradients.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # Γ for every (group, update index) first, so a bad value raises before any parameter moves.
        probs: list[dict[int, float]] = []
        for group in self.param_groups:
            group_probs: dict[int, float] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("RSGD does not support sparse gradients")
                t = self.state[p].get("step", 0) + 1
                if t not in group_probs:
                    group_probs[t] = _gamma(group["reinforcement"], t)
            probs.append(group_probs)

        for group, group_probs in zip(self.param_groups, probs, strict=True):
            if not group_probs:
                continue
            lr: float = group["lr"]
            weight_decay: float = group["weight_decay"]
            maximize: bool = group["maximize"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if not maximize else -p.grad
                if weight_decay != 0:
                    grad = grad.add(p, alpha=weight_decay)

                state = self.state[p]
                t = state.get("step", 0) + 1
                state["step"] = t
                prob = group_probs[t]
                buf = state.get("reinforced_grad")
                if buf is None:
                    # g̃_0 = 0: the first update is an SGD step whatever Γ(1) is.
                    state["reinforced_grad"] = buf = torch.clone(grad).detach()
                elif prob == 0.0:
                    buf.copy_(grad)
                elif prob == 1.0:
                    buf.add_(grad)
                else:
                    # Eq. (8): keep g̃_{t-1} where u < Γ. The mask is made in place as 0./1. floats:
                    # a float multiply is ~10x faster on CPU than masked_fill_ or a bool multiply.
                    keep = torch.rand(
                        p.shape, generator=self._generator(p.device), device=p.device, dtype=torch.float32
                    ).lt_(prob)
                    buf.mul_(keep).add_(grad)
                p.add_(buf, alpha=-lr)

        return loss

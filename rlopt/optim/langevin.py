r"""SGD with annealed Langevin noise (SGDL), Zhang et al., Eq. (5)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

import torch
from torch.optim.optimizer import ParamsT

from rlopt.optim._rng import SeededOptimizer

__all__ = ["LangevinSGD"]


class LangevinSGD(SeededOptimizer):
    r"""SGD plus Gaussian noise that is added to the parameters and fades away.

    Eq. (5) of Zhang et al. ("Theory of deep learning III"), with t the 1-based update index:

    .. math::
        \theta_{t} = \theta_{t-1} - \eta\, g_t + \gamma'_t W_t, \qquad
        W_t \sim \mathcal{N}(0, I), \qquad \gamma'_t = \frac{s}{t^{d}},

    where :math:`g_t = \nabla_\theta L(\theta_{t-1}) + \lambda \theta_{t-1}` (weight decay λ, as in
    torch's SGD), s is ``noise_scale`` and d is ``noise_decay``. The paper only requires
    :math:`\gamma'_t \to 0`; the power law and its exponent 0.55 are borrowed from the annealed
    gradient noise of Neelakantan et al. (2015, arXiv:1511.06807), who add
    :math:`\mathcal{N}(0, \sigma_t^2)`, :math:`\sigma_t^2 = \eta_N / (1+t)^{0.55}`, to the gradient
    *before* the learning rate multiplies it. Their schedule is, up to t vs 1+t,
    ``noise_scale = lr * sqrt(eta_N)`` with ``noise_decay = 0.275`` here (their exponent is on the
    variance, ours on the standard deviation).

    Args:
        params: iterable of parameters or param-group dicts.
        lr: learning rate η >= 0.
        noise_scale: s >= 0, the noise standard deviation of the first update (default 1e-3);
            0 gives plain SGD, bit for bit, and draws nothing.
        noise_decay: d >= 0, the decay exponent (default 0.55).
        weight_decay: L2 penalty λ >= 0 (default 0).
        seed: seed of the Gaussian draws (default None: derived from :func:`torch.initial_seed`).

    Param-group keys ``lr``, ``noise_scale``, ``noise_decay``, ``weight_decay`` are re-read at every
    step. Per-parameter state: ``state[p]["step"]`` (int). ``state_dict()`` carries the generator
    states, so a loaded optimizer continues the identical noise stream.

    Example:
        >>> model = torch.nn.Linear(784, 10)
        >>> opt = LangevinSGD(model.parameters(), lr=0.1, noise_scale=1e-3, seed=0)
        >>> x, y = torch.randn(32, 784), torch.randint(10, (32,))
        >>> opt.zero_grad()
        >>> torch.nn.functional.cross_entropy(model(x), y).backward()
        >>> opt.step()
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        noise_scale: float = 1e-3,
        noise_decay: float = 0.55,
        *,
        weight_decay: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not noise_scale >= 0.0:
            raise ValueError(f"Invalid noise_scale: {noise_scale}")
        if not noise_decay >= 0.0:
            raise ValueError(f"Invalid noise_decay: {noise_decay}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults: dict[str, Any] = {
            "lr": lr,
            "noise_scale": noise_scale,
            "noise_decay": noise_decay,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults, seed)

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one update of Eq. (5): θ ← θ - η g + γ'_t W.

        Args:
            closure: optional; re-evaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr: float = group["lr"]
            weight_decay: float = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LangevinSGD does not support sparse gradients")
                grad = p.grad
                if weight_decay != 0:
                    grad = grad.add(p, alpha=weight_decay)
                state = self.state[p]
                t = state.get("step", 0) + 1
                state["step"] = t
                p.add_(grad, alpha=-lr)
                noise_std = group["noise_scale"] / t ** group["noise_decay"]
                if noise_std != 0:
                    noise = torch.randn(
                        p.shape, generator=self._generator(p.device), device=p.device, dtype=p.dtype
                    )
                    p.add_(noise, alpha=noise_std)

        return loss

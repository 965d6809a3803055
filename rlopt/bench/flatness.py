"""The flatness radius of Zhang et al. (2018), Eq. (11), of a trained solution."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlopt.training import LossFn

__all__ = ["FlatnessSettings", "flatness_radius", "line_search_radius"]


@dataclass(frozen=True)
class FlatnessSettings:
    """The flatness radius of Zhang et al. (2018), Eq. (11), and how its line search runs.

    r(w, δw, ε) = sup{r : |Î(w) − Î(w + r·δw)| <= ε}, δw a random isotropic unit direction in the
    space of *all* parameters, averaged over ``directions``. Î is the training loss (the model's own
    loss function) on the first ``subset_size`` images of the training subset, in eval mode — the
    training objective, as Zhang et al. measure it, on a fixed sample so every evaluation of Î is
    the same function.
    """

    epsilon: float = 0.05
    """ε, the allowed change of Î (Zhang et al. Table 1: 0.05)."""
    directions: int = 10
    """T, random unit directions per solution, seeded by the run's seed: every method of a seed gets the same."""
    subset_size: int = 1000
    """training images Î is measured on (fewer if the training subset is smaller)."""
    initial_radius: float = 1.0
    """first radius the bracketing tries."""
    growth: float = 2.0
    """bracketing multiplies the radius by this until |ΔÎ| > ε."""
    max_radius: float = 1024.0
    """bracketing stops here: a direction still within ε at this radius counts as this radius."""
    rel_tolerance: float = 0.01
    """bisection stops when the bracket [lo, hi] satisfies hi − lo <= rel_tolerance·hi."""

    def __post_init__(self) -> None:
        if self.epsilon <= 0 or self.directions < 1 or self.subset_size < 1:
            raise ValueError("flatness needs epsilon > 0, directions >= 1 and subset_size >= 1")
        if not 0 < self.initial_radius <= self.max_radius or self.growth <= 1 or self.rel_tolerance <= 0:
            raise ValueError("flatness needs 0 < initial_radius <= max_radius, growth > 1, rel_tolerance > 0")


def line_search_radius(within: Callable[[float], bool], settings: FlatnessSettings) -> float:
    """sup{r : within(r)} by bracketing then bisection (``within(0)`` is taken as true).

    Bracketing multiplies r by ``growth`` from ``initial_radius`` until ``within(r)`` fails (or
    ``max_radius`` is passed, which is returned); bisection then narrows [lo, hi] with ``within(lo)``
    and not ``within(hi)`` to ``rel_tolerance`` and returns lo, the largest radius verified within
    ε. Where |ΔÎ| crosses ε more than once the result is a crossing inside the first failing bracket.
    """
    lo, hi = 0.0, settings.initial_radius
    while within(hi):
        if hi >= settings.max_radius:
            return settings.max_radius
        lo, hi = hi, min(hi * settings.growth, settings.max_radius)
    while hi - lo > settings.rel_tolerance * hi:
        mid = 0.5 * (lo + hi)
        if within(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _loss(model: nn.Module, loss_fn: LossFn, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float(loss_fn(model(images), labels))


@torch.no_grad()
def flatness_radius(
    model: nn.Module,
    loss_fn: LossFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: FlatnessSettings,
    *,
    seed: int,
) -> tuple[float, float]:
    """Mean and std over directions of Zhang et al.'s flatness radius, Eq. (11), at the model's weights.

    Each direction δw is a standard normal vector over all parameters scaled to unit norm (drawn on
    the CPU from ``seed``); Î is ``loss_fn`` on ``images``/``labels`` in eval mode. The weights are
    restored afterwards.
    """
    model.eval()
    params = list(model.parameters())
    origin = [p.detach().clone() for p in params]
    sizes = [p.numel() for p in params]
    generator = torch.Generator().manual_seed(seed)
    base_loss = _loss(model, loss_fn, images, labels)
    radii: list[float] = []
    try:
        for _ in range(settings.directions):
            direction = torch.randn(sum(sizes), generator=generator, dtype=torch.float64)
            direction = (direction / direction.norm()).to(torch.float32)
            pieces = [
                piece.view_as(p).to(p.device) for piece, p in zip(direction.split(sizes), params, strict=True)
            ]

            def within(radius: float, pieces: list[torch.Tensor] = pieces) -> bool:
                for p, w, d in zip(params, origin, pieces, strict=True):
                    p.copy_(w + radius * d)  # copy_ keeps each parameter's memory format
                moved = _loss(model, loss_fn, images, labels)
                return math.isfinite(moved) and abs(moved - base_loss) <= settings.epsilon

            radii.append(line_search_radius(within, settings))
    finally:
        for p, w in zip(params, origin, strict=True):
            p.copy_(w)
    return float(np.mean(radii)), float(np.std(radii))

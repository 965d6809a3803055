"""Timing shared by the overhead benchmarks: alternating blocks against a drifting machine load."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def time_block(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def median_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free ~95 % confidence interval of the median (order statistics, binomial rank).

    With ``n`` samples the median lies between the ``k``-th smallest and ``k``-th largest, where
    ``k = ⌊n/2 − z·√n/2⌋``; no assumption about the shape of the block-to-block noise.
    """
    ordered = sorted(values)
    k = max(math.floor(len(ordered) / 2 - z * math.sqrt(len(ordered)) / 2), 0)
    return ordered[k], ordered[len(ordered) - 1 - k]


@dataclass(frozen=True)
class Paired:
    """Result of :func:`paired_medians`: seconds per call and the ratio other/base."""

    base_s: float
    other_s: float
    ratio: float
    ratio_low: float
    ratio_high: float


def paired_medians(
    base: Callable[[], object], other: Callable[[], object], *, block: int, blocks: int, warmup: int
) -> Paired:
    """Medians of ``base`` and ``other`` per call, and of their back-to-back block ratios (with a CI).

    Blocks of the two alternate, and which goes first alternates too, so load that drifts over
    minutes hits both alike; each ratio compares two blocks that ran back to back.
    """
    time_block(base, warmup)
    time_block(other, warmup)
    base_s: list[float] = []
    other_s: list[float] = []
    for i in range(blocks):
        pair = ((base_s, base), (other_s, other)) if i % 2 else ((other_s, other), (base_s, base))
        for samples, fn in pair:
            samples.append(time_block(fn, block))
    ratios = [o / b for o, b in zip(other_s, base_s, strict=True)]
    low, high = median_interval(ratios)
    return Paired(statistics.median(base_s), statistics.median(other_s), statistics.median(ratios), low, high)

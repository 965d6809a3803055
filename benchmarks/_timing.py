"""Timing shared by the overhead benchmarks: alternating blocks against a drifting machine load."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def time_block(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def paired_medians(
    base: Callable[[], object], other: Callable[[], object], *, block: int, blocks: int, warmup: int
) -> tuple[float, float, float]:
    """``(median s/call of base, median s/call of other, median of other/base block ratios)``.

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
    ratio = statistics.median(o / b for o, b in zip(other_s, base_s, strict=True))
    return statistics.median(base_s), statistics.median(other_s), ratio

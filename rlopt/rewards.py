"""The tiered reward of Zhu, Hayashi & Ohsawa §4.1, and the running-score cut-off of their Algorithm 1.

Tiers are checked in priority order and the first that applies gives the reward:

====  ===================================================================  =========================
tier  condition                                                            reward
====  ===================================================================  =========================
1     a hyperparameter left its bounds (lr outside [0.001, 0.5])           ``bound_penalty``, ends
1     training diverged: loss or parameters NaN/inf                        ``divergence_penalty``, ends
2     the latest ``loss_window`` losses fluctuate less than                ``too_low_penalty``
      ``min_fluctuation`` (relative range): the rate is too low
3     the current loss is above the minimum of the first half of the       ``too_high_penalty``
      window: the rate is too high
4     the loss reached the threshold (0.02) — or, failing that, a new      ``threshold_reward`` or
      minimum of the episode                                               ``new_min_reward`` ×
                                                                           ln(old min / new min), each
                                                                           × (1 + steps saved / horizon)
5     none of the above                                                    0
====  ===================================================================  =========================

"Steps saved" is ``horizon − t``: the earlier progress comes, the larger the reward (§4.1: "a positive
reward will be given according to the total steps").

Two documented departures from §4.1, both switchable in :class:`RewardConfig` (``smoothed=False,
scale_by_improvement=False, new_min_reward=1`` is the paper's reward): the tiers judge the moving
average of the loss rather than the raw mini-batch loss, and a new minimum earns in proportion to the
log-improvement. Why: measured with fixed schedules (``benchmarks/reward_ranking.py``,
docs/benchmarks.md), the paper's reward ranks slow rates above the ones that reach a lower
validation loss; with both changes the returns rank them as validation accuracy does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from rlopt.control import ObservationSpec


class RewardTier(IntEnum):
    """Which rule produced a reward; logged as ``env/reward_tier``."""

    OUT_OF_BOUNDS = 1
    DIVERGED = 0
    TOO_LOW = 2
    TOO_HIGH = 3
    THRESHOLD = 4
    NEW_MINIMUM = 5
    NEUTRAL = 6


@dataclass(frozen=True)
class RewardConfig:
    """Every magnitude of the tiered reward.

    Attributes:
        bound_penalty: tier 1, a hyperparameter left its bounds; the episode ends.
        divergence_penalty: tier 1, NaN/inf loss or parameters; the episode ends (``terminated``).
        loss_window: number of latest losses tiers 2 and 3 judge (the paper: 20).
        min_fluctuation: tier 2 fires when (max − min) / mean of the window is below this.
        too_low_penalty: tier 2 reward ("continuous negative rewards").
        too_high_penalty: tier 3 reward ("a normal negative reward").
        threshold_loss: the loss that counts as trained (the paper: 0.02).
        threshold_reward: tier 4 base reward when the loss is at or below ``threshold_loss``.
        new_min_reward: tier 4 base reward for a new minimum of the episode's loss; with
            ``scale_by_improvement`` it is the reward per unit of ``ln(previous best / new best)``.
        scale_by_improvement: scale the new-minimum reward by how much the minimum improved, so the
            progress rewards of an episode add up to (a step-weighted) ``ln(first loss / best loss)``:
            a faster descent earns more, not just a smoother one. ``False`` is the paper's constant.
        change_cost: subtracted from the reward of every action that changes a hyperparameter
            (``0`` is the paper). One 10 % change moves the return by far less than the mini-batch
            noise, so without it a DQN's greedy policy drifts wherever its Q-estimates' noise
            points; the cost makes "keep" the default and a change something that must pay.
        score_floor: Algorithm 1's ``score_0``: the episode stops once the summed reward falls
            below it; ``None`` disables the cut-off.
        smoothed: judge tiers 2-4 on the moving average of the loss (``ObservationSpec.loss_smoothing``)
            instead of the raw mini-batch losses of the paper. With batches of 32 the batch-to-batch
            noise swamps the effect of the learning rate (docs/benchmarks.md, *Reward ranking*).
        reference_horizon: when set, the per-step costs (tiers 2 and 3, ``change_cost``) are
            multiplied by ``reference_horizon / horizon``, so an episode's summed costs span the same
            range at every length, as its progress rewards already do (they add up to about
            ``ln(first loss / best loss)``). ``None``: unscaled costs, whose sum grows with the length
            and swamps the progress rewards of long episodes.
        charge_skipped_steps: a tier-1 end (bounds, divergence) also costs ``too_low_penalty``
            (scaled as above) for every step of the horizon it skips. Without it, and without a
            score floor, leaving the bounds at once is cheaper than training slowly to the end.
    """

    bound_penalty: float = -50.0
    divergence_penalty: float = -50.0
    loss_window: int = ObservationSpec.loss_window
    min_fluctuation: float = 0.1
    too_low_penalty: float = -0.5
    too_high_penalty: float = -0.2
    threshold_loss: float = 0.02
    threshold_reward: float = 2.0
    new_min_reward: float = 20.0
    score_floor: float | None = -50.0
    smoothed: bool = True
    scale_by_improvement: bool = True
    change_cost: float = 0.1
    reference_horizon: int | None = None
    charge_skipped_steps: bool = False

    def __post_init__(self) -> None:
        if self.bound_penalty >= 0 or self.divergence_penalty >= 0:
            raise ValueError("bound_penalty and divergence_penalty must be negative")
        if self.too_low_penalty > 0 or self.too_high_penalty > 0:
            raise ValueError("too_low_penalty and too_high_penalty must not be positive")
        if self.threshold_reward < 0 or self.new_min_reward < 0:
            raise ValueError("threshold_reward and new_min_reward must not be negative")
        if self.loss_window < 2:
            raise ValueError("loss_window must be >= 2")
        if self.reference_horizon is not None and self.reference_horizon < 1:
            raise ValueError(f"reference_horizon must be >= 1 or None, got {self.reference_horizon}")

    def cost_scale(self, horizon: int) -> float:
        """The factor of the per-step costs in an episode of ``horizon`` steps (1 without ``reference_horizon``)."""
        return 1.0 if self.reference_horizon is None else self.reference_horizon / horizon

    def skipped_steps_charge(self, step: int, horizon: int) -> float:
        """What a tier-1 end at ``step`` costs besides its penalty (0 without ``charge_skipped_steps``)."""
        if not self.charge_skipped_steps:
            return 0.0
        return self.too_low_penalty * self.cost_scale(horizon) * max(horizon - step, 0)


def progress_bonus(base: float, step: int, horizon: int) -> float:
    """``base × (1 + steps saved / horizon)``, steps saved = ``max(horizon − step, 0)``."""
    return base * (1.0 + max(horizon - step, 0) / horizon)


def tiered_reward(
    losses: Sequence[float],
    best_loss: float,
    step: int,
    *,
    horizon: int,
    in_bounds: bool,
    config: RewardConfig,
) -> tuple[float, RewardTier]:
    """Reward of one training step.

    Args:
        losses: the latest losses, oldest first, ending with the current one.
        best_loss: the lowest loss of the episode *before* the current one (``inf`` at the start).
        step: 1-based training step within the episode.
        horizon: the episode's length, for "steps saved".
        in_bounds: whether the action kept the hyperparameters within their bounds.
        config: the magnitudes.

    Returns:
        ``(reward, tier)``; tiers ``OUT_OF_BOUNDS`` and ``DIVERGED`` end the episode.
    """
    if not in_bounds:
        return config.bound_penalty + config.skipped_steps_charge(step, horizon), RewardTier.OUT_OF_BOUNDS
    current = losses[-1]
    if not math.isfinite(current):
        return config.divergence_penalty + config.skipped_steps_charge(step, horizon), RewardTier.DIVERGED
    window = list(losses)[-config.loss_window :]
    if len(window) == config.loss_window:
        mean = sum(window) / len(window)
        if (max(window) - min(window)) / max(mean, 1e-12) < config.min_fluctuation:
            return config.too_low_penalty * config.cost_scale(horizon), RewardTier.TOO_LOW
        if current > min(window[: config.loss_window // 2]):
            return config.too_high_penalty * config.cost_scale(horizon), RewardTier.TOO_HIGH
    if current <= config.threshold_loss:
        return progress_bonus(config.threshold_reward, step, horizon), RewardTier.THRESHOLD
    if current < best_loss:
        base = config.new_min_reward
        if config.scale_by_improvement:
            base *= math.log(best_loss / current) if math.isfinite(best_loss) and current > 0 else 0.0
        return progress_bonus(base, step, horizon), RewardTier.NEW_MINIMUM
    return 0.0, RewardTier.NEUTRAL


class EpisodeScore:
    """The running score of one episode: its best judged loss, its steps and its summed reward.

    The environment keeps one per episode, and ``benchmarks/reward_ranking.py`` replays recorded
    episodes through one, so a reward is scored the same way in both. ``first`` is the judged loss
    of the update made at reset (with the starting hyperparameters); it is the first best loss.
    """

    def __init__(self, config: RewardConfig, horizon: int, first: float) -> None:
        self.config = config
        self.horizon = horizon
        self.best = first if math.isfinite(first) else math.inf
        self.steps = 0
        self.total = 0.0

    def decision_cost(self, changed: bool) -> float:
        """The reward of an action before its steps: −``change_cost`` (scaled) if it changes a hyperparameter."""
        return -self.config.change_cost * self.config.cost_scale(self.horizon) if changed else 0.0

    def step(self, window: Sequence[float], in_bounds: bool) -> tuple[float, RewardTier]:
        """The :func:`tiered_reward` of the next training step, whose judged loss ends ``window``
        (NaN where training diverged); it becomes the best loss if it is finite and lower."""
        self.steps += 1
        reward, tier = tiered_reward(window, self.best, self.steps, horizon=self.horizon, in_bounds=in_bounds,
                                     config=self.config)
        current = window[-1]
        if in_bounds and math.isfinite(current):
            self.best = min(self.best, current)
        return reward, tier

    def below_floor(self, pending: float = 0.0) -> bool:
        """Whether the summed reward, with ``pending`` not yet added, is below the score floor."""
        floor = self.config.score_floor
        return floor is not None and self.total + pending < floor


def ends_episode(tier: RewardTier) -> bool:
    """Tier 1: the hyperparameters left their bounds or training diverged."""
    return tier in (RewardTier.OUT_OF_BOUNDS, RewardTier.DIVERGED)

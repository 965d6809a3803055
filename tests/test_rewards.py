"""Every reward tier fires on a constructed loss history and has the right sign."""

from __future__ import annotations

import math

import pytest

from rlopt.rewards import RewardConfig, RewardTier, progress_bonus, tiered_reward

CFG = RewardConfig()
H = 250  # the episode length the rewards count "steps saved" to


def noisy_flat(n: int = 20, level: float = 1.0, spread: float = 0.5) -> list[float]:
    """A window whose relative range is about ``spread`` (well above min_fluctuation)."""
    return [level + spread * (0.5 if i % 2 else -0.5) for i in range(n)]


def test_out_of_bounds_wins_over_everything() -> None:
    reward, tier = tiered_reward([0.01], best_loss=1.0, step=5, horizon=H, in_bounds=False, config=CFG)
    assert tier is RewardTier.OUT_OF_BOUNDS
    assert reward == CFG.bound_penalty < 0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_divergence_is_finite_penalty(bad: float) -> None:
    reward, tier = tiered_reward([*noisy_flat(19), bad], best_loss=0.5, step=30, horizon=H, in_bounds=True, config=CFG)
    assert tier is RewardTier.DIVERGED
    assert math.isfinite(reward) and reward < 0


def test_too_low_when_window_barely_fluctuates() -> None:
    losses = [1.0 - 0.001 * i for i in range(20)]  # smooth, monotone: the rate is too low
    reward, tier = tiered_reward(losses, best_loss=0.99, step=30, horizon=H, in_bounds=True, config=CFG)
    assert tier is RewardTier.TOO_LOW
    assert reward == CFG.too_low_penalty < 0


def test_too_low_needs_a_full_window() -> None:
    losses = [1.0 - 0.001 * i for i in range(10)]
    _, tier = tiered_reward(losses, best_loss=0.9915, step=10, horizon=H, in_bounds=True, config=CFG)
    assert tier is RewardTier.NEW_MINIMUM


def test_too_high_when_loss_above_first_half_minimum() -> None:
    losses = [*noisy_flat(19), 1.2]  # first half's minimum is 0.75
    reward, tier = tiered_reward(losses, best_loss=0.75, step=30, horizon=H, in_bounds=True, config=CFG)
    assert tier is RewardTier.TOO_HIGH
    assert reward == CFG.too_high_penalty < 0


def test_new_minimum_is_positive_and_earlier_is_larger() -> None:
    losses = [*noisy_flat(19), 0.5]
    early, tier = tiered_reward(losses, best_loss=0.75, step=20, horizon=H, in_bounds=True, config=CFG)
    late, _ = tiered_reward(losses, best_loss=0.75, step=240, horizon=H, in_bounds=True, config=CFG)
    assert tier is RewardTier.NEW_MINIMUM
    assert early > late > 0
    assert early == pytest.approx(CFG.new_min_reward * math.log(0.75 / 0.5) * (1 + 230 / 250))


def test_new_minimum_scales_with_improvement_unless_paper_mode() -> None:
    losses = [*noisy_flat(19), 0.5]
    small, _ = tiered_reward(losses, best_loss=0.51, step=20, horizon=H, in_bounds=True, config=CFG)
    large, _ = tiered_reward(losses, best_loss=0.75, step=20, horizon=H, in_bounds=True, config=CFG)
    assert 0 < small < large
    paper = RewardConfig(smoothed=False, scale_by_improvement=False, new_min_reward=1.0)
    a, _ = tiered_reward(losses, best_loss=0.51, step=20, horizon=H, in_bounds=True, config=paper)
    b, _ = tiered_reward(losses, best_loss=0.75, step=20, horizon=H, in_bounds=True, config=paper)
    assert a == b == pytest.approx(1 + 230 / 250)


def test_threshold_beats_new_minimum() -> None:
    losses = [*noisy_flat(19, level=0.05, spread=0.04), 0.015]
    reward, tier = tiered_reward(losses, best_loss=0.03, step=100, horizon=H, in_bounds=True, config=CFG)
    assert tier is RewardTier.THRESHOLD
    assert reward == pytest.approx(progress_bonus(CFG.threshold_reward, 100, H))
    assert reward > 0


def test_neutral_otherwise() -> None:
    losses = [*noisy_flat(19), 0.7]  # below the first half's minimum 0.75, above the episode best
    reward, tier = tiered_reward(losses, best_loss=0.5, step=30, horizon=H, in_bounds=True, config=CFG)
    assert (reward, tier) == (0.0, RewardTier.NEUTRAL)


@pytest.mark.parametrize(
    "field, value",
    [("bound_penalty", 1.0), ("divergence_penalty", 0.0), ("too_high_penalty", 0.1), ("new_min_reward", -1.0)],
)
def test_config_rejects_wrong_signs(field: str, value: float) -> None:
    with pytest.raises(ValueError):
        RewardConfig(**{field: value})


def test_reward_ranking_writes_every_cell_and_the_floor_variant_runs_whole_episodes(tmp_path) -> None:
    """benchmarks/reward_ranking.py --quick on tiny data: one JSON cell per reward, budget and starting
    rate, written as it goes; without the score floor no episode stops before its budget."""
    import json
    import sys
    from pathlib import Path

    from helpers import fake_image_data, save_idx_dataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import reward_ranking
    finally:
        sys.path.pop(0)
    idx = save_idx_dataset(fake_image_data(n_train=360, n_test=60, seed=0, n_validation=60), tmp_path / "idx")
    out = tmp_path / "ranking.json"
    reward_ranking.main(["--quick", "--data-dir", str(idx), "--train-size", "256", "--validation-size", "40",
                         "--rewards", "rlopt,no-floor", "--out", str(out)])
    cells = json.loads(out.read_text())["cells"]
    assert [(c["reward"], c["budget"]) for c in cells] == [
        (r, b) for r in ("rlopt", "no-floor") for b in (20, 40) for _ in range(2)
    ]
    for cell in cells:
        assert set(cell["runs"]) == set(reward_ranking.SCHEDULES)
        assert -1 <= cell["rho_schedules"] <= 1 or cell["rho_schedules"] != cell["rho_schedules"]
    assert not (tmp_path / "ranking.json.tmp").exists()
    # the same episodes (same seeds, open-loop schedules): the floor can only shorten them
    half = len(cells) // 2
    for with_floor, without in zip(cells[:half], cells[half:], strict=True):
        for name, runs in with_floor["runs"].items():
            assert all(a["steps"] <= b["steps"] <= with_floor["budget"]
                       for a, b in zip(runs, without["runs"][name], strict=True))

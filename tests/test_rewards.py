"""Every reward tier fires on a constructed loss history and has the right sign."""

from __future__ import annotations

import dataclasses
import math

import pytest
from helpers import load_benchmark

from rlopt.rewards import EpisodeScore, RewardConfig, RewardTier, ends_episode, progress_bonus, tiered_reward

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


def test_reward_ranking_writes_every_cell_and_the_floor_only_shortens_the_return(tmp_path) -> None:
    """benchmarks/reward_ranking.py --quick on tiny data: one JSON cell per budget, starting rate and
    reward, written as it goes; the same recorded episodes are scored under every reward, and a
    score floor can only end a return earlier; --traces re-scores without training again."""
    import json

    from helpers import fake_image_data, save_idx_dataset

    reward_ranking = load_benchmark("reward_ranking")
    idx = save_idx_dataset(fake_image_data(n_train=360, n_test=60, seed=0, n_validation=60), tmp_path / "idx")
    out, traces = tmp_path / "ranking.json", tmp_path / "traces.json"
    argv = ["--quick", "--data-dir", str(idx), "--train-size", "256", "--validation-size", "40",
            "--rewards", "rlopt,no-floor,budget", "--out", str(out), "--traces", str(traces)]
    reward_ranking.main(argv)
    cells = json.loads(out.read_text())["cells"]
    assert [(c["budget"], c["reward"]) for c in cells] == [
        (b, r) for b in (20, 40) for _ in range(2) for r in ("rlopt", "no-floor", "budget")
    ]
    for cell in cells:
        assert set(cell["runs"]) == set(reward_ranking.SCHEDULES)
        assert -1 <= cell["rho_schedules"] <= 1 or cell["rho_schedules"] != cell["rho_schedules"]
    assert not (tmp_path / "ranking.json.tmp").exists()
    for with_floor, without in zip(cells[0::3], cells[1::3], strict=True):
        for name, runs in with_floor["runs"].items():
            for a, b in zip(runs, without["runs"][name], strict=True):
                assert a["steps"] <= b["steps"] <= with_floor["budget"]
                assert a["val_loss"] == b["val_loss"]  # the same episode, trained to its end
    # a second run re-scores the recorded episodes: the same numbers, no training
    out.unlink()
    reward_ranking.main(argv)
    assert json.loads(out.read_text())["cells"] == cells
    # a damaged or foreign traces file is one clear error, and is left as it was
    for text in ("{not json", '{"settings": {}}', "[1, 2]"):
        traces.write_text(text)
        with pytest.raises(SystemExit, match="not a --traces file"):
            reward_ranking.main(argv)
        assert traces.read_text() == text


@pytest.mark.parametrize("reward", ["rlopt", "paper", "no-floor", "budget"])
@pytest.mark.parametrize(("schedule", "rate"), [("raise ×2.9", 0.1), ("start ×0.31", 0.002)])
def test_replayed_return_equals_the_environments(reward: str, schedule: str, rate: float, tiny_data) -> None:
    """The ranking's offline replay of a reward gives the return the environment itself pays,
    score-floor cut-offs and out-of-bounds ends included (from 0.002, "start ×0.31" leaves the bounds)."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the ids)

    reward_ranking = load_benchmark("reward_ranking")
    config = dataclasses.replace(reward_ranking.REWARDS[reward], score_floor=-3.0) if reward == "rlopt" \
        else reward_ranking.REWARDS[reward]
    horizon = 60
    kwargs = {"data": tiny_data, "episode_steps": horizon, "lr_init": rate, "rewards": config}
    env = gym.make("rlopt/LRControl-v0", start="random", **kwargs)
    env.reset(seed=3)
    total, steps, done = 0.0, 0, False
    while not done:
        _, r, terminated, truncated, _ = env.step(reward_ranking.SCHEDULES[schedule](steps, horizon))
        total += float(r)
        steps += 1
        done = terminated or truncated
    trace = reward_ranking.episode(kwargs, reward_ranking.SCHEDULES[schedule], seed=3)
    assert trace.out_of_bounds == (rate == 0.002)
    assert reward_ranking.replay_return(trace, config, horizon) == (pytest.approx(total, rel=1e-12, abs=1e-12), steps)


def test_budget_reward_scales_costs_and_charges_skipped_steps() -> None:
    """With reference_horizon, per-step costs shrink with the horizon; a tier-1 end pays the skipped
    steps at the too-low rate, so leaving the bounds at once is never cheaper than a flat run."""
    cfg = RewardConfig(score_floor=None, reference_horizon=250, charge_skipped_steps=True)
    flat = [1.0 - 0.001 * i for i in range(20)]
    for horizon in (250, 1000, 2000):
        low, tier = tiered_reward(flat, best_loss=0.99, step=30, horizon=horizon, in_bounds=True, config=cfg)
        assert tier is RewardTier.TOO_LOW
        assert low == pytest.approx(cfg.too_low_penalty * 250 / horizon)
        out, tier = tiered_reward(flat, best_loss=0.99, step=1, horizon=horizon, in_bounds=False, config=cfg)
        assert tier is RewardTier.OUT_OF_BOUNDS
        assert out == pytest.approx(cfg.bound_penalty + cfg.too_low_penalty * 250 * (horizon - 1) / horizon)
        assert out < horizon * low  # worse than a whole episode at the too-low tier
    plain = RewardConfig()
    assert plain.cost_scale(2000) == 1.0 and plain.skipped_steps_charge(1, 2000) == 0.0
    with pytest.raises(ValueError, match="reference_horizon"):
        RewardConfig(reference_horizon=0)


def test_episode_score_keeps_the_best_loss_and_the_floor() -> None:
    """EpisodeScore: a lower finite loss becomes the best (NaN and out-of-bounds steps never do),
    the change cost is scaled like the other costs, and the floor counts the pending reward."""
    cfg = RewardConfig(score_floor=-1.0, reference_horizon=250)
    episode = EpisodeScore(cfg, horizon=1000, first=1.0)
    reward, tier = episode.step([1.0, 0.5], in_bounds=True)
    assert tier is RewardTier.NEW_MINIMUM and reward > 0 and episode.best == 0.5 and episode.steps == 1
    _, tier = episode.step([0.5, 0.4], in_bounds=False)
    assert tier is RewardTier.OUT_OF_BOUNDS and ends_episode(tier) and episode.best == 0.5
    _, tier = episode.step([0.5, math.nan], in_bounds=True)
    assert tier is RewardTier.DIVERGED and ends_episode(tier) and episode.best == 0.5 and episode.steps == 3
    assert episode.decision_cost(True) == pytest.approx(-cfg.change_cost / 4) and episode.decision_cost(False) == 0.0
    assert not episode.below_floor(-0.9) and episode.below_floor(-1.1)
    assert EpisodeScore(cfg, horizon=250, first=math.inf).best == math.inf
    assert not EpisodeScore(dataclasses.replace(cfg, score_floor=None), 250, 1.0).below_floor(-1e9)

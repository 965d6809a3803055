"""The Gymnasium environment: checkers, reproducibility, bounds, divergence, vectorisation."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import envs
from envs import ENV_IDS, EnvConfig, HyperparamControlEnv
from rlopt.control import FEATURE_NAMES
from rlopt.data import ImageData
from rlopt.rewards import RewardTier

SHORT = 30  # episode length for tests


def make(env_id: str, data: ImageData, **kwargs: object) -> gym.Env:
    return gym.make(env_id, data=data, **kwargs)


@pytest.mark.parametrize("env_id", sorted(ENV_IDS.values()))
def test_checkers_pass(env_id: str, tiny_data: ImageData) -> None:
    env = make(env_id, tiny_data)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(make(env_id, tiny_data), warn=True)


def test_registered_ids() -> None:
    assert {spec_id for spec_id in ENV_IDS.values()} <= set(gym.registry)
    assert envs.env_id_for("rsgd") == "rlopt/RSGDControl-v0"
    with pytest.raises(ValueError, match="control mode"):
        envs.env_id_for("momentum")


def test_bad_config_is_a_clear_error(tiny_data: ImageData) -> None:
    with pytest.raises(ValueError, match="needs optimizer 'rsgd'"):
        HyperparamControlEnv(data=tiny_data, control="rsgd", optimizer="sgd")
    with pytest.raises(ValueError, match="start"):
        HyperparamControlEnv(data=tiny_data, start="sometimes")
    with pytest.raises(ValueError, match=r"lr_init 10 lies outside the lr bounds \[0\.001, 0\.5\]"):
        HyperparamControlEnv(data=tiny_data, lr_init=10.0)


@pytest.mark.parametrize("episode_steps", [1, 7, 40])
def test_episode_steps_sets_the_length_the_horizon_and_the_validation_step(
    episode_steps: int, tiny_data: ImageData
) -> None:
    env = gym.make(ENV_IDS["lr"], data=tiny_data, episode_steps=episode_steps)
    obs, _ = env.reset(seed=0)
    assert obs[FEATURE_NAMES.index("step")] == pytest.approx(1 / episode_steps)
    for t in range(1, episode_steps + 1):
        obs, _, terminated, truncated, info = env.step(1)
        assert not terminated
        assert truncated == (t == episode_steps)
        assert ("val_loss" in info) == (t == episode_steps)  # validation is scored once, at the end
    assert obs[FEATURE_NAMES.index("step")] == 1.0
    # the rewards' "steps saved" count to the same horizon: a threshold reward at the end earns the base
    from rlopt.rewards import RewardConfig, progress_bonus

    base = RewardConfig().threshold_reward
    assert progress_bonus(base, episode_steps, episode_steps) == base


def rollout(env: gym.Env, seed: int, actions: list[int]) -> tuple[np.ndarray, list[float], list[dict]]:
    obs, info = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], [info]
    for a in actions:
        obs, r, terminated, truncated, info = env.step(a)
        observations.append(obs)
        rewards.append(r)
        infos.append(info)
        if terminated or truncated:
            break
    return np.stack(observations), rewards, infos


@pytest.mark.parametrize("start", ["fixed", "random"])
@pytest.mark.parametrize("env_id", [ENV_IDS["lr"], ENV_IDS["lr+rsgd"]])
def test_same_seed_same_actions_same_rollout(env_id: str, start: str, tiny_data: ImageData) -> None:
    actions = [int(a) for a in np.random.default_rng(0).integers(0, 3, size=25)]
    a = rollout(make(env_id, tiny_data, start=start), 7, actions)
    b = rollout(make(env_id, tiny_data, start=start), 7, actions)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


def test_random_start_differs_between_episodes_fixed_does_not(tiny_data: ImageData) -> None:
    for start, same in (("fixed", True), ("random", False)):
        env = make(ENV_IDS["lr"], tiny_data, start=start)
        first, _ = env.reset(seed=1)
        second, _ = env.reset()
        assert np.array_equal(first, second) is same


def test_always_raising_lr_hits_the_bound(tiny_data: ImageData) -> None:
    env = make(ENV_IDS["lr"], tiny_data)
    env.reset(seed=0)
    raises = 0
    terminated = truncated = False
    while not (terminated or truncated) and raises < 100:
        obs, reward, terminated, truncated, info = env.step(2)
        raises += 1
    assert terminated and not truncated
    assert info["reward_tier"] == RewardTier.OUT_OF_BOUNDS
    rewards = EnvConfig().rewards
    assert reward == pytest.approx(rewards.bound_penalty - rewards.change_cost)  # the raise was a change
    # exactly as many raises as the bound allows: 0.1·(1/0.9)^k <= 0.5 for k <= 15, the 16th leaves
    assert raises == math.floor(math.log(0.5 / 0.1) / math.log(1 / 0.9)) + 1
    assert np.isfinite(obs).all()
    assert "val_accuracy" in info


def test_clamped_bounds_keep_the_episode_going_at_the_bound(tiny_data: ImageData) -> None:
    env = make(ENV_IDS["lr+rsgd"], tiny_data, optimizer="rsgd", lr_init=0.1, clamp_bounds=True,
               episode_steps=SHORT)
    env.reset(seed=0)
    raise_lr_lower_gamma = 8  # lr ×1/0.9 and 1 − Γ ×1/0.9: both walk into their bounds within SHORT steps
    spec = env.unwrapped.action_spec
    assert spec.decode(raise_lr_lower_gamma) == pytest.approx((1 / 0.9, 1 / 0.9))
    steps = 0
    terminated = truncated = False
    while not (terminated or truncated):
        obs, _, terminated, truncated, info = env.step(raise_lr_lower_gamma)
        steps += 1
        assert info["reward_tier"] != RewardTier.OUT_OF_BOUNDS
    assert truncated and not terminated and steps == info["step"] == SHORT
    # held at the bounds, as a deployed scheduler clamps them, and trained with
    assert info["lr"] == spec.lr_bounds[1] and info["reinforcement"] == spec.reinforcement_bounds[0]
    assert np.isfinite(obs).all() and "val_accuracy" in info


def test_divergence_terminates_with_finite_penalty(tiny_data: ImageData) -> None:
    env = HyperparamControlEnv(data=tiny_data, lr_init=1e6, lr_bounds=(1e-3, 1e9), episode_steps=SHORT)
    env.reset(seed=0)
    for _ in range(SHORT):
        obs, reward, terminated, truncated, info = env.step(1)
        assert np.isfinite(obs).all() and np.isfinite(reward)
        if terminated:
            break
    assert terminated and not truncated
    assert info["reward_tier"] == RewardTier.DIVERGED


@pytest.mark.parametrize("env_id", sorted(ENV_IDS.values()))
def test_observations_finite_under_random_actions(env_id: str, tiny_data: ImageData) -> None:
    env = make(env_id, tiny_data, start="random", episode_steps=SHORT)
    env.action_space.seed(0)
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs)
            assert np.isfinite(reward)
            done = terminated or truncated
            assert info["step"] <= SHORT
        assert {"val_loss", "val_accuracy", "loss", "lr", "reinforcement", "reward_tier"} <= info.keys()
        assert 0.0 <= info["val_accuracy"] <= 1.0 and info["step"] <= SHORT


def test_dummy_and_subproc_vec_env(tiny_data: ImageData) -> None:
    def factory(rank: int):
        return lambda: make(ENV_IDS["lr"], tiny_data, start="random")

    results = []
    for vec_cls in (DummyVecEnv, SubprocVecEnv):
        vec = vec_cls([factory(i) for i in range(2)])
        vec.seed(3)
        first = vec.reset()
        assert first.shape == (2, len(FEATURE_NAMES))
        obs, rewards, _dones, infos = vec.step(np.array([0, 2]))
        assert np.isfinite(obs).all() and rewards.shape == (2,)
        assert [info["lr"] for info in infos] == pytest.approx([0.1 * 0.9, 0.1 / 0.9])  # each env its action
        results.append((first, obs, rewards))
        vec.close()
    assert not np.array_equal(results[0][0][0], results[0][0][1])  # the two envs start from different points
    for a, b in zip(*results, strict=True):  # in-process and worker-process envs compute the same
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_gymnasium_make_vec(tiny_data: ImageData) -> None:
    vec = gym.make_vec(ENV_IDS["lr"], num_envs=2, vectorization_mode="sync", data=tiny_data)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (2, len(FEATURE_NAMES))
    obs, _rewards, _terminated, _truncated, infos = vec.step(np.array([0, 2]))
    assert np.isfinite(obs).all()
    assert infos["lr"] == pytest.approx([0.1 * 0.9, 0.1 / 0.9])
    vec.close()


def test_score_cut_off_truncates_not_terminates(tiny_data: ImageData) -> None:
    from rlopt.rewards import RewardConfig

    env = make(ENV_IDS["lr"], tiny_data, rewards=RewardConfig(score_floor=-0.1, new_min_reward=0.0))
    env.reset(seed=0)
    terminated = truncated = False
    score = 0.0
    while not (terminated or truncated):
        _, reward, terminated, truncated, info = env.step(1)
        score += reward
    assert truncated and not terminated  # the score is not in the state: a time-limit-like stop
    assert score < -0.1 and info["score"] == pytest.approx(score)
    assert "val_accuracy" in info


def test_a_decision_interval_runs_k_steps_per_action_and_sums_their_rewards(tiny_data: ImageData) -> None:
    """k = 3 over a 10-step episode: env steps of 3, 3, 3 and 1 training steps. Each is the k = 1 run
    whose action is followed by keeps: the same observations, the rewards summed, the length and
    the step feature in optimizer steps."""
    decisions = [2, 0, 1, 2]
    fine = [a for d in decisions for a in (d, 1, 1)][:10]
    one = rollout(make(ENV_IDS["lr"], tiny_data, episode_steps=10), 3, fine)
    three = rollout(make(ENV_IDS["lr"], tiny_data, episode_steps=10, decision_interval=3), 3, decisions)
    assert [info["step"] for info in three[2]] == [0, 3, 6, 9, 10]
    assert len(three[1]) == 4 and "val_loss" in three[2][-1] and "val_loss" not in three[2][-2]
    np.testing.assert_array_equal(three[0], one[0][[0, 3, 6, 9, 10]])
    sums = [sum(one[1][i : i + 3]) for i in (0, 3, 6, 9)]
    assert three[1] == pytest.approx(sums)
    assert three[2][-1]["score"] == pytest.approx(one[2][-1]["score"])
    assert three[0][-1][FEATURE_NAMES.index("step")] == 1.0
    with pytest.raises(ValueError, match="decision_interval"):
        HyperparamControlEnv(data=tiny_data, decision_interval=0)


def test_changing_the_rate_costs_change_cost(tiny_data: ImageData) -> None:
    from rlopt.rewards import RewardConfig

    rewards = {}
    for cost in (0.0, 0.5):
        env = make(ENV_IDS["lr"], tiny_data, rewards=RewardConfig(change_cost=cost))
        env.reset(seed=0)
        rewards[cost] = [env.step(a)[1] for a in (2, 1, 0)]  # raise, keep, lower
    assert rewards[0.5][0] == pytest.approx(rewards[0.0][0] - 0.5)
    assert rewards[0.5][1] == pytest.approx(rewards[0.0][1])
    assert rewards[0.5][2] == pytest.approx(rewards[0.0][2] - 0.5)


@pytest.mark.parametrize("bad", [3, -1])
def test_action_outside_the_space_is_refused_and_changes_nothing(bad: int, tiny_data: ImageData) -> None:
    env = HyperparamControlEnv(data=tiny_data)
    env.reset(seed=0)
    before = env.step(1)[4]
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step(bad)
    after = env.step(1)[4]
    assert after["step"] == before["step"] + 1  # the refused action trained nothing
    assert after["lr"] == before["lr"]


def test_momentum_episodes_run_heavy_ball_sgd_within_its_bounds(tiny_data: ImageData) -> None:
    env = gym.make(ENV_IDS["lr"], data=tiny_data, optimizer="momentum", episode_steps=5)
    _, info = env.reset(seed=0)
    inner = env.unwrapped
    assert isinstance(inner, HyperparamControlEnv)
    assert inner.action_spec.lr_bounds == (0.0001, 0.05) and info["lr"] == 0.01
    group = inner._trainer.optimizer.param_groups[0]  # type: ignore[union-attr]
    assert group["momentum"] == 0.9
    _, _, _, _, info = env.step(2)
    assert info["lr"] == pytest.approx(0.01 / 0.9)


@pytest.mark.parametrize("task", ["mnist-cnn-adam", "mnist-cnn-wide", "mnist-mlp", "mnist-cnn-b128"])
def test_a_task_selects_model_optimizer_and_batch_size(task: str, tiny_data: ImageData) -> None:
    from rlopt.models import MLP, ShallowCNN, quadratic_error
    from rlopt.tasks import get_task

    env = gym.make(ENV_IDS["lr"], data=tiny_data, task=task)
    env.reset(seed=0)
    inner = env.unwrapped
    spec = get_task(task)
    trainer = inner._trainer
    assert type(trainer.optimizer).__name__.lower() == spec.optimizer
    assert trainer.batch_size == spec.batch_size
    assert isinstance(trainer.model, ShallowCNN if spec.model.startswith("cnn") else MLP)
    assert (trainer.loss_fn is quadratic_error) == (spec.model == "mlp")
    assert env.step(1)[4]["lr"] == pytest.approx(0.001 if spec.optimizer == "adam" else 0.1)


def test_explicit_fields_override_the_task(tiny_data: ImageData) -> None:
    env = HyperparamControlEnv(data=tiny_data, task="mnist-cnn-adam", optimizer="sgd", batch_size=16)
    env.reset(seed=0)
    assert isinstance(env._trainer.optimizer, torch.optim.SGD) and env._trainer.batch_size == 16
    with pytest.raises(ValueError, match="unknown task"):
        HyperparamControlEnv(data=tiny_data, task="imagenet-resnet")


def test_a_task_pool_draws_tasks_per_episode_and_never_a_held_out_one(tiny_data: ImageData) -> None:
    from rlopt.tasks import tasks_in

    env = HyperparamControlEnv(data=tiny_data, task="train", optimizer="sgd", start="random", episode_steps=2)
    drawn = []
    env.reset(seed=0)
    for _ in range(40):
        _, info = env.reset()
        drawn.append(info["task"])
    assert set(drawn) <= {t.name for t in tasks_in("train")}
    assert len(set(drawn)) >= 5  # the pool is really sampled
    again = HyperparamControlEnv(data=tiny_data, task="train", optimizer="sgd", start="random", episode_steps=2)
    again.reset(seed=0)
    assert [again.reset()[1]["task"] for _ in range(40)] == drawn  # seeded by reset(seed=...)


def test_drawn_episode_lengths_set_truncation_and_horizon(tiny_data: ImageData) -> None:
    env = HyperparamControlEnv(data=tiny_data, episode_steps=3, max_episode_steps=12, start="random")
    env.reset(seed=1)
    lengths = set()
    for _ in range(6):
        obs, info = env.reset()
        length = info["episode_steps"]
        assert 3 <= length <= 12
        assert obs[FEATURE_NAMES.index("step")] == pytest.approx(1 / length)
        steps = 0
        truncated = False
        while not truncated:
            obs, _, terminated, truncated, info = env.step(1)
            steps += 1
            assert not terminated
        assert steps == length and obs[FEATURE_NAMES.index("step")] == 1.0
        lengths.add(length)
    assert len(lengths) > 1
    with pytest.raises(ValueError, match="max_episode_steps"):
        HyperparamControlEnv(data=tiny_data, episode_steps=10, max_episode_steps=5)


def test_fixed_episode_lengths_run_in_turn_from_each_seeding(tiny_data: ImageData) -> None:
    """Model selection at fixed budgets: lengths in turn, restarted by reset(seed=...), whatever the draw range."""
    env = HyperparamControlEnv(data=tiny_data, episode_steps=3, max_episode_steps=12, start="random",
                               episode_lengths=(4, 9))

    def run_episode(seed: int | None = None) -> int:
        obs, info = env.reset(seed=seed)
        steps, truncated = 0, False
        while not truncated:
            obs, _, terminated, truncated, _ = env.step(1)
            steps += 1
            assert not terminated
        assert steps == info["episode_steps"] and obs[FEATURE_NAMES.index("step")] == 1.0
        return steps

    assert [run_episode(0), run_episode(), run_episode()] == [4, 9, 4]
    assert run_episode(0) == 4  # a new seeding starts the turn again
    with pytest.raises(ValueError, match="episode_lengths"):
        HyperparamControlEnv(data=tiny_data, episode_lengths=())


def test_random_starting_rates_are_log_uniform_within_the_bounds(tiny_data: ImageData) -> None:
    env = HyperparamControlEnv(data=tiny_data, random_lr_init=True, episode_steps=2)
    env.reset(seed=2)
    rates = [env.reset()[1]["lr"] for _ in range(60)]
    assert all(0.001 <= r <= 0.5 for r in rates)
    logs = np.log10(rates)
    assert (logs < -2).sum() > 10 and (logs > -1).sum() > 10  # spread over the decades, not clustered at 0.1

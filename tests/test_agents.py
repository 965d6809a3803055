"""train_agent.py end to end on a tiny on-disk dataset: artifacts, resume, export fidelity, the command line."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fake_image_data, save_idx_dataset

from agents import TrainConfig, env_config, export_policy, make_dqn, make_vec_env
from agents.cli import main, parse_config
from agents.config import DQNSettings
from rlopt.control import FEATURE_NAMES
from rlopt.scheduler import GreedyQ
from rlopt.tasks import TaskSize

ROOT = Path(__file__).resolve().parents[1]
EPISODE = 20


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_idx_dataset(
        fake_image_data(n_train=360, n_test=60, seed=0, n_validation=60), tmp_path_factory.mktemp("idx")
    )


def tiny_args(idx_dir: Path, out: Path, episodes: int) -> list[str]:
    return [
        "--episodes", str(episodes), "--episode-steps", str(EPISODE), "--data-dir", str(idx_dir),
        "--train-size", "256", "--validation-size", "40", "--out", str(out),
        "--checkpoint-every", "15", "--eval-every", "25", "--eval-episodes", "1", "--log-every", "5",
        "--dqn.learning-starts", "10", "--dqn.buffer-size", "200", "--dqn.batch-size", "16",
    ]


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "train_agent.py"), *args], capture_output=True, text=True, cwd=ROOT,
        timeout=300,
    )


def test_cli_writes_artifacts_and_resumes(idx_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_cli(tiny_args(idx_dir, out, episodes=2))
    assert first.returncode == 0, first.stderr[-2000:]
    assert (out / "policy.rlopt").is_file() and (out / "policy_last.rlopt").is_file()
    assert (out / "best" / "best_model.zip").is_file()  # the held-out evaluations picked an agent
    assert "exported the best of the held-out evaluations" in first.stdout
    assert (out / "checkpoints" / "dqn_40_steps.zip").is_file()
    assert (out / "checkpoints" / "dqn_replay_buffer_40_steps.pkl").is_file()
    assert any((out / "tb").glob("events.out.tfevents.*"))
    assert json.loads((out / "config.json").read_text())["episodes"] == 2
    assert "trained 40 environment steps" in first.stdout

    again = run_cli(tiny_args(idx_dir, out, episodes=2))
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = run_cli([*tiny_args(idx_dir, out, episodes=3), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "trained 60 environment steps" in resumed.stdout
    assert (out / "checkpoints" / "dqn_60_steps.zip").is_file()

    changed = run_cli([*tiny_args(idx_dir, out, episodes=4), "--resume", "--optimizer", "adam"])
    assert changed.returncode == 2 and "optimizer" in changed.stderr


def test_unavailable_device_and_missing_data_are_one_line_errors(tmp_path: Path) -> None:
    for args, expected in (
        (["--device", "cuda"], "cuda"),
        (["--data-dir", str(tmp_path / "nowhere")], "missing IDX file"),
    ):
        if args[0] == "--device" and torch.cuda.is_available():
            continue
        result = run_cli([*args, "--episodes", "1", "--out", str(tmp_path / "run")])
        assert result.returncode == 2, result.stderr[-2000:]
        assert expected in result.stderr and "Traceback" not in result.stderr


def test_help_documents_the_flags() -> None:
    result = run_cli(["--help"])
    assert result.returncode == 0
    for flag in ("--control", "--optimizer", "--episodes", "--start", "--n-envs", "--seed", "--device",
                 "--out", "--resume", "--preset"):
        assert flag in result.stdout


def test_presets_and_overrides() -> None:
    assert parse_config([]).episodes == TrainConfig().episodes
    paper = parse_config(["--preset", "paper"])
    assert (paper.episodes, paper.start) == (800, "random")
    assert parse_config(["--preset", "paper", "--episodes", "5"]).episodes == 5
    assert parse_config(["--dqn.net-arch", "32", "32"]).dqn.net_arch == (32, 32)
    with pytest.raises(SystemExit):
        parse_config(["--control", "rsgd", "--optimizer", "sgd"])


def test_exported_scheduler_reproduces_greedy_actions_without_gym_or_sb3(idx_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(episodes=2, episode_steps=EPISODE, data_dir=str(idx_dir), train_size=256,
                      validation_size=40, dqn=DQNSettings(learning_starts=10, buffer_size=200, batch_size=16))
    vec = make_vec_env(env_config(cfg), 1, seed=0)
    model = make_dqn(vec, cfg.dqn, seed=0)
    model.learn(cfg.total_timesteps)
    first = vec.reset()
    assert isinstance(first, np.ndarray)
    observations = [first[0]]
    for _ in range(30):
        action, _ = model.predict(observations[-1], deterministic=True)
        obs, _, _, _ = vec.step(np.array([action]))
        assert isinstance(obs, np.ndarray)
        observations.append(obs[0])
    obs_array = np.stack(observations).astype(np.float32)
    # add off-distribution observations too: exactness must not depend on where the inputs lie
    off_distribution = np.random.default_rng(0).uniform(-10, 10, (50, len(FEATURE_NAMES))).astype(np.float32)
    obs_array = np.concatenate([obs_array, off_distribution])
    expected = model.predict(obs_array, deterministic=True)[0]
    with torch.no_grad():
        q = model.q_net(torch.from_numpy(obs_array))
    top2 = q.topk(2, dim=1).values
    # the exported scheduler's argmax may differ from SB3's only where the two best Q-values tie
    clear = (top2[:, 0] - top2[:, 1]) > GreedyQ.TIE_TOLERANCE * q.abs().max(dim=1).values.clamp(min=1)
    spec = env_config(cfg)
    policy = export_policy(
        model, tmp_path / "policy.rlopt", spec.observation_spec(), spec.action_spec(),
        optimizer=cfg.optimizer, initial_lr=spec.initial_lr,
    )
    np.savez(tmp_path / "recorded.npz", obs=obs_array, actions=expected, clear=clear.numpy())
    vec.close()

    script = textwrap.dedent(f"""
        import sys
        sys.modules["gymnasium"] = None  # any import of them now fails
        sys.modules["stable_baselines3"] = None
        import numpy as np, torch
        from rlopt.scheduler import load_policy, LearnedScheduler
        policy = load_policy({str(policy)!r})
        assert (policy.optimizer, policy.initial_lr) == ("sgd", 0.1), (policy.optimizer, policy.initial_lr)
        rec = np.load({str(tmp_path / "recorded.npz")!r})
        sched = LearnedScheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), policy)
        got = np.array([sched.decide(torch.from_numpy(o)) for o in rec["obs"]])
        clear = rec["clear"]
        assert (got[clear] == rec["actions"][clear]).all(), (got.tolist(), rec["actions"].tolist())
        print("identical", int(clear.sum()))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    identical = int(result.stdout.split()[-1])
    assert identical >= 78  # of 81: near-ties are rare


# --------------------------------------------------------------------------------------------------
# The command line (tyro over TrainConfig)
# --------------------------------------------------------------------------------------------------


def _plain(text: str) -> str:
    """Help text without tyro's box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_help_shows_each_default_once_and_the_choices() -> None:
    result = run_cli(["--help"])
    assert result.returncode == 0, result.stderr
    text = _plain(result.stdout)
    assert not re.search(r"\(default: [^()]*\) \(default:", text), "a flag shows two defaults"
    assert "(default: None) (default" not in text
    for choices in ("{lr,rsgd,lr+rsgd}", "{sgd,momentum,adam,rsgd}", "{fixed,random}", "{default,paper}"):
        assert choices in text
    assert "--resume, --no-resume" in text
    assert f"--train-size INT training images the CNN learns from (Zhu et al.: 8,000 MNIST images). " \
        f"(default: {TaskSize.train_size})" in text
    assert "--dqn.learning-rate FLOAT" in text  # nested flags


def test_task_size_defaults_come_from_task_size() -> None:
    cfg = TrainConfig()
    assert (cfg.train_size, cfg.validation_size, cfg.episode_steps) == (
        TaskSize.train_size, TaskSize.validation_size, TaskSize.episode_steps,
    )
    assert cfg.batch_size is None and env_config(cfg).task_spec.batch_size == TaskSize.batch_size


def test_task_pools_lengths_and_starting_rates_reach_the_env() -> None:
    cfg = TrainConfig(task="train", episode_steps=200, max_episode_steps=2000, random_lr_init=True)
    ecfg = env_config(cfg)
    assert {t.split for t in ecfg.task_specs} == {"train"} and len(ecfg.task_specs) > 3
    assert (ecfg.max_episode_steps, ecfg.random_lr_init) == (2000, True)
    # --eval-lengths fixes the selection episodes' lengths, not the training episodes'
    selecting = TrainConfig(task="train", episode_steps=200, max_episode_steps=2000, eval_lengths=(250, 2000))
    assert env_config(selecting, held_out=True).episode_lengths == (250, 2000)
    assert env_config(selecting).episode_lengths is None and ecfg.episode_lengths is None
    # --clamp-bounds reaches training and selection alike (selection scores what deployment does)
    clamping = TrainConfig(optimizer="rsgd", control="lr+rsgd", clamp_bounds=True)
    assert env_config(clamping).clamp_bounds and env_config(clamping, held_out=True).clamp_bounds
    assert not ecfg.clamp_bounds
    with pytest.raises(ValueError, match="eval-lengths"):
        TrainConfig(eval_lengths=(250, 0))
    with pytest.raises(ValueError, match="multiple of the 2 --eval-lengths"):
        TrainConfig(eval_lengths=(250, 2000), eval_episodes=3)
    assert cfg.total_timesteps == round(cfg.episodes * (2000 - 200) / math.log(2000 / 200))
    with pytest.raises(ValueError, match="held-out"):
        TrainConfig(task="mnist-cnn,rotated-cnn")
    with pytest.raises(ValueError, match="composed outside the registry"):
        TrainConfig(task="mnist-cnn,digits0-4-mlp-relu")  # a task of the naming scheme, not of the registry
    with pytest.raises(ValueError, match="unknown task"):
        TrainConfig(task="mnist-cnn,imagenet-cnn")
    with pytest.raises(ValueError, match="max-episode-steps"):
        TrainConfig(episode_steps=300, max_episode_steps=200)


def test_starting_values_and_rewards_reach_the_env_and_survive_config_json(tmp_path: Path) -> None:
    cfg = parse_config(["--control", "rsgd", "--optimizer", "rsgd", "--task", "mnist-mlp", "--lr-init", "0.8",
                        "--reinforcement-init", "0.1", "--rewards.score-floor", "None",
                        "--rewards.too-low-penalty", "-0.1"])
    ecfg = env_config(cfg)
    assert (ecfg.lr_init, ecfg.reinforcement_init) == (0.8, 0.1)  # Γ control leaves the rate alone: any rate
    assert (ecfg.rewards.score_floor, ecfg.rewards.too_low_penalty) == (None, -0.1)
    assert ecfg.action_spec(ecfg.task_spec).reinforcement_init == 0.1
    cfg.save(tmp_path / "config.json")
    assert TrainConfig.load(tmp_path / "config.json") == cfg
    with pytest.raises(ValueError, match="unknown reward settings"):
        TrainConfig.from_dict({"rewards": {"no_such": 1}})
    # a config.json written before these settings existed still loads, with their defaults
    old = cfg.to_dict()
    for key in ("lr_init", "reinforcement_init", "rewards"):
        old.pop(key)
    assert TrainConfig.from_dict(old).rewards == TrainConfig().rewards


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--control", "foo"], "invalid choice 'foo' for argument '--control'"),
        (["--optimizer", "sgdd"], "--optimizer"),
        (["--start", "sometimes"], "--start"),
        (["--preset", "fast"], "--preset"),
        (["--episodes", "many"], "--episodes"),
        (["--no-such-flag"], "--no-such-flag"),
        (["--control", "rsgd"], "--control rsgd changes R-SGD's Γ: it needs --optimizer rsgd"),
        (["--dqn.gamma", "2"], "--dqn.gamma must lie in [0, 1]"),
        (["--eval-every", "-1"], "--eval-every must be >= 0"),
        (["--lr-init", "0"], "--lr-init must be a positive finite rate"),
        (["--lr-init", "0.8"], "--lr-init 0.8 lies outside sgd's lr bounds [0.001, 0.5]"),
        (["--reinforcement-init", "1"], "--reinforcement-init must lie within [0.0, 0.999]"),
        (["--rewards.too-low-penalty", "1"], "too_low_penalty"),
    ],
)
def test_bad_values_are_one_line_errors_with_exit_2(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args, prog="train_agent.py") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train_agent.py: error: "), err
    assert expected in err


def test_booleans_have_a_no_form_and_nested_flags_parse() -> None:
    assert parse_config(["--resume"]).resume is True
    assert parse_config(["--resume", "--no-resume"]).resume is False
    cfg = parse_config(["--dqn.learning-rate", "0.01", "--dqn.net-arch", "8", "--data-dir", "somewhere"])
    assert (cfg.dqn.learning_rate, cfg.dqn.net_arch, cfg.data_dir) == (0.01, (8,), "somewhere")
    assert parse_config(["--data-dir", "None"]).data_dir is None

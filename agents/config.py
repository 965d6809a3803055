"""Every setting of an agent-training run, in one frozen dataclass; :mod:`agents.cli` parses it with tyro.

Each field's docstring is its ``--help`` text, each ``Literal`` its checked choices, and
:meth:`TrainConfig.__post_init__` rejects values that cannot run (``ValueError``, one line).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlopt.control import ActionSpec, ControlMode
from rlopt.rewards import RewardConfig
from rlopt.tasks import DEFAULT_TASK, TASK_SPLITS, OptimizerName, TaskSize, get_task, tasks_in
from rlopt.training import OPTIMIZER_PRESETS

StartMode = Literal["fixed", "random"]
PresetName = Literal["default", "paper"]


@dataclass(frozen=True)
class DQNSettings:
    """stable-baselines3 DQN hyperparameters chosen for an env whose step is a training step.

    SB3's defaults (buffer 1e6, target update 10,000 steps) suit Atari; Zhu et al. §4.3 use a replay
    buffer of 2,000 transitions and a target-network update every 100 steps, which we follow.
    """

    learning_rate: float = 1e-3
    """Adam step size of the Q-network."""
    buffer_size: int = 2000
    """replay buffer transitions (Zhu et al.: 2,000)."""
    target_update_interval: int = 100
    """environment steps between target-network copies (Zhu et al.: 100)."""
    learning_starts: int = 500
    """random-action steps collected before the first gradient step (two episodes)."""
    batch_size: int = 64
    """transitions per Q-network update."""
    gamma: float = 0.99
    """discount; 0.99 looks about 100 steps ahead: a raised rate pays off over many steps."""
    train_freq: int = 1
    """environment steps between Q-network updates."""
    n_steps: int = 5
    """n-step returns: one rate change acts over many steps, each step's reward alone is mostly noise."""
    gradient_steps: int = 1
    """Q-network updates each time."""
    exploration_fraction: float = 0.4
    """fraction of the run over which ε falls from 1 to its final value."""
    exploration_final_eps: float = 0.02
    """final ε of the ε-greedy policy."""
    net_arch: tuple[int, ...] = (64, 64)
    """hidden layers of the Q-network."""

    def __post_init__(self) -> None:
        positive = ("buffer_size", "target_update_interval", "batch_size", "train_freq", "n_steps", "gradient_steps")
        for name in positive:
            _require(getattr(self, name) >= 1, f"--dqn.{_flag(name)} must be >= 1, got {getattr(self, name)}")
        _require(self.learning_starts >= 0, f"--dqn.learning-starts must be >= 0, got {self.learning_starts}")
        _require(self.learning_rate > 0, f"--dqn.learning-rate must be > 0, got {self.learning_rate}")
        for name in ("gamma", "exploration_fraction", "exploration_final_eps"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"--dqn.{_flag(name)} must lie in [0, 1], got {value}")
        _require(
            len(self.net_arch) >= 1 and all(width >= 1 for width in self.net_arch),
            f"--dqn.net-arch needs one or more layer widths >= 1, got {list(self.net_arch)}",
        )


@dataclass(frozen=True)
class TrainConfig:
    """One agent-training run. Each field is a ``--flag`` of ``train_agent.py``."""

    control: ControlMode = "lr"
    """what the agent changes: lr (learning rate), rsgd (R-SGD reinforcement Γ) or lr+rsgd (both)."""
    task: str = DEFAULT_TASK
    """the training task (rlopt.tasks.TASKS), several comma-separated, or a split (train): every episode
    draws one. Held-out tasks are refused."""
    optimizer: OptimizerName = "sgd"
    """the optimizer being controlled, whatever the task's (rsgd and lr+rsgd control need rsgd)."""
    episodes: int = 100
    """training budget in episodes (a budget of episodes × episode-steps environment steps)."""
    start: StartMode = "fixed"
    """fixed: the same initial CNN and batch order every episode; random: new ones each episode."""
    n_envs: int = 2
    """parallel environments (more than 1 runs them in worker processes)."""
    seed: int = 0
    """seeds the agent, the environments and every start point drawn during training."""
    device: str = "cpu"
    """where the CNN trains: cpu, cuda, cuda:N, mps or auto (the small Q-network always runs on the CPU)."""
    out: str = "runs/default"
    """output directory: policy.rlopt, checkpoints/, tb/, config.json."""
    resume: bool = False
    """continue the run in --out from its newest intact checkpoint; flags not given keep their saved values."""
    preset: PresetName = "default"
    """default (minutes on 2 CPU cores) or paper (Zhu et al. §4.4: 800 episodes, random start)."""
    checkpoint_every: int = 2500
    """environment steps between checkpoints (model + replay buffer)."""
    keep_checkpoints: int = 3
    """newest checkpoints kept in OUT/checkpoints (older ones are deleted)."""
    eval_every: int = 5000
    """environment steps between greedy evaluations on held-out start points (0 disables); the exported
    policy is the evaluated agent with the lowest mean final validation loss."""
    eval_episodes: int = 6
    """held-out episodes per evaluation, the same ones every time; each costs a full episode of training."""
    eval_lengths: tuple[int, ...] | None = None
    """lengths of the held-out episodes, in turn (e.g. 250 1000 2000; --eval-episodes a multiple of their number):
    agents are then selected at the budgets they will run. None: drawn like the training episodes."""
    log_every: int = 10
    """environment steps between per-step TensorBoard records (lr, Γ, loss, reward tier)."""
    threads: int = 1
    """torch threads per environment process."""
    data_dir: str | None = None
    """a directory with an IDX dataset (train-images-idx3-ubyte[.gz] …) to train on instead of MNIST."""
    train_size: int = TaskSize.train_size
    """training images the CNN learns from (Zhu et al.: 8,000 MNIST images)."""
    validation_size: int = TaskSize.validation_size
    """held-out images scored at the end of every episode (from the dataset's validation split)."""
    episode_steps: int = TaskSize.episode_steps
    """training steps per episode (Zhu et al.: 250); the shortest episode when --max-episode-steps is set."""
    max_episode_steps: int | None = None
    """with it, every episode draws its length log-uniformly from [episode-steps, max-episode-steps]."""
    random_lr_init: bool = False
    """every episode starts from a rate drawn log-uniformly within the optimizer's lr bounds."""
    batch_size: int | None = None
    """mini-batch size; None takes the task's (Zhu et al.: 32)."""
    lr_init: float | None = None
    """every episode's starting learning rate; None takes the optimizer's preset (SGD 0.1, R-SGD 0.01, Adam
    0.001). With --control lr it must lie within the lr bounds; --random-lr-init replaces it."""
    reinforcement_init: float = ActionSpec.reinforcement_init
    """the R-SGD Γ every episode starts from when the agent controls Γ (--control rsgd or lr+rsgd)."""
    clamp_bounds: bool = False
    """an action past the lr or Γ bounds is clamped and the episode goes on, as a deployed scheduler does;
    off (the paper), it gets reward tier 1 and ends the episode."""
    decision_interval: int = 1
    """optimizer steps per agent decision: one environment step runs this many training steps and sums their
    rewards; the exported policy acts as often. Episode lengths stay in optimizer steps."""
    dqn: DQNSettings = field(default_factory=DQNSettings)
    """DQN hyperparameters (each a --dqn.FIELD flag)."""
    rewards: RewardConfig = field(default_factory=RewardConfig)
    """reward magnitudes (each a --rewards.FIELD flag; rlopt.rewards.RewardConfig)."""

    def __post_init__(self) -> None:
        if self.control != "lr" and self.optimizer != "rsgd":
            raise ValueError(f"--control {self.control} changes R-SGD's Γ: it needs --optimizer rsgd")
        for name in ("episodes", "n_envs", "checkpoint_every", "keep_checkpoints", "log_every", "threads",
                     "eval_episodes", "episode_steps", "validation_size", "decision_interval"):
            _require(getattr(self, name) >= 1, f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        _require(self.batch_size is None or self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        _require(self.eval_lengths is None or (len(self.eval_lengths) > 0 and min(self.eval_lengths) >= 1),
                 f"--eval-lengths must be one or more lengths >= 1, got {self.eval_lengths}")
        _require(self.eval_lengths is None or self.eval_episodes % len(self.eval_lengths) == 0,
                 f"--eval-episodes {self.eval_episodes} must be a multiple of the {len(self.eval_lengths or ())} "
                 "--eval-lengths, so every length weighs the same in the selection")
        _require(
            self.max_episode_steps is None or self.max_episode_steps >= self.episode_steps,
            f"--max-episode-steps {self.max_episode_steps} is below --episode-steps {self.episode_steps}",
        )
        names = [n.strip() for n in self.task.split(",") if n.strip()]
        refused = [n for n in names if n == "held-out" or (n not in TASK_SPLITS and get_task(n).split == "held-out")]
        _require(not refused, f"--task {self.task}: held-out tasks ({', '.join(t.name for t in tasks_in('held-out'))}, "
                              f"and every task composed outside the registry) are for evaluation only")
        _require(self.eval_every >= 0, f"--eval-every must be >= 0 (0 disables), got {self.eval_every}")
        batch = TaskSize.batch_size if self.batch_size is None else self.batch_size
        _require(
            self.train_size >= batch,
            f"--train-size {self.train_size} is smaller than one batch (--batch-size {batch})",
        )
        _require(self.out.strip() != "", "--out must name a directory")
        _require(self.lr_init is None or 0 < self.lr_init < math.inf,
                 f"--lr-init must be a positive finite rate, got {self.lr_init}")
        if self.lr_init is not None and self.control != "rsgd" and not self.random_lr_init:
            lo, hi = OPTIMIZER_PRESETS[self.optimizer].lr_bounds
            _require(lo <= self.lr_init <= hi, f"--lr-init {self.lr_init:g} lies outside {self.optimizer}'s lr bounds "
                     f"[{lo:g}, {hi:g}], which --control {self.control} keeps the rate within")
        lo, hi = ActionSpec.reinforcement_bounds
        _require(lo <= self.reinforcement_init <= hi,
                 f"--reinforcement-init must lie within [{lo}, {hi}], got {self.reinforcement_init}")

    @property
    def mean_episode_steps(self) -> float:
        """The expected episode length: ``episode_steps``, or the mean of the log-uniform range."""
        low, high = self.episode_steps, self.max_episode_steps
        if high is None or high == low:
            return float(low)
        return (high - low) / math.log(high / low)

    @property
    def total_timesteps(self) -> int:
        """Environment steps of the run: episodes × the mean episode length / the decision interval."""
        return round(self.episodes * self.mean_episode_steps / self.decision_interval)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict` (``config.json``); unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        values = dict(data)
        dqn = _known_fields(DQNSettings, values.pop("dqn", {}), "DQN")
        if "net_arch" in dqn:
            dqn["net_arch"] = tuple(dqn["net_arch"])
        rewards = _known_fields(RewardConfig, values.pop("rewards", {}), "reward")
        return cls(**values, dqn=DQNSettings(**dqn), rewards=RewardConfig(**rewards))

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read a ``config.json`` written by :meth:`save`; any problem is a one-line ``ValueError``."""
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return cls.from_dict(data)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable training config ({exc})") from exc

    def save(self, path: Path) -> None:
        """Write ``config.json`` atomically (a temporary file renamed over it)."""
        tmp = path.with_name(f"tmp_{path.name}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    def markdown_table(self) -> str:
        """Settings as a Markdown table, for TensorBoard's text tab."""
        rows = [f"|{k}|{v}|" for k, v in _flatten(self.to_dict()).items()]
        return "|setting|value|\n|-|-|\n" + "\n".join(rows)


#: presets differ only in these fields; explicit flags override them
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {"episodes": 800, "start": "random"},
}


def preset_config(name: str) -> TrainConfig:
    """The defaults of preset ``name``: :class:`TrainConfig` with the preset's fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {name!r}")
    return TrainConfig(preset=name, **PRESETS[name])  # type: ignore[arg-type]


def _known_fields(group: type, data: dict[str, Any], label: str) -> dict[str, Any]:
    """A copy of ``data``, the saved fields of the settings dataclass ``group``; unknown keys raise ``ValueError``."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(group)})
    if unknown:
        raise ValueError(f"unknown {label} settings {unknown}")
    return dict(data)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out

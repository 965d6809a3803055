"""Every setting of an agent-training run, in one dataclass parsed from the command line (CleanRL style)."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


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
    """n-step returns: one learning-rate change acts over many steps, and its effect on a single
    step's reward is small against the mini-batch noise."""
    gradient_steps: int = 1
    """Q-network updates each time."""
    exploration_fraction: float = 0.4
    """fraction of the run over which ε falls from 1 to its final value."""
    exploration_final_eps: float = 0.02
    """final ε of the ε-greedy policy."""
    net_arch: tuple[int, ...] = (64, 64)
    """hidden layers of the Q-network."""


@dataclass(frozen=True)
class TrainConfig:
    """One agent-training run. Each field is a ``--flag`` of ``train_agent.py``."""

    control: str = "lr"
    """what the agent changes: lr (learning rate), rsgd (R-SGD reinforcement Γ) or lr+rsgd (both)."""
    optimizer: str = "sgd"
    """the optimizer being controlled: sgd, adam or rsgd (rsgd and lr+rsgd control need rsgd)."""
    episodes: int = 100
    """training budget in episodes of 250 steps (a budget of episodes × 250 environment steps)."""
    start: str = "fixed"
    """fixed: the same initial CNN and batch order every episode; random: new ones each episode."""
    n_envs: int = 2
    """parallel environments (more than 1 runs them in worker processes)."""
    seed: int = 0
    """seeds the agent, the environments and every start point drawn during training."""
    device: str = "cpu"
    """where the CNN trains: cpu, cuda or auto (the small Q-network always runs on the CPU)."""
    out: str = "runs/default"
    """output directory: policy.rlopt, checkpoints/, tb/, config.json."""
    resume: bool = False
    """continue from the latest checkpoint in --out (model and replay buffer)."""
    preset: str = "default"
    """default (minutes on 2 CPU cores) or paper (Zhu et al. §4.4: 800 episodes, random start)."""
    checkpoint_every: int = 2500
    """environment steps between checkpoints (model + replay buffer)."""
    eval_every: int = 2000
    """environment steps between greedy evaluations on held-out start points (0 disables)."""
    eval_episodes: int = 3
    """held-out episodes per evaluation."""
    log_every: int = 10
    """environment steps between per-step TensorBoard records (lr, Γ, loss, reward tier)."""
    threads: int = 1
    """torch threads per environment process."""
    data_dir: str | None = None
    """a directory with an IDX dataset (train-images-idx3-ubyte[.gz] …) to train on instead of MNIST."""
    train_size: int = 8000
    """MNIST images the CNN trains on (Zhu et al.: 8,000)."""
    validation_size: int = 2000
    """held-out images scored at the end of every episode (from the dataset's validation split)."""
    episode_steps: int = 250
    """training steps per episode (Zhu et al.: 250)."""
    batch_size: int = 32
    """CNN mini-batch size (Zhu et al.: 32)."""
    dqn: DQNSettings = field(default_factory=DQNSettings)
    """DQN hyperparameters (each a --dqn.FIELD flag)."""

    def __post_init__(self) -> None:
        choices = {
            "control": ("lr", "rsgd", "lr+rsgd"),
            "optimizer": ("sgd", "adam", "rsgd"),
            "start": ("fixed", "random"),
            "preset": tuple(PRESETS),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.control != "lr" and self.optimizer != "rsgd":
            raise ValueError(f"--control {self.control} changes R-SGD's Γ: it needs --optimizer rsgd")
        for name in ("episodes", "n_envs", "checkpoint_every", "log_every", "threads", "episode_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    @property
    def total_timesteps(self) -> int:
        return self.episodes * self.episode_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def markdown_table(self) -> str:
        """Settings as a Markdown table, for TensorBoard's text tab."""
        rows = [f"|{k}|{v}|" for k, v in _flatten(self.to_dict()).items()]
        return "|setting|value|\n|-|-|\n" + "\n".join(rows)


#: presets differ only in these fields; explicit flags override them
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {"episodes": 800, "start": "random"},
}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _field_docs(cls: type) -> dict[str, str]:
    """Field docstrings (the string literal under each field) for --help."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in itertools.pairwise(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = str(nxt.value.value)
    return docs


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    for f in fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            _add_fields(parser, hint, f"{prefix}{f.name}.")  # type: ignore[arg-type]
            continue
        flag = "--" + prefix + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kwargs: dict[str, Any] = {"dest": prefix + f.name, "default": None}
        help_text = docs.get(f.name, "")
        if hint is bool:
            parser.add_argument(flag, action="store_true", help=help_text, **kwargs)
            continue
        origin = typing.get_origin(hint)
        if origin in (types.UnionType, typing.Union):  # X | None: parse as X
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
            origin = typing.get_origin(hint)
        if origin is tuple:
            kwargs.update(nargs="+", type=typing.get_args(hint)[0])
        else:
            kwargs["type"] = hint
        parser.add_argument(flag, help=f"{help_text} (default: {default})", **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_agent.py",
        description="Train a DQN agent that controls an optimizer's hyperparameters while a CNN learns "
        "MNIST, checkpoint it, log to TensorBoard and export the learned scheduler (DIR/policy.rlopt).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_fields(parser, TrainConfig)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Command line → :class:`TrainConfig`: preset values first, explicit flags on top."""
    args = vars(build_parser().parse_args(argv))
    preset = args.get("preset") or "default"
    if preset not in PRESETS:
        raise SystemExit(f"train_agent.py: --preset must be one of {sorted(PRESETS)}, got {preset!r}")
    top: dict[str, Any] = dict(PRESETS[preset])
    dqn: dict[str, Any] = {}
    for key, value in args.items():
        if value is None or value is False:
            continue
        if key.startswith("dqn."):
            dqn[key[4:]] = tuple(value) if isinstance(value, list) else value
        else:
            top[key] = value
    try:
        return TrainConfig(**top, dqn=DQNSettings(**dqn))
    except ValueError as exc:
        raise SystemExit(f"train_agent.py: {exc}") from None

"""CNN training on MNIST as a Gymnasium environment whose actions set the optimizer's hyperparameters."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from rlopt.control import ActionSpec, Controller, ControlMode, ObservationSpec
from rlopt.data import ImageData, TaskSplits, load_dataset, task_splits
from rlopt.models import MODEL_NAMES, ModelName, build_model, loss_function
from rlopt.rewards import EpisodeScore, RewardConfig, RewardTier, ends_episode
from rlopt.tasks import (
    DEFAULT_TASK,
    TASK_SPLITS,
    DatasetVariant,
    OptimizerName,
    Task,
    TaskSize,
    derive_dataset,
    get_task,
    tasks_in,
)
from rlopt.training import (
    OPTIMIZER_PRESETS,
    SELECTION_SEED_BASE,
    SELECTION_SEED_RANGE,
    TRAIN_SEED_RANGE,
    Trainer,
    build_seeded_model,
    make_optimizer,
    resolve_device,
)


@dataclass(frozen=True)
class EnvConfig:
    """Every setting of :class:`HyperparamControlEnv` (Zhu et al. §4 unless noted).

    Attributes:
        control: ``"lr"``, ``"rsgd"`` or ``"lr+rsgd"`` — what the actions change.
        task: the training task (:data:`rlopt.tasks.TASKS`): dataset variant, model, batch size and
            optimizer; ``optimizer``, ``batch_size`` and ``model`` override its values when given.
            Several comma-separated names, or a split name (``train``), make a pool: every episode
            draws one of them from ``np_random``.
        optimizer: ``"sgd"``, ``"momentum"``, ``"adam"`` or ``"rsgd"``; ``None`` takes the task's.
        start: ``"fixed"`` — the same initial network and batch order every episode (§4.3);
            ``"random"`` — new ones drawn from ``np_random`` each episode (§4.4).
        episode_steps: training steps per episode (250): the env truncates there, and it is the
            ``horizon`` of the ``step`` feature and of the rewards' "steps saved".
        max_episode_steps: with it, every episode draws its own length log-uniformly from
            ``[episode_steps, max_episode_steps]``; that length is then its truncation step and the
            horizon of its features and rewards.
        episode_lengths: the lengths of successive episodes, in turn, counted from the latest
            ``reset(seed=...)``; they replace the ``episode_steps`` / ``max_episode_steps`` draw. The
            model-selection episodes use it to score agents at fixed budgets (``--eval-lengths``).
        batch_size: mini-batch size; ``None`` takes the task's (32 for Zhu et al.'s).
        train_size: training images the network learns from (8000).
        validation_size: held-out images (from the dataset's validation split) evaluated at episode end.
        model: :data:`rlopt.models.MODEL_NAMES`; ``None`` takes the task's (Zhu et al.'s CNN).
        lr_init: starting learning rate; ``None`` takes the optimizer's preset (SGD/R-SGD 0.1). It
            must lie within the lr bounds.
        random_lr_init: every episode draws its starting rate log-uniformly within the lr bounds
            (``lr_init`` is then ignored).
        lr_bounds: allowed learning rates; ``None`` takes the optimizer's preset ([0.001, 0.5] for SGD).
        reinforcement_init: starting R-SGD Γ when the agent controls it.
        clamp_bounds: an action that would take a hyperparameter past its bounds is clamped to them
            and training goes on, as a deployed scheduler does; ``False`` (the paper) gives it reward
            tier 1 and ends the episode.
        decision_interval: optimizer steps per env step: the action is applied, then this many
            training steps run (fewer at the episode's end) and their rewards are summed. Episode
            lengths, the ``step`` feature and the rewards' horizon stay counted in optimizer steps.
        fixed_seed: seed of the network initialisation and batch order in the ``fixed`` start mode.
        held_out: draw random start points from the model-selection seed range (evaluation during
            training), which neither training nor evaluate.py's held-out seeds use.
        data_dir: a directory holding an IDX dataset to use instead of MNIST (``None``: MNIST); the
            task's dataset variant is derived from it.
        data_seed: which training/validation images are drawn from the dataset.
        rewards: reward magnitudes (:class:`rlopt.rewards.RewardConfig`).
    """

    control: ControlMode = "lr"
    task: str = DEFAULT_TASK
    optimizer: OptimizerName | None = None
    start: str = "fixed"
    episode_steps: int = TaskSize.episode_steps
    max_episode_steps: int | None = None
    episode_lengths: tuple[int, ...] | None = None
    batch_size: int | None = None
    train_size: int = TaskSize.train_size
    validation_size: int = TaskSize.validation_size
    model: ModelName | None = None
    lr_init: float | None = None
    random_lr_init: bool = False
    lr_bounds: tuple[float, float] | None = None
    reinforcement_init: float = ActionSpec.reinforcement_init
    clamp_bounds: bool = False
    decision_interval: int = 1
    fixed_seed: int = 0
    held_out: bool = False
    data_dir: str | None = None
    data_seed: int = 0
    rewards: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        if self.start not in ("fixed", "random"):
            raise ValueError(f"start must be 'fixed' or 'random', got {self.start!r}")
        if self.decision_interval < 1:
            raise ValueError(f"decision_interval must be >= 1, got {self.decision_interval}")
        if self.max_episode_steps is not None and self.max_episode_steps < self.episode_steps:
            raise ValueError(f"max_episode_steps {self.max_episode_steps} is below episode_steps {self.episode_steps}")
        if self.episode_lengths is not None and (not self.episode_lengths or min(self.episode_lengths) < 1):
            raise ValueError(f"episode_lengths must be one or more lengths >= 1, got {self.episode_lengths}")
        for task in self.task_specs:  # raises for an unknown task
            if task.optimizer not in OPTIMIZER_PRESETS:
                raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_PRESETS)}, got {task.optimizer!r}")
            if task.model not in MODEL_NAMES:
                raise ValueError(f"model must be one of {MODEL_NAMES}, got {task.model!r}")
            if self.control != "lr" and task.optimizer != "rsgd":
                raise ValueError(f"control {self.control!r} needs optimizer 'rsgd', got {task.optimizer!r}")
            TaskSize(self.train_size, self.validation_size, task.batch_size, self.episode_steps)  # validates them
            lo, hi = self.action_spec(task).lr_bounds
            if self.control != "rsgd" and not self.random_lr_init and not lo <= self.initial_lr_of(task) <= hi:
                raise ValueError(f"lr_init {self.initial_lr_of(task):g} lies outside the lr bounds [{lo:g}, {hi:g}]")

    @property
    def task_specs(self) -> tuple[Task, ...]:
        """The task pool as this configuration trains it: the registry's tasks with the overrides."""
        names = [n.strip() for n in self.task.split(",") if n.strip()]
        tasks = [t for name in names for t in (tasks_in(name) if name in TASK_SPLITS else (get_task(name),))]
        if not tasks:
            raise ValueError(f"task {self.task!r} names no task")
        return tuple(
            replace(
                task,
                optimizer=task.optimizer if self.optimizer is None else self.optimizer,
                batch_size=task.batch_size if self.batch_size is None else self.batch_size,
                model=task.model if self.model is None else self.model,
            )
            for task in tasks
        )

    @property
    def task_spec(self) -> Task:
        """The first task of the pool (the only one unless ``task`` names several)."""
        return self.task_specs[0]

    def initial_lr_of(self, task: Task) -> float:
        """The fixed starting rate of ``task``'s episodes: ``lr_init``, else its optimizer's preset."""
        return OPTIMIZER_PRESETS[task.optimizer].lr if self.lr_init is None else self.lr_init

    @property
    def initial_lr(self) -> float:
        return self.initial_lr_of(self.task_spec)

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(loss_window=self.rewards.loss_window, horizon=self.episode_steps)

    def action_spec(self, task: Task | None = None) -> ActionSpec:
        """What actions do on ``task`` (default: the first of the pool); the lr bounds are its optimizer's."""
        optimizer = (task or self.task_spec).optimizer
        bounds = OPTIMIZER_PRESETS[optimizer].lr_bounds if self.lr_bounds is None else self.lr_bounds
        return ActionSpec(mode=self.control, lr_bounds=bounds, reinforcement_init=self.reinforcement_init,
                          interval=self.decision_interval)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=8)
def _task_data(data_dir: str | None, dataset: DatasetVariant, train_size: int, validation_size: int,
               batch_size: int, data_seed: int) -> TaskSplits:
    """The training/validation images of one process, loaded once however many episodes or envs."""
    data = derive_dataset(load_dataset(data_dir), dataset)
    return task_splits(data, train_size, validation_size, seed=data_seed, batch_size=batch_size)


class HyperparamControlEnv(gym.Env[np.ndarray, np.int64]):
    """Train a CNN on MNIST one mini-batch per step while an agent sets the optimizer's hyperparameters.

    Zhu, Hayashi & Ohsawa, "Gradient Descent Optimization by Reinforcement Learning", §3-4.

    ## Action Space

    ``Discrete(3)`` for ``control="lr"`` (multiply the learning rate by 0.9, 1 or 1/0.9) and for
    ``control="rsgd"`` (multiply R-SGD's ``1 − Γ`` by 0.9, 1 or 1/0.9); ``Discrete(9)`` for
    ``control="lr+rsgd"``: action ``3·i + j`` applies lr factor ``i`` and ``1 − Γ`` factor ``j``.

    ## Observation Space

    ``Box(-10, 10, (19,), float32)``: the features of :mod:`rlopt.control` (table there and in
    README), computed after every training step by the same code the exported scheduler runs.

    ## Rewards

    The tiered reward of :mod:`rlopt.rewards` (defaults of :class:`rlopt.rewards.RewardConfig`):
    out of bounds (unless ``clamp_bounds``) or diverged −50 and the episode ends; the moving average
    of the loss fluctuating less than 10 % over 20 steps −0.5 (rate too low); above the minimum of the
    window's first half −0.2 (rate too high); at or below 0.02 +2, else a new minimum +20·ln(old min / new min), both
    × (1 + steps saved / episode_steps); otherwise 0. An action that changes a hyperparameter costs 0.1 more.

    ## Starting State

    ``reset`` draws, from ``np_random`` and in this order, the episode's task (when ``task`` names a
    pool), its length (with ``max_episode_steps``) and its starting rate (with ``random_lr_init``);
    it builds the network (``start="fixed"``: the same initialisation and batch order every
    episode; ``"random"``: new ones from ``np_random``), sets the starting hyperparameters (SGD lr 0.1
    unless drawn or set) and performs one training step with them (Algorithm 1), whose observation
    it returns.

    ## Episode End

    *Terminated*: a hyperparameter left its bounds (with ``clamp_bounds`` it is clamped instead), or
    the loss/parameters became NaN/inf.
    *Truncated*: after ``episode_steps`` training steps (250 by default; the env truncates itself,
    so ``gym.make(..., episode_steps=100)`` ends episodes at 100 and scores validation there), or when
    the summed reward falls below ``score_floor`` (Algorithm 1's ``score < score_0``; the score is not
    part of the state, so treating it as terminal would teach the agent that ending an episode stops the penalties).

    ## Info

    ``loss``, ``lr``, ``reinforcement`` (Γ), ``reward_tier`` (:class:`rlopt.rewards.RewardTier` value),
    ``step``, ``best_loss``, ``steps_to_threshold`` (−1 until reached), ``score``, ``task``,
    ``episode_steps`` (the episode's length) and, on the last step of an episode, ``val_loss`` and
    ``val_accuracy``.

    ## Arguments

    ``gym.make("rlopt/LRControl-v0", start="random", config=EnvConfig(...), data=..., device="cpu")``;
    keyword arguments override the fields of ``config``. ``data`` replaces MNIST with any
    :class:`rlopt.data.ImageData` (tests use a tiny in-memory one); its ``train`` split is trained
    on and its ``test`` split is the held-out validation data.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  (gymnasium's convention)

    def __init__(
        self,
        config: EnvConfig | None = None,
        *,
        data: ImageData | None = None,
        device: str | torch.device = "cpu",
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.config = replace(config or EnvConfig(), **overrides)
        self.device = resolve_device(device)
        cfg = self.config
        self._tasks = cfg.task_specs
        self._data = data
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for task in self._tasks:  # load (and check) every task's data before the first episode
            self._task_tensors(task)
        self._task = self._tasks[0]
        self._episode_steps = cfg.episode_steps
        self._episodes_since_seed = 0  # indexes episode_lengths
        # the episode's start point: (model seed, starting lr)
        self._start: tuple[int, float] = (cfg.fixed_seed, cfg.initial_lr_of(self._tasks[0]))
        self._obs_spec = self.config.observation_spec()
        self._action_spec = self.config.action_spec()
        self.observation_space = spaces.Box(
            -self._obs_spec.clip, self._obs_spec.clip, shape=(self._obs_spec.size,), dtype=np.float32
        )
        self.action_space = spaces.Discrete(self._action_spec.n_actions)
        self._fixed_init: dict[str, dict[str, torch.Tensor]] = {}
        self._trainer: Trainer | None = None
        self._controller: Controller | None = None

    def _task_tensors(self, task: Task) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training and validation images and labels of ``task``, on the env's device, made once."""
        key = f"{task.dataset}/{task.batch_size}"
        if key not in self._tensors:
            cfg = self.config
            if self._data is not None:
                train, validation = self._data.train, self._data.test
            else:
                splits = _task_data(cfg.data_dir, task.dataset, cfg.train_size, cfg.validation_size, task.batch_size,
                                    cfg.data_seed)
                train, validation = splits.train, splits.validation
            self._tensors[key] = (train.float_images().to(self.device), train.labels.to(self.device),
                                  validation.float_images().to(self.device), validation.labels.to(self.device))
        return self._tensors[key]

    @property
    def observation_spec(self) -> ObservationSpec:
        return self._obs_spec

    @property
    def action_spec(self) -> ActionSpec:
        return self._action_spec

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        cfg = self.config
        rng = self.np_random
        # the episode's task, length and starting rate are drawn first, in a fixed order
        task = self._task = self._tasks[int(rng.integers(len(self._tasks)))] if len(self._tasks) > 1 else self._tasks[0]
        self._action_spec = cfg.action_spec(task)
        self._episode_steps = cfg.episode_steps
        if seed is not None:
            self._episodes_since_seed = 0
        if cfg.episode_lengths:
            self._episode_steps = cfg.episode_lengths[self._episodes_since_seed % len(cfg.episode_lengths)]
        elif cfg.max_episode_steps is not None and cfg.max_episode_steps > cfg.episode_steps:
            low, high = math.log(cfg.episode_steps), math.log(cfg.max_episode_steps + 1)
            self._episode_steps = min(int(math.exp(rng.uniform(low, high))), cfg.max_episode_steps)
        self._episodes_since_seed += 1
        lr = cfg.initial_lr_of(task)
        if cfg.random_lr_init:
            lo, hi = self._action_spec.lr_bounds
            lr = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        self._train_x, self._train_y, self._val_x, self._val_y = self._task_tensors(task)
        if cfg.start == "fixed":
            model_seed = batch_seed = cfg.fixed_seed
            model = build_model(task.model)
            if task.model not in self._fixed_init:
                initial = build_seeded_model(task.model, model_seed).state_dict()
                self._fixed_init[task.model] = {k: v.clone() for k, v in initial.items()}
            model.load_state_dict(self._fixed_init[task.model])
        else:
            base, span = (SELECTION_SEED_BASE, SELECTION_SEED_RANGE) if cfg.held_out else (0, TRAIN_SEED_RANGE)
            model_seed, batch_seed = (base + int(s) for s in self.np_random.integers(0, span, 2))
            model = build_seeded_model(task.model, model_seed)
        model.to(self.device)
        self._start = (model_seed, lr)
        optimizer = make_optimizer(task.optimizer, model.parameters(), lr, seed=batch_seed)
        if self._controller is not None:
            self._controller.remove_hooks()  # the previous episode's optimizer is dropped
        self._controller = Controller(optimizer, self._obs_spec, self._action_spec, horizon=self._episode_steps)
        self._trainer = Trainer(
            model, optimizer, self._train_x, self._train_y,
            batch_size=task.batch_size, seed=batch_seed, device=self.device, loss_fn=loss_function(task.model),
        )
        self._steps_to_threshold = -1
        self._last_tier = RewardTier.NEUTRAL
        loss = self._trainer.train_step()  # Algorithm 1: one update with the initial hyperparameters
        self._obs = self._controller.observe(loss)
        self._loss = loss
        self._episode = EpisodeScore(cfg.rewards, self._episode_steps, self._judged_losses()[-1])
        return self._obs, self._get_info()

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._trainer is None or self._controller is None:
            raise RuntimeError("call reset() before step()")
        action = int(action)
        # decode raises ValueError for an action outside the space (cheaper than Discrete.contains)
        changes = self._action_spec.decode(action) != (1.0, 1.0)
        # clamped values are what a deployed scheduler trains with; unclamped, a bound hit ends the episode
        in_bounds = self._controller.act(action) or self.config.clamp_bounds
        episode = self._episode
        reward = episode.decision_cost(changes)
        terminated = truncated = False
        for _ in range(self._action_spec.interval):  # one optimizer step unless a decision interval is set
            step_reward, terminated = self._train_step(in_bounds)
            reward += step_reward
            # the episode's own length ends it (not a TimeLimit wrapper: the length is a setting of the env)
            truncated = not terminated and (episode.steps >= self._episode_steps or episode.below_floor(reward))
            if terminated or truncated:
                break
        episode.total += reward
        info = self._get_info()
        if terminated or truncated:
            result = self._trainer.evaluate(self._val_x, self._val_y)
            info["val_loss"] = result.loss if math.isfinite(result.loss) else float("nan")
            info["val_accuracy"] = result.accuracy
        # out of bounds nothing trained: a copy, so reset's and step's arrays are never one object
        obs = self._obs if in_bounds else self._obs.copy()
        return obs, float(reward), terminated, truncated, info

    def _train_step(self, in_bounds: bool) -> tuple[float, bool]:
        """One optimizer step (none when the action left the bounds) and its tiered reward; returns the
        reward and whether it ends the episode (tier 1)."""
        assert self._trainer is not None and self._controller is not None
        if in_bounds:
            loss = self._trainer.train_step()
            self._obs = self._controller.observe(loss)
            # a finite loss with non-finite parameters is divergence too (seen after the update)
            self._loss = loss if self._controller.params_finite else math.nan
        # the tiers judge the moving average (default) or the raw mini-batch losses (the paper)
        window = list(self._judged_losses())
        if in_bounds:
            window[-1] = window[-1] if math.isfinite(self._loss) else math.nan
        # out of bounds: the clamped values are never trained with, the episode ends on this window
        reward, tier = self._episode.step(window, in_bounds)
        self._last_tier = tier
        judged = window[-1]
        if in_bounds and self._steps_to_threshold < 0 and judged <= self.config.rewards.threshold_loss:
            self._steps_to_threshold = self._episode.steps
        return reward, ends_episode(tier)

    def _judged_losses(self) -> Sequence[float]:
        assert self._controller is not None
        if self.config.rewards.smoothed:
            return self._controller.smoothed_losses
        return self._controller.losses

    def _get_info(self) -> dict[str, Any]:
        assert self._controller is not None
        lr, reinforcement = self._controller.hyperparameters()
        return {
            "loss": self._loss,
            "lr": lr,
            "reinforcement": reinforcement,
            "reward_tier": int(self._last_tier),
            "step": self._episode.steps,
            "best_loss": self._episode.best,
            "steps_to_threshold": self._steps_to_threshold,
            "score": self._episode.total,
            "task": self._task.name,
            "episode_steps": self._episode_steps,
            "model_seed": self._start[0],
            "lr_init": self._start[1],
        }

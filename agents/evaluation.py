"""The evaluation engine behind ``evaluate.py``: learned schedulers vs baselines on held-out seeds.

For every held-out seed s = :data:`~rlopt.training.HELD_OUT_SEED_BASE` + i (i < ``seeds``; agent
training never draws these) and every method, one run:

1. the model initialised from s (:func:`~rlopt.training.build_seeded_model`) and the method's
   optimizer and hook (:mod:`agents.baselines`);
2. ``steps`` training steps of a :class:`~rlopt.training.Trainer` whose batch order is seeded by s,
   over the same training images as the training environment (``data.training.subset(train_size,
   seed=0)``), calling the hook after each step. Within a seed every method therefore starts from
   the same weights and sees the same batches in the same order (a *paired* comparison);
3. per step: the mini-batch loss, its EMA (``smoothing``), and the lr, R-SGD Γ (``reinforce_prob``,
   0 if absent) and momentum (``momentum``, 0 if absent) the step used;
4. at the end: the final model's loss on a fixed sample of the training subset (its first
   ``train_loss_size`` = 2000 images, the same for every run: ``final_train_loss`` is the model's
   loss, not a noisy mean of batch losses taken at earlier weights; 2000 rather than all 8000 keeps
   the evaluation of a run under a sixth of its training time), validation loss/accuracy on the held-out
   validation images (``data.validation.subset(validation_size, seed=0)``, as the environment
   scores episodes), test loss/accuracy on the dataset's test split (all 10,000 for MNIST), and
   optionally the flatness radius (:func:`flatness_radius`).

``steps_to_threshold`` is the first step whose smoothed loss is <= ``threshold_loss`` (0.02, Zhu et
al.'s threshold), or ``None`` — "not reached", written as ``null`` in JSON and an empty cell in CSV,
never as a number. A run whose loss becomes NaN/inf stops there (``diverged_at``); its losses are
``null``.

Outputs (:func:`write_outputs`): ``results.json``, ``results.csv``, ``curves.npz``,
``loss_curves.png``, ``traces.png``, ``steps_to_threshold.png``; :func:`format_table` is the text the
command line prints.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from agents.baselines import BASELINE_NAMES, BaselineSettings, LossEMA, Method, RunContext, resolve_method
from rlopt.data import ImageData, load_idx_dataset, load_mnist
from rlopt.models import quadratic_error
from rlopt.rewards import RewardConfig
from rlopt.training import (
    HELD_OUT_SEED_BASE,
    LossFn,
    Trainer,
    build_seeded_model,
    resolve_device,
    seed_everything,
)

__all__ = [
    "CSV_COLUMNS",
    "LOSS_FUNCTIONS",
    "EvaluationConfig",
    "EvaluationResult",
    "FlatnessSettings",
    "PreparedEvaluation",
    "RunRecord",
    "TaskData",
    "evaluate",
    "flatness_radius",
    "format_table",
    "held_out_seeds",
    "line_search_radius",
    "load_task_data",
    "paired_wins",
    "prepare",
    "run",
    "run_one",
    "summarize",
    "write_outputs",
]

#: the loss each model trains with: cross-entropy on logits, the R-SGD paper's quadratic error for
#: its sigmoid MLP
LOSS_FUNCTIONS: dict[str, LossFn] = {
    "cnn": nn.functional.cross_entropy,
    "mlp": quadratic_error,
    "mlp-relu": nn.functional.cross_entropy,
}


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlatnessSettings:
    """The flatness radius of Zhang et al. (2018), Eq. (11), and how its line search runs.

    r(w, δw, ε) = sup{r : |Î(w) − Î(w + r·δw)| <= ε}, δw a random isotropic unit direction in the
    space of *all* parameters, averaged over ``directions``. Î is the training loss (the model's own
    loss function) on the first ``subset_size`` images of the training subset, in eval mode — the
    training objective, as Zhang et al. measure it, on a fixed sample so every evaluation of Î is
    the same function.
    """

    epsilon: float = 0.05
    """ε, the allowed change of Î (Zhang et al. Table 1: 0.05)."""
    directions: int = 10
    """T, random unit directions per solution; they are seeded by the run's seed, so every method
    of a seed is probed along the same directions."""
    subset_size: int = 1000
    """training images Î is measured on (fewer if the training subset is smaller)."""
    initial_radius: float = 1.0
    """first radius the bracketing tries."""
    growth: float = 2.0
    """bracketing multiplies the radius by this until |ΔÎ| > ε."""
    max_radius: float = 1024.0
    """bracketing stops here: a direction still within ε at this radius counts as this radius."""
    rel_tolerance: float = 0.01
    """bisection stops when the bracket [lo, hi] satisfies hi − lo <= rel_tolerance·hi."""

    def __post_init__(self) -> None:
        if self.epsilon <= 0 or self.directions < 1 or self.subset_size < 1:
            raise ValueError("flatness needs epsilon > 0, directions >= 1 and subset_size >= 1")
        if not 0 < self.initial_radius <= self.max_radius or self.growth <= 1 or self.rel_tolerance <= 0:
            raise ValueError("flatness needs 0 < initial_radius <= max_radius, growth > 1, rel_tolerance > 0")


@dataclass(frozen=True)
class EvaluationConfig:
    """One evaluation; every field is recorded in results.json. ``evaluate.py`` sets most of them."""

    policies: tuple[str, ...] = ()
    """exported ``.rlopt`` learned schedulers to evaluate (each becomes method ``policy:PATH``)."""
    baselines: tuple[str, ...] = BASELINE_NAMES
    """baseline names (:data:`agents.baselines.BASELINE_NAMES`)."""
    seeds: int = 10
    """held-out seeds: HELD_OUT_SEED_BASE + 0 … seeds − 1."""
    steps: int = 2000
    """training steps per run (8 epochs of 8000 images at batch 32)."""
    model: str = "cnn"
    """``cnn`` (Zhu et al.'s CNN), ``mlp`` (sigmoid 784-100-200-10, quadratic error) or ``mlp-relu``."""
    data_dir: str | None = None
    """directory with an IDX dataset; ``None``: MNIST."""
    train_size: int = 8000
    """training images (``data.training.subset(train_size, seed=data_seed)``, the environment's)."""
    validation_size: int = 2000
    """validation images (``data.validation.subset(validation_size, seed=data_seed)``)."""
    batch_size: int = 32
    """mini-batch size (Zhu et al.: 32)."""
    train_loss_size: int = 2000
    """training images (the subset's first, a fixed random sample) ``final_train_loss`` is measured on."""
    data_seed: int = 0
    """which images the subsets draw (0: the training environment's)."""
    threshold_loss: float = RewardConfig().threshold_loss
    """smoothed training loss that counts as trained (Zhu et al.: 0.02)."""
    smoothing: float = 0.9
    """EMA constant β of the smoothed loss (an effective window of ~10 steps)."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto``."""
    threads: int | None = None
    """torch CPU threads (per worker); ``None`` leaves torch's default (one per worker when workers > 1)."""
    workers: int = 1
    """processes that train runs in parallel; results are identical for any number of workers."""
    flatness: bool = False
    """measure the flatness radius of every final solution."""
    flatness_settings: FlatnessSettings = field(default_factory=FlatnessSettings)
    """the flatness line search."""
    baseline_settings: BaselineSettings = field(default_factory=BaselineSettings)
    """learning rates, momentum, patience … of the baselines."""

    def __post_init__(self) -> None:
        if self.model not in LOSS_FUNCTIONS:
            raise ValueError(f"model must be one of {sorted(LOSS_FUNCTIONS)}, got {self.model!r}")
        for name in ("seeds", "steps", "train_size", "batch_size", "train_loss_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.validation_size < 0:
            raise ValueError(f"validation_size must be >= 0, got {self.validation_size}")
        if self.batch_size > self.train_size:
            raise ValueError(f"batch_size {self.batch_size} exceeds train_size {self.train_size}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not self.policies and not self.baselines:
            raise ValueError("nothing to evaluate: give at least one policy or baseline")

    @property
    def method_names(self) -> tuple[str, ...]:
        """Policies first, then baselines: the order of tables and plots."""
        return (*(f"policy:{p}" for p in self.policies), *self.baselines)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def held_out_seeds(n: int) -> list[int]:
    """The ``n`` evaluation seeds, outside the range agent training draws from."""
    return [HELD_OUT_SEED_BASE + i for i in range(n)]


# --------------------------------------------------------------------------------------------------
# Data and preparation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TaskData:
    """Float images and labels of the three splits, already on the evaluation device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_task_data(config: EvaluationConfig, device: torch.device, data: ImageData | None = None) -> TaskData:
    """The training/validation subsets the environment uses and the full test split.

    ``data`` replaces loading (MNIST or ``config.data_dir``) with an in-memory dataset.
    """
    if data is None:
        data = load_mnist(progress=False) if config.data_dir is None else load_idx_dataset(config.data_dir)
    if config.train_size > len(data.training) or config.validation_size > len(data.validation):
        raise ValueError(
            f"--train-size {config.train_size} / --validation-size {config.validation_size} exceed the "
            f"dataset's {len(data.training)} training / {len(data.validation)} validation images"
        )
    train = data.training.subset(config.train_size, seed=config.data_seed)
    validation = data.validation.subset(config.validation_size, seed=config.data_seed)
    return TaskData(
        train_x=train.float_images().to(device),
        train_y=train.labels.to(device),
        val_x=validation.float_images().to(device),
        val_y=validation.labels.to(device),
        test_x=data.test.float_images().to(device),
        test_y=data.test.labels.to(device),
    )


@dataclass(frozen=True, eq=False)
class PreparedEvaluation:
    """A checked configuration: its methods built, its data loaded. :func:`run` trains."""

    config: EvaluationConfig
    methods: tuple[Method, ...]
    data: TaskData
    device: torch.device


def prepare(config: EvaluationConfig, *, data: ImageData | None = None) -> PreparedEvaluation:
    """Check everything that can fail before any training: policies, baselines, device, data, model.

    Raises :class:`rlopt.scheduler.PolicyFileError` for an unusable policy file (corrupt, or an action
    mode its optimizer cannot take), :class:`rlopt.data.DataError` for unreadable data and
    ``ValueError``/``RuntimeError`` for impossible settings; each message is one line for the user.
    """
    device = resolve_device(config.device)
    methods = tuple(resolve_method(name, config.baseline_settings) for name in config.method_names)
    names = [m.name for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"methods named more than once: {', '.join(duplicates)}")
    task = load_task_data(config, device, data)
    model = build_seeded_model(config.model, 0).to(device)
    try:
        with torch.no_grad():
            model(task.train_x[: config.batch_size])
    except RuntimeError as exc:
        raise ValueError(
            f"model {config.model!r} cannot take images of shape {tuple(task.train_x.shape[1:])}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    return PreparedEvaluation(config=config, methods=methods, data=task, device=device)


# --------------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RunCurves:
    """Per-step traces of one run; steps after a divergence are NaN."""

    loss: np.ndarray
    """mini-batch loss of each step (at the weights the gradient was taken at)."""
    smoothed_loss: np.ndarray
    """its EMA."""
    lr: np.ndarray
    """learning rate of the step (first param group)."""
    gamma: np.ndarray
    """R-SGD reinforcement probability Γ the step used; 0 for other optimizers."""
    momentum: np.ndarray
    """momentum coefficient of the step (torch SGD's ``momentum``); 0 where absent (Adam, R-SGD)."""


@dataclass(frozen=True)
class RunRecord:
    """The metrics of one method on one seed: one row of results.csv."""

    method: str
    seed: int
    steps: int
    steps_to_threshold: int | None
    """first step with smoothed loss <= threshold; ``None``: not reached."""
    final_train_loss: float
    """loss of the final model on the first ``train_loss_size`` training images (NaN if diverged)."""
    final_train_accuracy: float
    final_smoothed_loss: float
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float
    wall_s: float
    """seconds of the training steps, hooks included (not the final evaluations, not flatness)."""
    diverged_at: int | None
    """the step whose loss was NaN/inf, where the run stopped; ``None``: it did not diverge."""
    flatness_radius: float | None = None
    """mean flatness radius over the directions; ``None`` unless measured."""
    flatness_radius_std: float | None = None
    curves: RunCurves | None = field(default=None, repr=False, compare=False)

    @property
    def reached(self) -> bool:
        return self.steps_to_threshold is not None

    def row(self) -> dict[str, Any]:
        """The record without its curves, plus ``reached`` and ``s_per_step``."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "curves"}
        done = self.diverged_at if self.diverged_at is not None else self.steps
        row["reached"] = self.reached
        row["s_per_step"] = self.wall_s / max(done, 1)
        return row


def _evaluation_loss(model: nn.Module, loss_fn: LossFn, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float(loss_fn(model(images), labels))


def line_search_radius(within: Callable[[float], bool], settings: FlatnessSettings) -> float:
    """sup{r : within(r)} by bracketing then bisection (``within(0)`` is taken as true).

    Bracketing multiplies r by ``growth`` from ``initial_radius`` until ``within(r)`` fails (or
    ``max_radius`` is passed, which is returned); bisection then narrows [lo, hi] with ``within(lo)``
    and not ``within(hi)`` to ``rel_tolerance`` and returns lo, the largest radius verified within
    ε. Where |ΔÎ| crosses ε more than once the result is a crossing inside the first failing bracket.
    """
    lo, hi = 0.0, settings.initial_radius
    while within(hi):
        if hi >= settings.max_radius:
            return settings.max_radius
        lo, hi = hi, min(hi * settings.growth, settings.max_radius)
    while hi - lo > settings.rel_tolerance * hi:
        mid = 0.5 * (lo + hi)
        if within(mid):
            lo = mid
        else:
            hi = mid
    return lo


@torch.no_grad()
def flatness_radius(
    model: nn.Module,
    loss_fn: LossFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: FlatnessSettings,
    *,
    seed: int,
) -> tuple[float, float]:
    """Mean and std over directions of Zhang et al.'s flatness radius, Eq. (11), at the model's weights.

    Each direction δw is a standard normal vector over all parameters scaled to unit norm (drawn on
    the CPU from ``seed``); Î is ``loss_fn`` on ``images``/``labels`` in eval mode. The weights are
    restored afterwards.
    """
    model.eval()
    params = [p for p in model.parameters()]
    origin = [p.detach().clone() for p in params]
    sizes = [p.numel() for p in params]
    generator = torch.Generator().manual_seed(seed)
    base_loss = _evaluation_loss(model, loss_fn, images, labels)
    radii: list[float] = []
    try:
        for _ in range(settings.directions):
            direction = torch.randn(sum(sizes), generator=generator, dtype=torch.float64)
            direction = (direction / direction.norm()).to(torch.float32)
            pieces = [
                piece.view_as(p).to(p.device) for piece, p in zip(direction.split(sizes), params, strict=True)
            ]

            def within(radius: float, pieces: list[torch.Tensor] = pieces) -> bool:
                for p, w, d in zip(params, origin, pieces, strict=True):
                    p.copy_(w + radius * d)  # copy_ keeps each parameter's memory format
                moved = _evaluation_loss(model, loss_fn, images, labels)
                return math.isfinite(moved) and abs(moved - base_loss) <= settings.epsilon

            radii.append(line_search_radius(within, settings))
    finally:
        for p, w in zip(params, origin, strict=True):
            p.copy_(w)
    return float(np.mean(radii)), float(np.std(radii))


def run_one(method: Method, seed: int, prepared: PreparedEvaluation) -> RunRecord:
    """Train one method from seed ``seed`` (start point and batch order) and measure it."""
    config, data = prepared.config, prepared.data
    loss_fn = LOSS_FUNCTIONS[config.model]
    seed_everything(seed)  # nothing below should draw from the global RNGs; if it does, it draws alike
    model = build_seeded_model(config.model, seed).to(prepared.device)
    context = RunContext(steps=config.steps, steps_per_epoch=len(data.train_y) // config.batch_size, seed=seed)
    optimizer, hook = method.build(model, context)
    trainer = Trainer(
        model, optimizer, data.train_x, data.train_y,
        batch_size=config.batch_size, seed=seed, loss_fn=loss_fn, device=prepared.device,
    )
    traces = {name: np.full(config.steps, np.nan) for name in ("loss", "smoothed_loss", "lr", "gamma", "momentum")}
    smoothed = LossEMA(config.smoothing)
    steps_to_threshold: int | None = None
    diverged_at: int | None = None
    group = optimizer.param_groups[0]
    start = time.perf_counter()
    for index in range(config.steps):
        loss = trainer.train_step()
        # read after the step: the values this step used (a hook changes them for the next one)
        traces["lr"][index] = float(group["lr"])
        traces["gamma"][index] = float(group.get("reinforce_prob", 0.0))
        traces["momentum"][index] = float(group.get("momentum", 0.0))
        if not math.isfinite(loss):
            diverged_at = index + 1
            break
        traces["loss"][index] = loss
        traces["smoothed_loss"][index] = smoothed.update(loss)
        if steps_to_threshold is None and traces["smoothed_loss"][index] <= config.threshold_loss:
            steps_to_threshold = index + 1
        hook(loss)
    wall_s = time.perf_counter() - start

    nan = float("nan")
    n_train_loss = min(config.train_loss_size, len(data.train_y))
    final_train = trainer.evaluate(data.train_x[:n_train_loss], data.train_y[:n_train_loss])
    val = trainer.evaluate(data.val_x, data.val_y) if len(data.val_y) else None
    test = trainer.evaluate(data.test_x, data.test_y)
    flat_mean: float | None = None
    flat_std: float | None = None
    if config.flatness and diverged_at is None and math.isfinite(final_train.loss):
        n = min(config.flatness_settings.subset_size, len(data.train_y))
        flat_mean, flat_std = flatness_radius(
            model, loss_fn, data.train_x[:n], data.train_y[:n], config.flatness_settings, seed=seed
        )
    last = traces["smoothed_loss"][~np.isnan(traces["smoothed_loss"])]
    return RunRecord(
        method=method.name,
        seed=seed,
        steps=config.steps,
        steps_to_threshold=steps_to_threshold,
        final_train_loss=final_train.loss if diverged_at is None else nan,
        final_train_accuracy=final_train.accuracy,
        final_smoothed_loss=float(last[-1]) if diverged_at is None and len(last) else nan,
        val_loss=val.loss if val is not None and diverged_at is None else nan,
        val_accuracy=val.accuracy if val is not None else nan,
        test_loss=test.loss if diverged_at is None else nan,
        test_accuracy=test.accuracy,
        wall_s=wall_s,
        diverged_at=diverged_at,
        flatness_radius=flat_mean,
        flatness_radius_std=flat_std,
        curves=RunCurves(**traces),
    )


# --------------------------------------------------------------------------------------------------
# All runs, summaries, paired wins
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Every run of an evaluation, in (seed, method) order, and what was evaluated."""

    config: EvaluationConfig
    methods: tuple[Method, ...]
    seeds: tuple[int, ...]
    records: tuple[RunRecord, ...]

    def record(self, method: str, seed: int) -> RunRecord:
        for r in self.records:
            if r.method == method and r.seed == seed:
                return r
        raise KeyError(f"no run of {method!r} on seed {seed}")

    def of_method(self, method: str) -> list[RunRecord]:
        """The method's runs in seed order."""
        return [self.record(method, s) for s in self.seeds]

    @property
    def baseline_names(self) -> list[str]:
        return [m.name for m in self.methods if m.kind == "baseline"]


_WORKER: PreparedEvaluation | None = None


def _init_worker(config: EvaluationConfig, data: ImageData | None) -> None:
    global _WORKER
    torch.set_num_threads(config.threads or 1)
    _WORKER = prepare(config, data=data)


def _run_in_worker(method_index: int, seed: int) -> RunRecord:
    assert _WORKER is not None
    return run_one(_WORKER.methods[method_index], seed, _WORKER)


def run(
    prepared: PreparedEvaluation, *, progress: bool = True, data: ImageData | None = None
) -> EvaluationResult:
    """All method × seed runs, seed by seed (each seed's methods back to back), with a progress bar.

    With ``config.workers > 1`` the runs are spread over that many processes (``spawn``ed, each
    preparing its own copy of the data; pass the same ``data`` given to :func:`prepare`, if any).
    Every run is seeded by itself, so the records do not depend on the number of workers.
    """
    config = prepared.config
    seeds = held_out_seeds(config.seeds)
    tasks = [(i, seed) for seed in seeds for i in range(len(prepared.methods))]
    records: list[RunRecord] = []
    with tqdm(total=len(tasks), desc="evaluate", unit="run", disable=not progress) as bar:
        if config.workers == 1:
            if config.threads is not None:
                torch.set_num_threads(config.threads)
            for i, seed in tasks:
                bar.set_postfix_str(f"seed {seeds.index(seed) + 1}/{len(seeds)} {prepared.methods[i].name}")
                records.append(run_one(prepared.methods[i], seed, prepared))
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(config.workers, mp_context=context, initializer=_init_worker,
                                     initargs=(config, data)) as pool:
                futures = [pool.submit(_run_in_worker, i, seed) for i, seed in tasks]
                for future in as_completed(futures):
                    future.result()  # surface a failed run now
                    bar.update()
                records = [future.result() for future in futures]
    return EvaluationResult(config=config, methods=prepared.methods, seeds=tuple(seeds), records=tuple(records))


#: RunRecord fields summarised as mean ± std per method
SUMMARY_METRICS: tuple[str, ...] = (
    "final_train_loss",
    "final_train_accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "wall_s",
    "flatness_radius",
)


def _mean_std(values: Sequence[float | int | None]) -> dict[str, float | int | None]:
    """Mean, sample std (ddof=1; 0 for one value) and count of the finite values; None if none."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(finite):
        return {"mean": None, "std": None, "n": 0}
    std = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": float(finite.mean()), "std": std, "n": len(finite)}


def _better(a: float | None, b: float | None, *, higher: bool) -> bool:
    """Strictly better; None/NaN is the worst value (a tie between two worst values is no win)."""
    worst = -math.inf if higher else math.inf
    a_val = a if a is not None and math.isfinite(a) else worst
    b_val = b if b is not None and math.isfinite(b) else worst
    return a_val > b_val if higher else a_val < b_val


def paired_wins(result: EvaluationResult, method: str, baseline: str) -> dict[str, int]:
    """Seeds on which ``method`` beats ``baseline``: lower final training loss, higher test accuracy,
    fewer steps to the threshold (not reached counts as worse than any number; both not reached is a
    tie). Ties are no win; a diverged run's NaN loss is worse than any number. ``seeds`` is the number
    of pairs compared."""
    wins = {"final_train_loss": 0, "test_accuracy": 0, "steps_to_threshold": 0, "seeds": len(result.seeds)}
    for seed in result.seeds:
        a, b = result.record(method, seed), result.record(baseline, seed)
        wins["final_train_loss"] += _better(a.final_train_loss, b.final_train_loss, higher=False)
        wins["test_accuracy"] += _better(a.test_accuracy, b.test_accuracy, higher=True)
        a_steps = None if a.steps_to_threshold is None else float(a.steps_to_threshold)
        b_steps = None if b.steps_to_threshold is None else float(b.steps_to_threshold)
        wins["steps_to_threshold"] += _better(a_steps, b_steps, higher=False)
    return wins


def summarize(result: EvaluationResult) -> dict[str, dict[str, Any]]:
    """Per method: mean ± std of every metric, steps to threshold over the runs that reached it
    (with ``reached`` k of ``runs``), divergences, and paired wins against every other baseline."""
    summary: dict[str, dict[str, Any]] = {}
    for method in result.methods:
        records = result.of_method(method.name)
        entry: dict[str, Any] = {
            "kind": method.kind,
            "description": method.description,
            "runs": len(records),
            "reached": sum(r.reached for r in records),
            "steps_to_threshold": _mean_std([r.steps_to_threshold for r in records]),
            "diverged": sum(r.diverged_at is not None for r in records),
        }
        for metric in SUMMARY_METRICS:
            entry[metric] = _mean_std([getattr(r, metric) for r in records])
        entry["wins"] = {
            b: paired_wins(result, method.name, b) for b in result.baseline_names if b != method.name
        }
        summary[method.name] = entry
    return summary


# --------------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------------


def _pm(stat: dict[str, Any], digits: int, *, scale: float = 1.0) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_table(result: EvaluationResult, summary: dict[str, dict[str, Any]] | None = None) -> str:
    """Plain-text tables: mean ± std per method, then paired wins against each baseline."""
    summary = summary or summarize(result)
    config = result.config
    n = len(result.seeds)
    threshold = f"{config.threshold_loss:g}"
    header = ["method", "reached", f"steps to {threshold}", "final train loss", "val acc %", "test loss",
              "test acc %", "wall s"]
    if config.flatness:
        header.append("flatness r")
    rows = []
    for name, entry in summary.items():
        steps = _pm(entry["steps_to_threshold"], 0) if entry["reached"] else "not reached"
        row = [
            name,
            f"{entry['reached']}/{entry['runs']}",
            steps,
            _pm(entry["final_train_loss"], 4),
            _pm(entry["val_accuracy"], 2, scale=100),
            _pm(entry["test_loss"], 4),
            _pm(entry["test_accuracy"], 2, scale=100),
            _pm(entry["wall_s"], 1),
        ]
        if config.flatness:
            row.append(_pm(entry["flatness_radius"], 2))
        rows.append(row)
    diverged = [f"{name} ({e['diverged']})" for name, e in summary.items() if e["diverged"]]
    lines = [
        f"{n} held-out seeds × {config.steps} steps, {config.model}, batch {config.batch_size}, "
        f"{config.train_size} training images; mean ± std over seeds (steps to {threshold}: over the runs "
        f"that reached a smoothed training loss <= {threshold})",
        "",
        *_aligned(header, rows),
    ]
    if diverged:
        lines += ["", "diverged runs (stopped at a NaN/inf loss): " + ", ".join(diverged)]
    baselines = result.baseline_names
    if baselines:
        win_header = ["method", *(f"vs {b}" for b in baselines)]
        win_rows = []
        for name, entry in summary.items():
            cells = [name]
            for b in baselines:
                w = entry["wins"].get(b)
                cells.append("—" if w is None else
                             f"{w['final_train_loss']}/{w['test_accuracy']}/{w['steps_to_threshold']}")
            win_rows.append(cells)
        lines += [
            "",
            f"paired wins out of {n} seeds: lower final train loss / higher test accuracy / fewer steps "
            f"to {threshold} (not reached loses)",
            "",
            *_aligned(win_header, win_rows),
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------

#: results.csv columns, one row per method × seed. An empty cell is None or NaN: steps_to_threshold
#: not reached, diverged_at did not diverge, flatness not measured, a loss of a diverged run.
#: ``reached`` is True/False; ``s_per_step`` is wall_s over the steps actually run.
CSV_COLUMNS: tuple[str, ...] = (
    "method",
    "seed",
    "steps",
    "reached",
    "steps_to_threshold",
    "final_train_loss",
    "final_train_accuracy",
    "final_smoothed_loss",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "wall_s",
    "s_per_step",
    "diverged_at",
    "flatness_radius",
    "flatness_radius_std",
)


def _jsonable(value: Any) -> Any:
    """NaN/inf → None (JSON has no NaN), NumPy scalars → Python, tuples → lists, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_outputs(
    result: EvaluationResult, out: str | os.PathLike[str], summary: dict[str, dict[str, Any]] | None = None
) -> dict[str, Path]:
    """Write results.json, results.csv, curves.npz and the three PNGs into ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary or summarize(result)
    rows = [r.row() for r in result.records]
    paths = {
        "json": out / "results.json",
        "csv": out / "results.csv",
        "curves": out / "curves.npz",
        "loss_curves": out / "loss_curves.png",
        "traces": out / "traces.png",
        "steps_to_threshold": out / "steps_to_threshold.png",
    }
    payload = {
        "config": result.config.to_dict(),
        "seeds": list(result.seeds),
        "methods": [{"name": m.name, "kind": m.kind, "description": m.description} for m in result.methods],
        "rows": rows,
        "summary": summary,
        "files": {k: p.name for k, p in paths.items()},
    }
    paths["json"].write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                             for k, v in row.items()})
    curves = _curve_arrays(result)
    arrays: dict[str, Any] = {
        "methods": np.array([m.name for m in result.methods]),
        "seeds": np.array(result.seeds, dtype=np.int64),
        **curves,
    }
    np.savez_compressed(paths["curves"], **arrays)
    _plot_loss_curves(result, curves, paths["loss_curves"])
    _plot_traces(result, curves, paths["traces"])
    _plot_steps_to_threshold(result, summary, paths["steps_to_threshold"])
    return paths


def _curve_arrays(result: EvaluationResult) -> dict[str, np.ndarray]:
    """Each trace as an array [method, seed, step] (the layout of curves.npz)."""
    arrays: dict[str, np.ndarray] = {}
    for name in ("loss", "smoothed_loss", "lr", "gamma", "momentum"):
        arrays[name] = np.stack([
            np.stack([getattr(r.curves, name) for r in result.of_method(m.name)]) for m in result.methods
        ])
    return arrays


def _band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds (axis 0), ignoring NaN (diverged tails)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN columns after divergence
        return np.nanmean(values, axis=0), np.nanmin(values, axis=0), np.nanmax(values, axis=0)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_loss_curves(result: EvaluationResult, curves: dict[str, np.ndarray], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 5.5))
    steps = np.arange(1, result.config.steps + 1)
    for i, method in enumerate(result.methods):
        mean, low, high = _band(curves["smoothed_loss"][i])
        (line,) = ax.plot(steps, mean, label=method.name, linewidth=1.2)
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.axhline(result.config.threshold_loss, color="black", linestyle="--", linewidth=0.8,
               label=f"threshold {result.config.threshold_loss:g}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"smoothed training loss (EMA β={result.config.smoothing:g})")
    ax.set_title(f"mean and min–max over {len(result.seeds)} held-out seeds")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_traces(result: EvaluationResult, curves: dict[str, np.ndarray], path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    steps = np.arange(1, result.config.steps + 1)
    panels = (("lr", "learning rate", True), ("gamma", "R-SGD Γ", False), ("momentum", "momentum ρ", False))
    for ax, (key, label, log) in zip(axes, panels, strict=True):
        for i, method in enumerate(result.methods):
            mean, low, high = _band(curves[key][i])
            (line,) = ax.plot(steps, mean, label=method.name, linewidth=1.2)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title(f"hyperparameters per step: mean and min–max over {len(result.seeds)} seeds")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1].set_xlabel("training step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_steps_to_threshold(result: EvaluationResult, summary: dict[str, dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(result.methods)), 5))
    positions, data = [], []
    for i, method in enumerate(result.methods, start=1):
        reached = [r.steps_to_threshold for r in result.of_method(method.name) if r.steps_to_threshold is not None]
        if reached:
            positions.append(i)
            data.append(reached)
        else:
            ax.text(i, 0.5, "not reached", transform=ax.get_xaxis_transform(), ha="center", va="center",
                    rotation=90, color="gray")
    if data:
        ax.boxplot(data, positions=positions, widths=0.5)
    labels = [f"{m.name}\nreached {summary[m.name]['reached']}/{summary[m.name]['runs']}" for m in result.methods]
    ax.set_xticks(range(1, len(result.methods) + 1))
    ax.set_xticklabels(labels, fontsize=8, rotation=20, ha="right")
    ax.set_xlim(0.5, len(result.methods) + 0.5)
    if not data:
        ax.set_ylim(0, result.config.steps)
    ax.set_ylabel(f"steps to smoothed loss <= {result.config.threshold_loss:g}")
    ax.set_title(f"steps to threshold over the runs that reached it ({result.config.steps} steps per run)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------------------------------


def evaluate(
    config: EvaluationConfig,
    out: str | os.PathLike[str] | None = None,
    *,
    data: ImageData | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """:func:`prepare`, :func:`run` and, if ``out`` is given, :func:`write_outputs`."""
    result = run(prepare(config, data=data), progress=progress, data=data)
    if out is not None:
        write_outputs(result, out)
    return result

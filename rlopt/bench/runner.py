"""Running the benchmark: its settings, the data, one run, and all runs over a pool of processes.

For every held-out seed s = :data:`~rlopt.training.HELD_OUT_SEED_BASE` + i (i < ``seeds``; agent
training never draws these) and every method, one run:

1. the model initialised from s (:func:`~rlopt.training.build_seeded_model`) and the method's
   optimizer and hook (:mod:`rlopt.bench.methods`);
2. ``steps`` training steps of a :class:`~rlopt.training.Trainer` whose batch order is seeded by s,
   over the task's training images (:func:`rlopt.data.task_splits` with ``data_seed``, as the training
   environment draws them), calling the hook after each step. Within a seed every method therefore
   starts from the same weights and sees the same batches in the same order (a *paired* comparison);
3. per step: the mini-batch loss, its EMA (``smoothing``), and the lr, reinforcement Γ
   (:func:`rlopt.control.reinforcement_of`, 0 without one) and momentum (0 where absent) the step used;
4. at the end: the final model's loss on a fixed sample of the training subset (its first
   ``train_loss_size`` images, the same for every run: ``final_train_loss`` is the model's loss,
   not a noisy mean of batch losses taken at earlier weights), validation loss/accuracy on the
   held-out validation images, test loss/accuracy on the dataset's test split, and optionally the
   flatness radius (:func:`rlopt.bench.flatness.flatness_radius`).

``steps_to_threshold`` is the first step whose smoothed loss is <= ``threshold_loss``, or ``None``:
"not reached". A run whose loss becomes NaN/inf stops there (``diverged_at``).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

import numpy as np
import torch
import tyro
from tqdm.auto import tqdm

from rlopt.bench.flatness import FlatnessSettings, flatness_radius
from rlopt.bench.methods import (
    BASELINE_NAMES,
    BaselineName,
    BaselineSettings,
    Method,
    RunContext,
    parse_baseline_names,
    resolve_method,
)
from rlopt.control import ObservationSpec, ema_update, reinforcement_of
from rlopt.data import ImageData, load_dataset, task_splits
from rlopt.models import MODEL_NAMES, ModelName, loss_function
from rlopt.rewards import RewardConfig
from rlopt.tasks import TaskSize
from rlopt.training import HELD_OUT_SEED_BASE, Trainer, build_seeded_model, resolve_device, seed_everything

__all__ = [
    "DEVICES",
    "TRACE_NAMES",
    "Device",
    "EvaluationConfig",
    "EvaluationResult",
    "PreparedEvaluation",
    "RunCurves",
    "RunRecord",
    "TaskData",
    "evaluate",
    "held_out_seeds",
    "load_task_data",
    "prepare",
    "run",
    "run_one",
]

#: where runs train: ``auto`` takes CUDA when available
Device = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[Device, ...] = get_args(Device)

#: ``--baselines`` takes names separated by commas or spaces, or ``none``
_BASELINES_ARGUMENT = tyro.constructors.PrimitiveConstructorSpec(
    nargs="*",
    metavar="NAME[,NAME…]",
    instance_from_str=parse_baseline_names,
    is_instance=lambda value: isinstance(value, tuple),
    str_from_instance=lambda names: [",".join(names) or "none"],
)


@dataclass(frozen=True)
class EvaluationConfig:
    """What the benchmark compares, on which task, for how long; every field is recorded in results.json.

    Train a fresh model with every method (exported learned schedulers and baselines) on held-out
    seeds that agent training never draws, and compare them. Within a seed every method starts from
    the same initial weights and sees the same batches in the same order (paired comparison).
    """

    policies: Annotated[
        tuple[str, ...], tyro.conf.arg(name="policy", metavar="PATH"), tyro.conf.UseAppendAction
    ] = ()
    """an exported learned scheduler (.rlopt), run on the optimizer and lr its file declares; repeat for several."""
    baselines: Annotated[
        tuple[BaselineName, ...],
        _BASELINES_ARGUMENT,
        tyro.conf.arg(help=f"baselines, comma- or space-separated, from {', '.join(BASELINE_NAMES)}; none for none."),
    ] = BASELINE_NAMES
    """the baselines to run (names of rlopt.bench.methods.BASELINE_NAMES)."""
    seeds: int = 10
    """held-out seeds (start point and batch order) per method: HELD_OUT_SEED_BASE + 0 … seeds − 1."""
    steps: int = 2000
    """training steps per run (8 epochs of 8000 images at batch 32)."""
    model: ModelName = "cnn"
    """cnn: Zhu et al.'s CNN; mlp: the R-SGD paper's sigmoid MLP, quadratic error; mlp-relu: ReLU, cross-entropy."""
    data_dir: Annotated[str | None, tyro.conf.arg(metavar="DIR")] = None
    """a directory with an IDX dataset (train-images-idx3-ubyte[.gz] …); None: MNIST."""
    train_size: int = TaskSize.train_size
    """training images (the training environment's subset)."""
    validation_size: int = TaskSize.validation_size
    """held-out validation images scored at the end of each run."""
    batch_size: int = TaskSize.batch_size
    """mini-batch size."""
    train_loss_size: int = 2000
    """training images (the subset's first) the final training loss is measured on."""
    data_seed: int = 0
    """which images the subsets draw (0: the training environment's)."""
    threshold_loss: float = RewardConfig.threshold_loss
    """smoothed training loss that counts as trained (Zhu et al.: 0.02)."""
    smoothing: float = ObservationSpec.loss_smoothing
    """EMA constant β of the smoothed training loss."""
    device: Device = "cpu"
    """where runs train; auto: CUDA when available."""
    threads: Annotated[int | None, tyro.conf.arg(metavar="N")] = None
    """torch CPU threads per worker; None: torch's choice (one per worker when workers > 1)."""
    workers: int = 1
    """processes that train runs in parallel; results do not depend on it."""
    flatness: bool = False
    """measure the flatness radius (Zhang et al. Eq. (11)) of each final solution."""
    flatness_settings: FlatnessSettings = field(default_factory=FlatnessSettings)
    """the flatness line search."""
    baseline_settings: BaselineSettings = field(default_factory=BaselineSettings)
    """learning rates, momentum, patience … of the baselines."""

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}, got {self.model!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        unknown = [name for name in self.baselines if name not in BASELINE_NAMES]
        if unknown:
            parse_baseline_names(unknown)  # raises the one message for unknown names
        for name in ("seeds", "steps", "train_size", "batch_size", "train_loss_size", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.validation_size < 0:
            raise ValueError(f"validation_size must be >= 0, got {self.validation_size}")
        if self.train_size < self.batch_size:
            raise ValueError(
                f"train_size {self.train_size} is smaller than one batch of {self.batch_size} (batch_size)"
            )
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
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


def _num_classes(config: EvaluationConfig, data: ImageData) -> int:
    """The classes the model predicts, read off its output on a few training images.

    Raises ``ValueError`` (one line) if the model cannot take the dataset's images.
    """
    model = build_seeded_model(config.model, 0)
    probe = data.training.take(0, min(config.batch_size, len(data.training))).float_images()
    try:
        with torch.no_grad():
            return int(model(probe).shape[-1])
    except RuntimeError as exc:
        raise ValueError(
            f"model {config.model!r} cannot take images of shape {tuple(probe.shape[1:])}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def load_task_data(config: EvaluationConfig, device: torch.device, data: ImageData | None = None) -> TaskData:
    """The task's training/validation subsets and the full test split, as float tensors on ``device``.

    ``data`` replaces loading (MNIST or ``config.data_dir``) with an in-memory dataset. Sizes that do
    not fit the data, and labels outside the model's classes, raise :class:`rlopt.data.DataError`.
    """
    if data is None:
        data = load_dataset(config.data_dir)
    splits = task_splits(
        data,
        config.train_size,
        config.validation_size,
        seed=config.data_seed,
        num_classes=_num_classes(config, data),
        batch_size=config.batch_size,
    )
    return TaskData(
        train_x=splits.train.float_images().to(device),
        train_y=splits.train.labels.to(device),
        val_x=splits.validation.float_images().to(device),
        val_y=splits.validation.labels.to(device),
        test_x=splits.test.float_images().to(device),
        test_y=splits.test.labels.to(device),
    )


@dataclass(frozen=True, eq=False)
class PreparedEvaluation:
    """A checked configuration: its methods built, its data loaded. :func:`run` trains."""

    config: EvaluationConfig
    methods: tuple[Method, ...]
    data: TaskData
    device: torch.device


def prepare(config: EvaluationConfig, *, data: ImageData | None = None) -> PreparedEvaluation:
    """Check everything that can fail before any training: device, policies, baselines, data, model.

    Raises :class:`rlopt.scheduler.PolicyFileError` for an unusable policy file (corrupt, or an action
    mode its optimizer cannot take), :class:`rlopt.data.DataError` for unreadable data or sizes that
    do not fit it, and ``ValueError``/``RuntimeError`` for impossible settings; each message is one
    line for the user.
    """
    device = resolve_device(config.device)
    methods = tuple(resolve_method(name, config.baseline_settings) for name in config.method_names)
    names = [m.name for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"methods named more than once: {', '.join(duplicates)}")
    return PreparedEvaluation(config=config, methods=methods, data=load_task_data(config, device, data),
                              device=device)


# --------------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------------

#: the per-step traces of a run: :class:`RunCurves`' fields and the arrays of curves.npz
TRACE_NAMES: tuple[str, ...] = ("loss", "smoothed_loss", "lr", "reinforcement", "momentum")


@dataclass(frozen=True, eq=False)
class RunCurves:
    """Per-step traces of one run; steps after a divergence are NaN."""

    loss: np.ndarray
    """mini-batch loss of each step (at the weights the gradient was taken at)."""
    smoothed_loss: np.ndarray
    """its EMA."""
    lr: np.ndarray
    """learning rate of the step (first param group)."""
    reinforcement: np.ndarray
    """R-SGD's reinforcement probability Γ the step used; 0 for optimizers without one."""
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


def run_one(method: Method, seed: int, prepared: PreparedEvaluation) -> RunRecord:
    """Train one method from seed ``seed`` (start point and batch order) and measure it."""
    config, data = prepared.config, prepared.data
    loss_fn = loss_function(config.model)
    seed_everything(seed)  # nothing below should draw from the global RNGs; if it does, it draws alike
    model = build_seeded_model(config.model, seed).to(prepared.device)
    context = RunContext(steps=config.steps, steps_per_epoch=len(data.train_y) // config.batch_size, seed=seed)
    optimizer, hook = method.build(model, context)
    trainer = Trainer(
        model, optimizer, data.train_x, data.train_y,
        batch_size=config.batch_size, seed=seed, loss_fn=loss_fn, device=prepared.device,
    )
    traces = {name: np.full(config.steps, np.nan) for name in TRACE_NAMES}
    smoothed: float | None = None
    steps_to_threshold: int | None = None
    diverged_at: int | None = None
    group = optimizer.param_groups[0]
    start = time.perf_counter()
    for index in range(config.steps):
        # read before the step: the values it uses (the hook after it changes them for the next one)
        traces["lr"][index] = float(group["lr"])
        traces["reinforcement"][index] = reinforcement_of(optimizer)
        traces["momentum"][index] = float(group.get("momentum", 0.0))
        loss = trainer.train_step()
        if not math.isfinite(loss):
            diverged_at = index + 1
            break
        smoothed = ema_update(smoothed, loss, config.smoothing)
        traces["loss"][index] = loss
        traces["smoothed_loss"][index] = smoothed
        if steps_to_threshold is None and smoothed <= config.threshold_loss:
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
    return RunRecord(
        method=method.name,
        seed=seed,
        steps=config.steps,
        steps_to_threshold=steps_to_threshold,
        final_train_loss=final_train.loss if diverged_at is None else nan,
        final_train_accuracy=final_train.accuracy,
        final_smoothed_loss=smoothed if diverged_at is None and smoothed is not None else nan,
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
# All runs
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


def evaluate(
    config: EvaluationConfig,
    out: str | os.PathLike[str] | None = None,
    *,
    data: ImageData | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """:func:`prepare`, :func:`run` and, if ``out`` is given, :func:`rlopt.bench.stats.write_outputs`.

    ``out`` is checked (:func:`rlopt.bench.stats.check_output_dir`) before anything else, so an
    unusable path fails before any training rather than after.
    """
    from rlopt.bench.stats import check_output_dir, write_outputs

    if out is not None:
        check_output_dir(out)
    result = run(prepare(config, data=data), progress=progress, data=data)
    if out is not None:
        write_outputs(result, out)
    return result

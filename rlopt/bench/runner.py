"""Running the benchmark: the task data, one training pass, and all passes over processes or Ray tasks.

For every task, every seed s (held-out evaluation seeds HELD_OUT_SEED_BASE + i, or the oracle's
tuning seeds), every method and every budget B there is one record. A record comes from a training
pass:

1. the task's model initialised from s (:func:`~rlopt.training.build_seeded_model`) and the method's
   optimizer, hook and protocol (:mod:`rlopt.bench.methods`);
2. training steps of a :class:`~rlopt.training.Trainer` whose batch order is seeded by s, over the
   task's training images (its dataset variant of the base data, :func:`rlopt.tasks.derive_dataset`,
   then :func:`rlopt.data.task_splits` with ``data_seed``), at the task's batch size and with its
   model's loss, calling the hook after each step. Within a task and seed every method starts from the
   same weights and sees the same batches in the same order (a *paired* comparison);
3. per step: the mini-batch loss, its EMA (``smoothing``), and the effective learning rate
   (:func:`rlopt.bench.methods.effective_lr`), reinforcement Γ and momentum the step used;
4. at each budget B: the method's ``before_evaluation`` (Schedule-Free's ``optimizer.eval()``), then the
   model's loss on a fixed sample of the training subset (its first ``train_loss_size`` images:
   ``final_train_loss`` is the model's loss, not a mean of batch losses taken at earlier weights),
   validation loss/accuracy, test loss/accuracy and optionally the flatness radius; then
   ``before_training`` again.

A budget-aware method (told the budget) trains one pass per budget. Any other method trains one pass
of the longest budget and is measured at every budget on the way: its first B steps do not depend on
how long it will run.

``steps_to_threshold`` is the first step whose smoothed loss is <= ``threshold_loss``, or ``None``:
"not reached". A pass whose loss (or a measured metric) becomes NaN/inf stops there (``diverged_at``);
its records from there on score as the untrained model it started from (its initial training,
validation and test loss and accuracy): finite penalty numbers, about chance accuracy.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rlopt.bench.config import EvaluationConfig, held_out_seeds
from rlopt.bench.flatness import flatness_radius
from rlopt.bench.methods import ORACLE_NAMES, Method, RunContext, effective_lr, resolve_method
from rlopt.bench.oracle import OracleTable, load_oracle
from rlopt.control import ema_update, reinforcement_of
from rlopt.data import ImageData, load_dataset, task_splits
from rlopt.models import loss_function
from rlopt.tasks import DatasetVariant, Task, derive_dataset
from rlopt.training import EvalResult, Trainer, build_seeded_model, resolve_device, seed_everything

__all__ = [
    "TRACE_NAMES",
    "EvaluationResult",
    "Job",
    "PreparedEvaluation",
    "RunCurves",
    "RunRecord",
    "TaskData",
    "evaluate",
    "load_task_data",
    "plan_jobs",
    "prepare",
    "run",
    "run_job",
    "run_one",
]


# --------------------------------------------------------------------------------------------------
# Data and preparation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TaskData:
    """Float images and labels of a task's three splits, already on the evaluation device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def _num_classes(task: Task, data: ImageData) -> int:
    """The classes the task's model predicts, read off its output on a few training images.

    Raises ``ValueError`` (one line) if the model cannot take the dataset's images.
    """
    model = build_seeded_model(task.model, 0)
    probe = data.training.take(0, min(task.batch_size, len(data.training))).float_images()
    try:
        with torch.no_grad():
            return int(model(probe).shape[-1])
    except RuntimeError as exc:
        raise ValueError(
            f"task {task.name}: model {task.model!r} cannot take images of shape {tuple(probe.shape[1:])}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def load_task_data(
    config: EvaluationConfig, device: torch.device, data: ImageData | None = None
) -> dict[str, TaskData]:
    """Each task's training/validation subsets and full test split, as float tensors on ``device``.

    The base dataset (MNIST or ``config.data_dir``; ``data`` replaces loading with an in-memory one) is
    loaded once; each dataset variant is derived once and shared by the tasks that use it. Sizes that
    do not fit the data, and labels outside a model's classes, raise :class:`rlopt.data.DataError`.
    """
    base = data if data is not None else load_dataset(config.data_dir)
    variants: dict[DatasetVariant, ImageData] = {}
    converted: dict[tuple[DatasetVariant, int], TaskData] = {}
    out: dict[str, TaskData] = {}
    for task in config.task_list:
        if task.dataset not in variants:
            variants[task.dataset] = derive_dataset(base, task.dataset)
        variant = variants[task.dataset]
        classes = _num_classes(task, variant)
        splits = task_splits(variant, config.train_size, config.validation_size, seed=config.data_seed,
                             num_classes=classes, batch_size=task.batch_size)
        key = (task.dataset, classes)
        if key not in converted:
            converted[key] = TaskData(
                train_x=splits.train.float_images().to(device),
                train_y=splits.train.labels.to(device),
                val_x=splits.validation.float_images().to(device),
                val_y=splits.validation.labels.to(device),
                test_x=splits.test.float_images().to(device),
                test_y=splits.test.labels.to(device),
            )
        out[task.name] = converted[key]
    return out


@dataclass(frozen=True, eq=False)
class PreparedEvaluation:
    """A checked configuration: its methods built, its tasks' data loaded. :func:`run` trains."""

    config: EvaluationConfig
    methods: tuple[Method, ...]
    tasks: tuple[Task, ...]
    data: dict[str, TaskData]
    device: torch.device
    oracle: OracleTable | None = None

    @property
    def method_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.methods)


def prepare(
    config: EvaluationConfig, *, data: ImageData | None = None, method_names: Sequence[str] | None = None
) -> PreparedEvaluation:
    """Check everything that can fail before any training: device, methods, the oracle's entries, data.

    ``method_names`` replaces ``config.method_names`` (the oracle's tuning grid uses it). Raises
    :class:`rlopt.scheduler.PolicyFileError` for an unusable policy file, :class:`rlopt.data.DataError`
    for unreadable data or sizes that do not fit it, and ``ValueError``/``RuntimeError`` for impossible
    settings, a missing package of a peer or of ``--backend ray``, or a tuned oracle without an entry for a
    requested task and budget; each message is one line for the user.
    """
    device = resolve_device(config.device)
    names = tuple(config.method_names if method_names is None else method_names)
    if not names:
        raise ValueError("nothing to evaluate: give at least one policy or baseline")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"methods named more than once: {', '.join(duplicates)}")
    tasks = config.task_list
    oracle = None
    wanted = [n for n in names if n in ORACLE_NAMES]
    if wanted:
        oracle = load_oracle(config.oracle)
        oracle.check(config, [n.removeprefix("oracle-") for n in wanted])
    methods = tuple(resolve_method(name, config.baseline_settings, oracle, config.safety) for name in names)
    if config.backend == "ray":
        from rlopt.bench.ray_backend import require_ray

        require_ray()
    return PreparedEvaluation(config=config, methods=methods, tasks=tasks, data=load_task_data(config, device, data),
                              device=device, oracle=oracle)


# --------------------------------------------------------------------------------------------------
# One training pass
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
    """effective learning rate of the step (first param group; Prodigy: d·lr)."""
    reinforcement: np.ndarray
    """R-SGD's reinforcement probability Γ the step used; 0 for optimizers without one."""
    momentum: np.ndarray
    """momentum coefficient of the step (torch SGD's ``momentum``); 0 where absent."""


@dataclass(frozen=True)
class RunRecord:
    """The metrics of one method on one task, budget and seed: one row of results.csv."""

    task: str
    budget: int
    method: str
    seed: int
    sweep_lr: float | None
    """the lr sweep's starting rate of this run; ``None``: the method's own rate."""
    steps_to_threshold: int | None
    """first step with smoothed loss <= threshold; ``None``: not reached within the budget."""
    final_train_loss: float
    """loss of the model at the budget on the first ``train_loss_size`` training images."""
    final_train_accuracy: float
    final_smoothed_loss: float
    val_loss: float
    """NaN when there are no validation images."""
    val_accuracy: float
    test_loss: float
    """NaN when the test split is not scored (the oracle's tuning runs)."""
    test_accuracy: float
    wall_s: float
    """seconds of the training steps up to the budget, hooks included (not evaluations, not flatness)."""
    diverged_at: int | None
    """the step whose loss (or whose model's metrics) was NaN/inf; ``None``: it did not diverge. The
    metrics of a diverged record are the untrained model's (finite penalty numbers)."""
    flatness_radius: float | None = None
    """mean flatness radius over the directions; ``None`` unless measured."""
    flatness_radius_std: float | None = None
    curves: RunCurves | None = field(default=None, repr=False, compare=False)

    @property
    def reached(self) -> bool:
        return self.steps_to_threshold is not None

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    def row(self) -> dict[str, Any]:
        """The record without its curves, plus ``reached``, ``diverged`` and ``s_per_step``."""
        row = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "curves"}
        done = self.diverged_at if self.diverged_at is not None else self.budget
        row["reached"] = self.reached
        row["diverged"] = self.diverged
        row["s_per_step"] = self.wall_s / max(done, 1)
        return row


@dataclass(frozen=True)
class _Scores:
    train: EvalResult
    val: EvalResult | None
    test: EvalResult | None

    @property
    def finite(self) -> bool:
        results = [r for r in (self.train, self.val, self.test) if r is not None]
        return all(math.isfinite(r.loss) for r in results)


def _score(trainer: Trainer, data: TaskData, config: EvaluationConfig) -> _Scores:
    n = min(config.train_loss_size, len(data.train_y))
    return _Scores(
        train=trainer.evaluate(data.train_x[:n], data.train_y[:n]),
        val=trainer.evaluate(data.val_x, data.val_y) if len(data.val_y) else None,
        test=trainer.evaluate(data.test_x, data.test_y) if config.score_test else None,
    )


def _initial_scores(task: Task, seed: int, data: TaskData, prepared: PreparedEvaluation) -> _Scores:
    """The untrained model's scores: the penalty a diverged run gets."""
    model = build_seeded_model(task.model, seed).to(prepared.device)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), data.train_x, data.train_y,
                      batch_size=task.batch_size, seed=seed, loss_fn=loss_function(task.model),
                      device=prepared.device)
    return _score(trainer, data, prepared.config)


def run_one(
    method: Method,
    task: Task,
    seed: int,
    budgets: Sequence[int],
    prepared: PreparedEvaluation,
    *,
    sweep_lr: float | None = None,
) -> list[RunRecord]:
    """Train ``method`` on ``task`` from seed ``seed`` for ``max(budgets)`` steps; one record per budget.

    A budget-aware method must be given one budget (it is told it); ``sweep_lr`` overrides its starting rate.
    """
    budgets = sorted(set(budgets))
    if method.budget_aware and len(budgets) != 1:
        raise ValueError(f"{method.name} is told its budget: train it one budget at a time, got {budgets}")
    config, data, device = prepared.config, prepared.data[task.name], prepared.device
    length = budgets[-1]
    loss_fn = loss_function(task.model)
    seed_everything(seed)  # nothing below should draw from the global RNGs; if it does, it draws alike
    model = build_seeded_model(task.model, seed).to(device)
    context = RunContext(budget=length, steps_per_epoch=max(len(data.train_y) // task.batch_size, 1), seed=seed,
                         task=task.name, lr=sweep_lr)
    built = method.build(model, context)
    optimizer = built.optimizer
    trainer = Trainer(model, optimizer, data.train_x, data.train_y, batch_size=task.batch_size, seed=seed,
                      loss_fn=loss_fn, device=device)
    traces = {name: np.full(length, np.nan) for name in TRACE_NAMES}
    smoothed: float | None = None
    steps_to_threshold: int | None = None
    diverged_at: int | None = None
    group = optimizer.param_groups[0]
    records: list[RunRecord] = []
    nan = float("nan")

    def record(budget: int, scores: _Scores, wall_s: float, flatness: tuple[float, float] | None) -> RunRecord:
        val, test = scores.val, scores.test
        return RunRecord(
            task=task.name,
            budget=budget,
            method=method.name,
            seed=seed,
            sweep_lr=sweep_lr,
            steps_to_threshold=steps_to_threshold if steps_to_threshold is not None
            and steps_to_threshold <= budget else None,
            final_train_loss=scores.train.loss,
            final_train_accuracy=scores.train.accuracy,
            final_smoothed_loss=smoothed if diverged_at is None and smoothed is not None else scores.train.loss,
            val_loss=val.loss if val is not None else nan,
            val_accuracy=val.accuracy if val is not None else nan,
            test_loss=test.loss if test is not None else nan,
            test_accuracy=test.accuracy if test is not None else nan,
            wall_s=wall_s,
            diverged_at=diverged_at,
            flatness_radius=None if flatness is None else flatness[0],
            flatness_radius_std=None if flatness is None else flatness[1],
            curves=RunCurves(**{name: values[:budget] for name, values in traces.items()}),
        )

    wall_s = 0.0
    built.before_training()
    start = time.perf_counter()
    for index in range(length):
        # read before the step: the values it uses (the hook after it changes them for the next one)
        traces["lr"][index] = effective_lr(optimizer)
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
        built.hook(loss)
        if index + 1 in budgets:
            wall_s += time.perf_counter() - start
            built.before_evaluation()
            scores = _score(trainer, data, config)
            if not scores.finite:  # the last update broke the weights although its loss was finite
                diverged_at = index + 1
                start = time.perf_counter()  # the evaluation is no training time
                break
            flatness = None
            if config.flatness:
                n = min(config.flatness_settings.subset_size, len(data.train_y))
                flatness = flatness_radius(model, loss_fn, data.train_x[:n], data.train_y[:n],
                                           config.flatness_settings, seed=seed)
            records.append(record(index + 1, scores, wall_s, flatness))
            built.before_training()
            start = time.perf_counter()
    if diverged_at is not None:
        wall_s += time.perf_counter() - start
        penalty = _initial_scores(task, seed, data, prepared)
        for budget in budgets[len(records):]:
            records.append(record(budget, penalty, wall_s, None))
    return records


# --------------------------------------------------------------------------------------------------
# All passes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One training pass: a method on a task from a seed, measured at ``budgets``."""

    task: str
    method: int
    """index into :attr:`PreparedEvaluation.methods`."""
    seed: int
    budgets: tuple[int, ...]
    sweep_lr: float | None = None


def plan_jobs(prepared: PreparedEvaluation, seeds: Sequence[int]) -> list[Job]:
    """Every pass the records need: budget-aware methods one pass per budget, others one pass for all
    budgets; with ``lr_sweep``, the same again at each sweep rate that differs from the method's own."""
    config = prepared.config
    budgets = config.budget_list
    jobs: list[Job] = []
    for task in prepared.tasks:
        for index, method in enumerate(prepared.methods):
            starts: list[float | None] = [None]
            if config.lr_sweep and method.family is not None:
                own = method.default_lr
                starts += [r for r in config.sweep.rates(method.family)
                           if own is None or not math.isclose(r, own, rel_tol=1e-9)]
            for start in starts:
                for seed in seeds:
                    if method.budget_aware:
                        jobs.extend(Job(task.name, index, seed, (b,), start) for b in budgets)
                    else:
                        jobs.append(Job(task.name, index, seed, budgets, start))
    return jobs


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Every record of an evaluation and what was evaluated."""

    config: EvaluationConfig
    methods: tuple[Method, ...]
    tasks: tuple[Task, ...]
    budgets: tuple[int, ...]
    seeds: tuple[int, ...]
    records: tuple[RunRecord, ...]
    cpu_s: float = 0.0
    """CPU seconds of the training passes, worker processes included."""
    wall_s: float = 0.0
    """wall-clock seconds of the training passes."""
    passes: int = 0
    """training passes run (a budget-unaware method's pass serves every budget)."""
    oracle: OracleTable | None = None

    @cached_property
    def _index(self) -> dict[tuple[str, int, str, float | None, int], RunRecord]:
        return {(r.task, r.budget, r.method, r.sweep_lr, r.seed): r for r in self.records}

    def record(self, task: str, budget: int, method: str, seed: int, sweep_lr: float | None = None) -> RunRecord:
        try:
            return self._index[(task, budget, method, sweep_lr, seed)]
        except KeyError:
            raise KeyError(f"no run of {method!r} on {task} at {budget} steps, seed {seed}") from None

    def runs(self, task: str, budget: int, method: str, sweep_lr: float | None = None) -> list[RunRecord]:
        """The method's records on a task and budget, in seed order."""
        return [self.record(task, budget, method, s, sweep_lr) for s in self.seeds]

    @property
    def method_names(self) -> list[str]:
        return [m.name for m in self.methods]

    @property
    def baseline_names(self) -> list[str]:
        return [m.name for m in self.methods if m.kind == "baseline"]

    @property
    def policy_names(self) -> list[str]:
        return [m.name for m in self.methods if m.kind == "policy"]

    def sweep_rates(self, method: Method) -> tuple[float, ...]:
        """The sweep's starting rates of ``method`` (empty without --lr-sweep or a rate to sweep)."""
        if not self.config.lr_sweep or method.family is None:
            return ()
        return self.config.sweep.rates(method.family)

    def sweep_runs(self, task: str, budget: int, method: Method, rate: float) -> list[RunRecord]:
        """The records of ``method`` started at ``rate``: its own runs where ``rate`` is its own rate."""
        own = method.default_lr is not None and math.isclose(rate, method.default_lr, rel_tol=1e-9)
        return self.runs(task, budget, method.name, None if own else rate)


_WORKER: PreparedEvaluation | None = None


def _init_worker(config: EvaluationConfig, data: ImageData | None, method_names: tuple[str, ...]) -> None:
    global _WORKER
    torch.set_num_threads(config.threads or 1)
    _WORKER = prepare(config, data=data, method_names=method_names)


def run_job(job: Job, prepared: PreparedEvaluation) -> list[RunRecord]:
    """The records of one pass (:func:`run_one` on the job's method, task, seed, budgets and rate)."""
    task = next(t for t in prepared.tasks if t.name == job.task)
    return run_one(prepared.methods[job.method], task, job.seed, job.budgets, prepared, sweep_lr=job.sweep_lr)


def _run_in_worker(job: Job) -> list[RunRecord]:
    assert _WORKER is not None
    return run_job(job, _WORKER)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run(
    prepared: PreparedEvaluation,
    *,
    progress: bool = True,
    data: ImageData | None = None,
    seeds: Sequence[int] | None = None,
) -> EvaluationResult:
    """Every pass of :func:`plan_jobs`, with a progress bar; ``seeds`` replaces the held-out seeds.

    With ``config.workers > 1`` the passes are spread over that many processes (``spawn``ed, each
    loading the data once; pass the same ``data`` given to :func:`prepare`, if any), longest first.
    With ``config.backend == "ray"`` each pass is a Ray task (:mod:`rlopt.bench.ray_backend`; raises its
    ``BackendUnavailable`` when Ray is missing or unreachable). Every pass is seeded by itself, so the
    records depend neither on the number of workers nor on the backend.
    """
    config = prepared.config
    seed_list = list(seeds) if seeds is not None else held_out_seeds(config.seed_count)
    jobs = plan_jobs(prepared, seed_list)
    batch = {t.name: t.batch_size for t in prepared.tasks}
    order = sorted(jobs, key=lambda j: -max(j.budgets) * batch[j.task])  # longest passes first
    records: list[RunRecord] = []
    worker_cpu_s = 0.0  # CPU of workers that are not this process's children (Ray's)
    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
    with tqdm(total=len(jobs), desc="evaluate", unit="pass", disable=not progress) as bar:
        if config.backend == "ray":
            from rlopt.bench.ray_backend import run_passes

            done = run_passes(prepared, order, on_done=lambda job: bar.update())
            for job_records in done.records:
                records.extend(job_records)
            worker_cpu_s = done.cpu_s
        elif config.workers == 1:
            if config.threads is not None:
                torch.set_num_threads(config.threads)
            for job in order:
                bar.set_postfix_str(f"{job.task} {prepared.methods[job.method].name} seed {job.seed}")
                records.extend(run_job(job, prepared))
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(config.workers, mp_context=context, initializer=_init_worker,
                                     initargs=(config, data, prepared.method_names)) as pool:
                futures = [pool.submit(_run_in_worker, job) for job in order]
                for future in as_completed(futures):
                    future.result()  # surface a failed pass now
                    bar.update()
                for future in futures:
                    records.extend(future.result())
    wall_s, cpu_s = time.perf_counter() - wall_start, _cpu_seconds() - cpu_start + worker_cpu_s
    task_order = {t.name: i for i, t in enumerate(prepared.tasks)}
    method_order = {m.name: i for i, m in enumerate(prepared.methods)}
    records.sort(key=lambda r: (task_order[r.task], r.budget, method_order[r.method],
                                -1.0 if r.sweep_lr is None else r.sweep_lr, r.seed))
    return EvaluationResult(config=config, methods=prepared.methods, tasks=prepared.tasks,
                            budgets=config.budget_list, seeds=tuple(seed_list), records=tuple(records),
                            cpu_s=cpu_s, wall_s=wall_s, passes=len(jobs), oracle=prepared.oracle)


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

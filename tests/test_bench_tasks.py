"""rlopt.bench on the task suite: task and budget selection, every record tied to its task and budget,
the task deciding dataset variant, model and batch size, and data loaded once per worker."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import rlopt.bench.runner as runner
from rlopt.bench import (
    GRIDS,
    EvaluationConfig,
    evaluate,
    parse_budgets,
    parse_task_names,
    plan_jobs,
    prepare,
    run_one,
)
from rlopt.bench.methods import BASELINE_NAMES
from rlopt.data import ImageData
from rlopt.tasks import DEFAULT_TASK, TASKS, get_task, tasks_in

SIZES: dict[str, Any] = {"train_size": 128, "validation_size": 32}
#: two cheap tasks with different dataset variants and batch sizes
PAIR = ("permuted-mlp-relu", "mnist-mlp-relu-b128-adam")


def test_task_names_and_splits_parse() -> None:
    held_out = tuple(t.name for t in tasks_in("held-out"))
    assert parse_task_names(["held-out"]) == held_out
    assert parse_task_names(["mnist-cnn,held-out", "mnist-cnn"]) == (DEFAULT_TASK, *held_out)
    assert parse_task_names(["train"]) == tuple(t.name for t in tasks_in("train"))
    with pytest.raises(ValueError, match="unknown task 'mnist-resnet'"):
        parse_task_names(["mnist-cnn,mnist-resnet"])
    assert parse_budgets(["2000,250", "1000 250"]) == (250, 1000, 2000)
    for bad in (["0"], ["ten"], [""]):
        with pytest.raises(ValueError):
            parse_budgets(bad)


def test_grids_resolve_and_flags_replace_their_part() -> None:
    config = EvaluationConfig()
    assert [t.name for t in config.task_list] == [DEFAULT_TASK]
    assert config.budget_list == GRIDS["default"].budgets and config.seed_count == GRIDS["default"].seeds
    assert config.baseline_list == ("sgd",)  # the constant rate a user would otherwise keep
    full = EvaluationConfig(grid="full", seeds=4, budgets=(500,))
    assert [t.name for t in full.task_list] == [DEFAULT_TASK, *(t.name for t in tasks_in("held-out"))]
    assert full.seed_count == 4 and full.budget_list == (500,) and full.baseline_list == BASELINE_NAMES
    resolved = full.to_dict()["resolved"]
    assert resolved["seeds"] == 4 and resolved["budgets"] == [500] and resolved["tasks"][0] == DEFAULT_TASK
    for task in GRIDS["full"].tasks:
        assert task in TASKS


def test_records_are_tied_to_task_and_budget(tiny_data: ImageData) -> None:
    config = EvaluationConfig(tasks=PAIR, budgets=(8, 16), seeds=2, baselines=("sgd", "linear"), **SIZES)
    result = evaluate(config, data=tiny_data, progress=False)
    keys = {(r.task, r.budget, r.method, r.seed) for r in result.records}
    assert len(keys) == len(result.records) == 2 * 2 * 2 * 2
    assert {k[:2] for k in keys} == {(t, b) for t in PAIR for b in (8, 16)}
    for record in result.records:
        assert record.curves is not None and len(record.curves.loss) == record.budget
    # budget-unaware sgd: one pass per task and seed serves both budgets; linear: one pass per budget
    assert result.passes == 2 * 2 * (1 + 2)
    # the same seed on two tasks: different data and models, so different losses
    first = {t: result.record(t, 8, "sgd", result.seeds[0]).curves.loss[0] for t in PAIR}  # type: ignore[union-attr]
    assert first[PAIR[0]] != first[PAIR[1]]


def test_the_task_decides_variant_model_and_batch(tiny_data: ImageData, monkeypatch: pytest.MonkeyPatch) -> None:
    config = EvaluationConfig(tasks=("mnist-cnn", "inverted-mlp-relu", *PAIR), budgets=(4,), seeds=1,
                              baselines=("sgd",), **SIZES)
    loads: list[object] = []

    def counting_load(data_dir: object) -> ImageData:
        loads.append(data_dir)
        return tiny_data

    monkeypatch.setattr(runner, "load_dataset", counting_load)
    prepared = prepare(config)
    assert loads == [None]  # the base dataset is loaded once for every task (once per worker)
    mnist, inverted = prepared.data["mnist-cnn"], prepared.data["inverted-mlp-relu"]
    torch.testing.assert_close(inverted.train_x, 1.0 - mnist.train_x)
    assert prepared.data[PAIR[1]] is mnist  # same variant: the converted tensors are shared
    assert not torch.equal(prepared.data[PAIR[0]].train_x, mnist.train_x)  # permuted

    models, batches = [], []
    real_build, real_trainer = runner.build_seeded_model, runner.Trainer

    def spy_build(name: str, seed: int) -> torch.nn.Module:
        models.append(name)
        return real_build(name, seed)

    class SpyTrainer(real_trainer):  # type: ignore[misc,valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            batches.append(kwargs["batch_size"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(runner, "build_seeded_model", spy_build)
    monkeypatch.setattr(runner, "Trainer", SpyTrainer)
    for task in prepared.tasks:
        run_one(prepared.methods[0], task, 5, (4,), prepared)
    assert models == [get_task(t.name).model for t in prepared.tasks] == ["cnn", "mlp-relu", "mlp-relu", "mlp-relu"]
    assert batches == [32, 32, 32, 128]


def test_a_budget_unaware_pass_gives_the_shorter_budget_on_the_way(tiny_data: ImageData) -> None:
    config = EvaluationConfig(tasks=(PAIR[0],), budgets=(9, 18), seeds=1, baselines=("adam",), **SIZES)
    prepared = prepare(config, data=tiny_data)
    task, method = prepared.tasks[0], prepared.methods[0]
    both = run_one(method, task, 11, (9, 18), prepared)
    alone = run_one(method, task, 11, (9,), prepared)[0]
    assert [r.budget for r in both] == [9, 18]
    assert both[0].final_train_loss == alone.final_train_loss and both[0].test_accuracy == alone.test_accuracy
    assert both[0].curves is not None and alone.curves is not None
    np.testing.assert_array_equal(both[0].curves.loss, alone.curves.loss)
    assert both[1].final_train_loss != both[0].final_train_loss


def test_plan_runs_budget_aware_methods_once_per_budget(tiny_data: ImageData) -> None:
    config = EvaluationConfig(tasks=(PAIR[0],), budgets=(5, 10, 20), seeds=2, baselines=("sgd", "cosine"),
                              **SIZES)
    jobs = plan_jobs(prepare(config, data=tiny_data), [1, 2])
    by_method: dict[int, list[tuple[int, ...]]] = {}
    for job in jobs:
        by_method.setdefault(job.method, []).append(job.budgets)
    assert by_method[0] == [(5, 10, 20)] * 2                       # sgd
    assert sorted(by_method[1]) == [(5,), (5,), (10,), (10,), (20,), (20,)]  # cosine

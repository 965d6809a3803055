"""The tuned oracle: tuning seeds never meet evaluation seeds, selection sees tuning runs only and picks
the lowest validation loss, the evaluation reruns the stored choice, and missing entries are errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import fake_image_data, load_benchmark, save_idx_dataset

import rlopt.bench.runner as runner
from rlopt.bench import (
    EvaluationConfig,
    OracleConfig,
    OracleGrid,
    RunRecord,
    compute_oracle,
    evaluate,
    held_out_seeds,
    load_oracle,
    prepare,
    run_one,
    select_oracle,
)
from rlopt.bench.config import MAX_EVALUATION_SEEDS
from rlopt.bench.methods import ScheduleName, tuning_method, tuning_method_name
from rlopt.bench.oracle import merge_oracle, tuning_seeds, write_oracle
from rlopt.data import ImageData
from rlopt.tasks import get_task
from rlopt.training import HELD_OUT_SEED_BASE, SELECTION_SEED_BASE, TRAIN_SEED_RANGE, TUNING_SEED_BASE

REPO = Path(__file__).resolve().parents[1]
TASK = "inverted-mlp-relu"
SIZES: dict[str, Any] = {"train_size": 128, "validation_size": 32}
#: a two-rate grid: constant and cosine SGD at 0.01 and 0.3 (4 configurations)
TINY = OracleConfig(tasks=(TASK,), budgets=(8, 16), tuning_seeds=2, optimizers=("sgd",),
                    grid=OracleGrid(sgd_rates=(0.01, 0.3), schedules=("constant", "cosine")), **SIZES)


def _record(method: str, seed: int, val_loss: float, *, budget: int = 100, diverged: bool = False) -> RunRecord:
    return RunRecord(task=TASK, budget=budget, method=method, seed=seed, sweep_lr=None, steps_to_threshold=None,
                     final_train_loss=val_loss, final_train_accuracy=0.5, final_smoothed_loss=val_loss,
                     val_loss=val_loss, val_accuracy=0.5, test_loss=math.nan, test_accuracy=math.nan, wall_s=0.1,
                     diverged_at=3 if diverged else None)


@pytest.fixture(scope="module")
def oracle_payload(tiny_data: ImageData) -> dict[str, object]:
    return compute_oracle(TINY, data=tiny_data, progress=False, command="test")


def test_tuning_seeds_never_meet_evaluation_or_training_seeds() -> None:
    last_evaluation_seed = HELD_OUT_SEED_BASE + MAX_EVALUATION_SEEDS - 1  # the largest evaluation may draw
    tuning = tuning_seeds(1000)
    assert held_out_seeds(3) == [HELD_OUT_SEED_BASE + i for i in range(3)]
    assert last_evaluation_seed < tuning[0] and tuning[0] == TUNING_SEED_BASE
    assert TRAIN_SEED_RANGE <= HELD_OUT_SEED_BASE and tuning[-1] < SELECTION_SEED_BASE
    with pytest.raises(ValueError):
        held_out_seeds(MAX_EVALUATION_SEEDS + 1)


def test_selection_refuses_evaluation_seeds() -> None:
    name = tuning_method_name("sgd", "constant", 0.1)
    seeds = tuning_seeds(2)
    good = [_record(name, s, 0.5) for s in seeds]
    with pytest.raises(ValueError, match="not a tuning run"):
        select_oracle([*good, _record(name, HELD_OUT_SEED_BASE, 0.01)], seeds)
    with pytest.raises(ValueError, match="TUNING_SEED_BASE"):
        select_oracle([_record(name, HELD_OUT_SEED_BASE, 0.01)], [HELD_OUT_SEED_BASE])
    with pytest.raises(ValueError, match="expected every tuning seed"):
        select_oracle(good[:1], seeds)


def test_selection_takes_the_lowest_mean_validation_loss_and_avoids_divergence() -> None:
    seeds = tuning_seeds(2)
    losses: dict[tuple[ScheduleName, float], tuple[float, float]] = {  # (schedule, lr): per-seed losses
        ("constant", 0.1): (0.30, 0.34), ("constant", 0.3): (0.25, 0.27),
        ("cosine", 0.1): (0.20, 0.30), ("cosine", 0.3): (0.10, 0.60),   # cosine 0.3: mean 0.35
        ("linear", 0.1): (0.26, 0.22), ("linear", 1.0): (0.01, 0.02),   # linear 1.0 diverged on one seed
    }
    records = []
    for (schedule, lr), values in losses.items():
        for seed, value in zip(seeds, values, strict=True):
            diverged = (schedule, lr) == ("linear", 1.0) and seed == seeds[1]
            records.append(_record(tuning_method_name("sgd", schedule, lr), seed, value, diverged=diverged))
    entry = select_oracle(records, seeds)[TASK]["100"]["sgd"]
    assert (entry["schedule"], entry["lr"]) == ("linear", 0.1) and entry["val_loss"] == pytest.approx(0.24)
    assert entry["schedules"]["constant"]["lr"] == 0.3 and entry["schedules"]["cosine"]["lr"] == 0.1
    assert entry["schedules"]["linear"]["lr"] == 0.1  # lower loss, but diverged once: not chosen
    assert [c["lr"] for c in entry["grid"]["linear"]] == [0.1, 1.0] and entry["grid"]["linear"][1]["diverged"] == 1


def test_compute_oracle_trains_on_tuning_seeds_only(tiny_data: ImageData, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = runner.run_one

    def spy(*args: object, **kwargs: object) -> list[RunRecord]:
        seen.append(args[2])  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "run_one", spy)
    small = OracleConfig(tasks=(TASK,), budgets=(6,), tuning_seeds=2, optimizers=("adam",),
                         grid=OracleGrid(adam_rates=(1e-3, 1e-2), schedules=("constant",)), **SIZES)
    payload = compute_oracle(small, data=tiny_data, progress=False)
    assert set(seen) == set(tuning_seeds(2)) and not set(seen) & set(held_out_seeds(1000))
    assert payload["tuning_seeds"] == tuning_seeds(2)
    assert payload["compute"][0]["runs"] == 4 and payload["compute"][0]["cpu_s"] >= 0


def test_evaluation_reruns_the_stored_choice(oracle_payload: dict[str, object], tiny_data: ImageData,
                                             tmp_path: Path) -> None:
    path = write_oracle(oracle_payload, tmp_path / "oracle.json")
    stored = json.loads(path.read_text())
    assert stored["total_compute"]["runs"] == 2 * 4 * 2 and "validation loss" in stored["selection"]
    table = load_oracle(path)
    config = EvaluationConfig(tasks=(TASK,), budgets=(8, 16), seeds=1, baselines=("oracle-sgd",), oracle=str(path),
                              **SIZES)
    result = evaluate(config, data=tiny_data, progress=False)
    prepared = prepare(EvaluationConfig(tasks=(TASK,), budgets=(8, 16), seeds=1, baselines=("sgd",), **SIZES),
                       data=tiny_data)
    for budget in (8, 16):
        choice = table.choice(TASK, budget, "sgd")
        assert choice.schedule in ("constant", "cosine") and choice.lr in (0.01, 0.3)
        direct = tuning_method(tuning_method_name("sgd", choice.schedule, choice.lr), prepared.config.baseline_settings)
        again = run_one(direct, get_task(TASK), result.seeds[0], (budget,), prepared)[0]
        ours = result.record(TASK, budget, "oracle-sgd", result.seeds[0])
        assert ours.final_train_loss == again.final_train_loss and ours.test_accuracy == again.test_accuracy


def test_missing_entries_and_other_data_are_clear_errors(oracle_payload: dict[str, object], tmp_path: Path,
                                                         tiny_data: ImageData) -> None:
    path = write_oracle(oracle_payload, tmp_path / "oracle.json")
    base = {"tasks": (TASK,), "seeds": 1, "oracle": str(path), **SIZES}
    with pytest.raises(ValueError, match=r"no entry for inverted-mlp-relu@32\(sgd\).*benchmarks/oracle.py --tasks "
                                         r"inverted-mlp-relu --budgets 32"):
        prepare(EvaluationConfig(budgets=(8, 32), baselines=("oracle-sgd",), **base), data=tiny_data)
    with pytest.raises(ValueError, match=r"no entry for inverted-mlp-relu@8\(adam\)"):
        prepare(EvaluationConfig(budgets=(8,), baselines=("oracle-adam",), **base), data=tiny_data)
    with pytest.raises(ValueError, match="tuned on other data: train_size 128"):
        prepare(EvaluationConfig(tasks=(TASK,), budgets=(8,), seeds=1, oracle=str(path), baselines=("oracle-sgd",),
                                 train_size=96, validation_size=32), data=tiny_data)
    with pytest.raises(ValueError, match="no tuned oracle at"):
        prepare(EvaluationConfig(budgets=(8,), baselines=("oracle-sgd",),
                                 **{**base, "oracle": str(tmp_path / "none.json")}), data=tiny_data)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a usable oracle file"):
        load_oracle(tmp_path / "bad.json")


def test_merging_keeps_other_entries_and_refuses_other_tuning(oracle_payload: dict[str, object]) -> None:
    other = json.loads(json.dumps(oracle_payload))
    other["entries"] = {"rotated-cnn": other["entries"][TASK]}
    merged = merge_oracle(oracle_payload, other)
    assert set(merged["entries"]) == {TASK, "rotated-cnn"} and len(merged["compute"]) == 2
    other["tuning_seeds"] = [TUNING_SEED_BASE + 7]
    with pytest.raises(ValueError, match="tuning_seeds"):
        merge_oracle(oracle_payload, other)


def test_oracle_script_smoke_on_a_tiny_idx_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = load_benchmark("oracle")
    data_dir = save_idx_dataset(fake_image_data(n_train=300, n_test=60, seed=1), tmp_path / "idx")
    out = tmp_path / "results" / "oracle.json"
    common = ["--tasks", TASK, "--tuning-seeds", "1", "--optimizers", "sgd", "--grid.sgd-rates", "0.05", "0.2",
              "--grid.schedules", "constant", "linear", "--data-dir", str(data_dir), "--train-size", "128",
              "--validation-size", "32", "--no-progress", "--out", str(out)]
    assert script.main([*common, "--budgets", "6"]) == 0
    assert script.main([*common, "--budgets", "12"]) == 0  # merged into the same file
    stored = json.loads(out.read_text())
    assert set(stored["entries"][TASK]) == {"6", "12"} and len(stored["compute"]) == 2
    assert stored["compute"][1]["command"].startswith("python benchmarks/oracle.py --tasks")
    assert stored["total_compute"]["runs"] == 2 * 4 and stored["data"]["data_dir"] == os.path.abspath(data_dir)
    assert "wrote" in capsys.readouterr().out
    assert script.main([*common, "--budgets", "6", "--tuning-seeds", "2"]) == 2  # other seeds: no silent merge
    err = capsys.readouterr().err
    assert err.startswith("oracle.py: ") and "--no-merge" in err and err.count("\n") == 1
    assert script.main(["--tasks", "nope"]) == 2 and "unknown task 'nope'" in capsys.readouterr().err

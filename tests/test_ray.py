"""The Ray paths (issue 14): the benchmark's ``--backend ray`` and agent-training sweeps on Ray Tune.

Skipped without the ``ray`` extra. One local Ray (2 CPUs) serves the whole module; the backend and the
sweep join it instead of starting their own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.tune")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from helpers import fake_image_data, save_idx_dataset  # noqa: E402

import rlopt.bench.cli as bench_cli  # noqa: E402
from rlopt.bench import (  # noqa: E402
    EvaluationConfig,
    EvaluationResult,
    PreparedEvaluation,
    RunRecord,
    held_out_seeds,
    prepare,
    run,
)
from rlopt.bench.ray_backend import BackendUnavailable, require_ray, run_passes  # noqa: E402
from rlopt.bench.runner import TRACE_NAMES, Job, plan_jobs, run_job  # noqa: E402
from rlopt.control import ActionSpec, ObservationSpec  # noqa: E402
from rlopt.data import ImageData  # noqa: E402
from rlopt.scheduler import build_q_network, save_policy  # noqa: E402
from rlopt.training import OPTIMIZER_PRESETS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINES = ("sgd", "cosine", "rsgd", "prodigy")
GRID = {"tasks": ("permuted-mlp-relu",), "budgets": (6, 12), "seeds": 2, "baselines": BASELINES,
        "train_size": 400, "validation_size": 50, "threads": 1}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray for the module (the code under test reuses an initialised Ray and leaves it running)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data() -> ImageData:
    return fake_image_data(n_train=600, n_test=200, seed=0)


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight lr policy: a method whose closure carries a network to the workers."""
    torch.manual_seed(0)
    actions, observation = ActionSpec(mode="lr"), ObservationSpec()
    network = build_q_network([observation.size, 16, actions.n_actions])
    return save_policy(tmp_path_factory.mktemp("policy") / "p.rlopt", network, observation, actions,
                       optimizer="sgd", initial_lr=OPTIMIZER_PRESETS["sgd"].lr)


def grid_config(policy_file: Path, **changes: object) -> EvaluationConfig:
    return EvaluationConfig(policies=(str(policy_file),), **{**GRID, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def process_result(data: ImageData, policy_file: Path) -> EvaluationResult:
    """The tiny grid on the process backend's pool of 2 spawned workers."""
    config = grid_config(policy_file, workers=2)
    return run(prepare(config, data=data), data=data, progress=False)


def comparable(record: RunRecord) -> dict[str, object]:
    """A record's row without its timings (which differ from run to run)."""
    return {k: v for k, v in record.row().items() if k not in ("wall_s", "s_per_step")}


def assert_same_records(got: tuple[RunRecord, ...] | list[RunRecord], want: tuple[RunRecord, ...]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert comparable(a) == comparable(b)
        assert a.curves is not None and b.curves is not None
        for name in TRACE_NAMES:
            np.testing.assert_array_equal(getattr(a.curves, name), getattr(b.curves, name))


def record_keys(records: list[RunRecord] | tuple[RunRecord, ...]) -> list[tuple[object, ...]]:
    return [(r.task, r.budget, r.method, r.sweep_lr, r.seed) for r in records]


# --------------------------------------------------------------------------------------------------
# evaluate.py --backend ray
# --------------------------------------------------------------------------------------------------


def test_ray_backend_records_equal_the_process_pool(
    ray_cluster: None, data: ImageData, policy_file: Path, process_result: EvaluationResult
) -> None:
    config = grid_config(policy_file, backend="ray")
    result = run(prepare(config, data=data), data=data, progress=False)
    assert len(result.records) == (1 + len(BASELINES)) * 2 * 2  # methods × budgets × seeds
    assert_same_records(result.records, process_result.records)
    assert result.passes == process_result.passes and result.cpu_s > 0  # the workers' CPU is counted
    assert ray.is_initialized()  # a Ray it did not start is left running


def test_a_pass_whose_worker_dies_is_retried_and_no_record_is_lost_or_duplicated(
    ray_cluster: None, data: ImageData, policy_file: Path, process_result: EvaluationResult, tmp_path: Path
) -> None:
    prepared = prepare(grid_config(policy_file, backend="ray"), data=data)
    jobs = plan_jobs(prepared, process_result.seeds)
    victim = jobs[len(jobs) // 2]
    marker = tmp_path / "crashed"

    def crash_once(job: Job, prepared: PreparedEvaluation) -> list[RunRecord]:
        # defined in the test so that Ray ships it by value; the worker process dies mid-pass, once
        if job == victim and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return run_job(job, prepared)

    done = run_passes(prepared, jobs, run=crash_once)
    assert marker.is_file()  # the worker did die
    records = [r for job_records in done.records for r in job_records]
    keys = record_keys(records)
    assert len(keys) == len(set(keys)) == len(process_result.records)
    by_key = dict(zip(keys, records, strict=True))
    assert_same_records([by_key[k] for k in record_keys(process_result.records)], process_result.records)


def test_a_pass_out_of_retries_fails_the_evaluation(
    ray_cluster: None, data: ImageData, policy_file: Path, tmp_path: Path
) -> None:
    prepared = prepare(grid_config(policy_file, backend="ray", max_retries=0, budgets=(3,), seeds=1,
                                   baselines=("sgd",)), data=data)
    jobs = plan_jobs(prepared, held_out_seeds(1))

    def always_crash(job: Job, prepared: PreparedEvaluation) -> list[RunRecord]:
        os._exit(1)

    with pytest.raises(ray.exceptions.RayError):
        run_passes(prepared, jobs, run=always_crash)


def test_evaluate_cli_runs_on_ray(ray_cluster: None, data: ImageData, tmp_path: Path) -> None:
    idx = save_idx_dataset(data, tmp_path / "idx")
    out = tmp_path / "eval"
    code = bench_cli.main(["--backend", "ray", "--tasks", "permuted-mlp-relu", "--budgets", "4", "--seeds", "1",
                           "--baselines", "sgd", "--data-dir", str(idx), "--train-size", "400",
                           "--validation-size", "50", "--threads", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == 1 and results["config"]["backend"] == "ray"


def test_address_needs_the_ray_backend(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert bench_cli.main(["--address", "auto", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--address auto joins a Ray cluster: it needs --backend ray" in err


def test_without_ray_the_backend_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install 'rlopt\[ray\]'"):
        require_ray()


def test_nothing_outside_the_ray_modules_imports_ray() -> None:
    script = (
        "import sys\n"
        "import rlopt, rlopt.bench, rlopt.bench.cli, rlopt.bench.ray_backend, envs, agents, agents.cli\n"
        "import agents.sweep\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'ray']\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr


def test_config_records_the_backend() -> None:
    config = EvaluationConfig(backend="ray", address="10.0.0.1:6379")
    assert dataclasses.asdict(config)["address"] == "10.0.0.1:6379"
    with pytest.raises(ValueError, match="max_retries"):
        EvaluationConfig(backend="ray", max_retries=-1)


# --------------------------------------------------------------------------------------------------
# rlopt-sweep: agent training on Ray Tune
# --------------------------------------------------------------------------------------------------

EPISODE = 20
#: 2 episodes of 20 steps, checkpoints every 15 steps, one 1-episode evaluation at step 25 (as test_train_run)
TINY_TRAINING = {
    "episodes": 2, "episode_steps": EPISODE, "n_envs": 1, "train_size": 256, "validation_size": 40,
    "checkpoint_every": 15, "eval_every": 25, "eval_episodes": 1, "log_every": 5,
    "dqn": {"learning_starts": 10, "buffer_size": 200, "batch_size": 16},
}


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_idx_dataset(fake_image_data(n_train=360, n_test=60, seed=0, n_validation=60),
                            tmp_path_factory.mktemp("idx"))


def sweep_file(path: Path, idx_dir: Path) -> Path:
    spec = {
        "name": "tiny",
        "base": {**TINY_TRAINING, "data_dir": str(idx_dir)},
        "seeds": [0],
        "configs": {"lr-1e-3": {"dqn": {"learning_rate": 1e-3}}, "lr-1e-2": {"dqn": {"learning_rate": 1e-2}}},
    }
    path.write_text(json.dumps(spec))
    return path


def test_a_two_trial_sweep_writes_run_directories_and_selects_the_best(
    ray_cluster: None, idx_dir: Path, tmp_path: Path
) -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.sweep import SUMMARY_NAME, SweepConfig, load_spec, run_sweep
    from agents.sweep_trial import newest_checkpoint_steps
    from rlopt.scheduler import load_policy

    marker = tmp_path / "failed-once"

    def fail_once(out: Path) -> list[BaseCallback]:
        class LoseTheMachineOnce(BaseCallback):
            """After the first reported checkpoint, the first trial here loses its disk and its worker."""

            def _on_step(self) -> bool:
                if newest_checkpoint_steps(out) > 0 and not marker.exists():
                    marker.write_text(out.name)
                    shutil.rmtree(out)
                    raise RuntimeError("injected failure")
                return True

        return [LoseTheMachineOnce()]

    spec = load_spec(sweep_file(tmp_path / "tiny.json", idx_dir))
    out = tmp_path / "runs" / "tiny"
    result = run_sweep(spec, SweepConfig(spec="tiny.json", out=str(out), progress=False), extra_callbacks=fail_once)

    assert [t.name for t in result.trials] == ["lr-1e-3-seed0", "lr-1e-2-seed0"]
    for trial in result.trials:
        assert trial.error is None and trial.num_timesteps == 2 * EPISODE
        run_dir = out / trial.name
        assert {"policy.rlopt", "config.json", "tb", "checkpoints", "best"} <= {p.name for p in run_dir.iterdir()}
        assert json.loads((run_dir / "config.json").read_text())["seed"] == 0
        assert trial.best_eval is not None and trial.best_eval.episodes == 1
    failed = out / marker.read_text()
    # the failed trial resumed from the checkpoint it had reported to Tune (its own directory was gone)
    assert load_policy(failed / "policy.rlopt").metadata["resumed_from"] > 0
    others = [t for t in result.trials if t.out != failed]
    assert load_policy(others[0].out / "policy.rlopt").metadata["resumed_from"] == 0

    ranks = {t.name: t.best_eval.rank for t in result.trials if t.best_eval is not None}
    assert result.best is not None and result.best.name == min(ranks, key=ranks.__getitem__)
    assert result.policy_path == out / "policy.rlopt"
    assert result.policy_path.read_bytes() == (result.best.out / "policy.rlopt").read_bytes()
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["best"] == result.best.name and len(summary["trials"]) == 2

    # a second sweep into the same directory is refused; --resume with the same file finds nothing left to do
    from agents.sweep import SweepError

    with pytest.raises(SweepError, match="already holds a sweep"):
        run_sweep(spec, SweepConfig(spec="tiny.json", out=str(out), progress=False))


def test_sweep_file_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agents.sweep import main

    cases = {
        "bad.json": ("{", "not a readable sweep file"),
        "owned.json": (json.dumps({"configs": {"a": {"seed": 3}}}), "sets seed: the sweep sets these"),
        "unknown.json": (json.dumps({"configs": {"a": {"episodez": 3}}}), "unknown settings ['episodez']"),
        "invalid.json": (json.dumps({"base": {"episodes": 0}}), "--episodes must be >= 1"),
        "seeds.json": (json.dumps({"seeds": []}), "seeds must be a non-empty list"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        assert main([str(path), "--out", str(tmp_path / "o")]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("rlopt-sweep: error: ") and err.count("\n") == 1 and message in err, (name, err)
    assert not (tmp_path / "o").exists()

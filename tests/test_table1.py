"""Smoke test of benchmarks/rsgd_table1.py (Table I of the R-SGD paper) on tiny fake data."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from helpers import fake_image_data, load_benchmark


@pytest.fixture(scope="module")
def table1() -> ModuleType:
    return load_benchmark("rsgd_table1")


def test_rows_fields_and_pairing(table1: ModuleType) -> None:
    data = fake_image_data(n_train=300, n_test=80, seed=0, n_validation=50)
    protocol = table1.Protocol(train_sizes=(100, 150), test_size=40, batch_size=25, epochs=2, runs=2, curve_every=1)
    result = table1.run_table1(data, protocol, progress=False)

    rows = result["rows"]
    assert [(r["method"], r["train_size"]) for r in rows] == [
        (label, size) for label in ("BackProp", "R-SGD", "Adam") for size in (100, 150)
    ]
    for row in rows:
        assert set(row) == {"method", "train_size", "mean_test_error", "std_test_error", "runs"}
        assert len(row["runs"]) == 2
        assert all(0.0 <= e <= 1.0 for e in row["runs"])
        assert row["mean_test_error"] == pytest.approx(sum(row["runs"]) / 2)
        assert row["std_test_error"] >= 0.0
    json.dumps(rows)  # plain JSON types

    curves = result["curves"]
    assert len(curves) == 2 * 2 * 3
    assert all([p["epoch"] for p in c["curve"]] == [0, 1, 2] for c in curves)
    # paired: within a (run, M) every method starts from the same network on the same test images
    for run in range(2):
        for size in (100, 150):
            starts = {c["curve"][0]["test_error"] for c in curves if c["run"] == run and c["train_size"] == size}
            assert len(starts) == 1


def test_same_seed_same_result(table1: ModuleType) -> None:
    data = fake_image_data(n_train=200, n_test=60, seed=1, n_validation=20)
    protocol = table1.Protocol(train_sizes=(100,), test_size=50, batch_size=25, epochs=2, runs=1)
    first = table1.run_table1(data, protocol, ["rsgd"], progress=False)
    second = table1.run_table1(data, protocol, ["rsgd"], progress=False)
    assert first["rows"] == second["rows"]


def test_unknown_method_is_an_error(table1: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown methods"):
        table1.run_table1(fake_image_data(n_train=64, n_test=16), table1.QUICK, ["sgd"], progress=False)


def write_policy(path: Path, mode: str, always: int) -> Path:
    """A policy of ``mode`` whose greedy action is always ``always`` (constant Q-values)."""
    from rlopt.control import ActionSpec, ObservationSpec
    from rlopt.scheduler import build_q_network, save_policy

    actions, obs = ActionSpec(mode=mode), ObservationSpec()  # type: ignore[arg-type]
    net = build_q_network([obs.size, 4, actions.n_actions])
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net[-1].bias.copy_(torch.arange(actions.n_actions) == always)
    return save_policy(path, net, obs, actions, optimizer="rsgd", initial_lr=0.01, metadata={"note": "test"})


LEARNED_PROTOCOL = dict(train_sizes=(100, 150), test_size=40, batch_size=25, epochs=2, runs=2, curve_every=1)


def test_learned_row_format_and_pairing(table1: ModuleType, tmp_path: Path) -> None:
    """The learned row has the paper rows' fields, its label, no paper value, and is paired with R-SGD."""
    from rlopt.scheduler import load_policy

    data = fake_image_data(n_train=300, n_test=80, seed=0, n_validation=50)
    protocol = table1.Protocol(**LEARNED_PROTOCOL)
    policy = load_policy(write_policy(tmp_path / "g.rlopt", "rsgd", always=0))  # strengthen Γ every step
    result = table1.run_table1(data, protocol, ["rsgd", "learned"], policy=policy, progress=False)

    rows = result["rows"]
    assert [(r["method"], r["train_size"]) for r in rows] == [
        (label, size) for label in ("R-SGD", "R-SGD learned") for size in (100, 150)
    ]
    for row in rows:
        assert set(row) == {"method", "train_size", "mean_test_error", "std_test_error", "runs"}
        assert len(row["runs"]) == 2 and all(0.0 <= e <= 1.0 for e in row["runs"])
    json.dumps(result)

    table = table1.format_table(rows, epochs=2, runs=2).splitlines()
    assert len(table) == 1 + len(rows)
    learned_lines = [line for line in table if line.lstrip().startswith("R-SGD learned")]
    assert len(learned_lines) == 2
    for line, row in zip(learned_lines, rows[2:], strict=True):
        assert line.split()[2:] == [str(row["train_size"]), f"{row['mean_test_error']:.4f}", "±",
                                    f"{row['std_test_error']:.4f}", "-", "-"]

    curves = {(c["method"], c["train_size"], c["run"]): c["curve"] for c in result["curves"]}
    for run in range(2):
        for size in (100, 150):
            fixed, learned = curves[("R-SGD", size, run)], curves[("R-SGD learned", size, run)]
            assert fixed[0]["test_error"] == learned[0]["test_error"]  # same start, same test images
            # a Γ-only policy keeps the paper's lr decay; Γ is the policy's: 1 − 0.5·0.9^t after t updates
            assert [p["lr"] for p in fixed] == [p["lr"] for p in learned]
            steps = 2 * size // 25
            assert learned[-1]["reinforcement"] == pytest.approx(1 - 0.5 * 0.9**steps)
            assert fixed[-1]["reinforcement"] == pytest.approx(1 - (steps + 1) ** -0.5)


def test_joint_policy_owns_the_rate(table1: ModuleType, tmp_path: Path) -> None:
    """A joint lr+Γ policy starts at η0 = 0.8 (bounds widened to include it) and runs without the decay."""
    from rlopt.scheduler import load_policy

    data = fake_image_data(n_train=200, n_test=60, seed=1, n_validation=20)
    protocol = table1.Protocol(train_sizes=(100,), test_size=50, batch_size=25, epochs=2, runs=1, curve_every=1)
    policy = load_policy(write_policy(tmp_path / "j.rlopt", "lr+rsgd", always=4))  # keep lr, keep Γ
    result = table1.run_table1(data, protocol, ["learned"], policy=policy, progress=False)
    curve = result["curves"][0]["curve"]
    assert [p["lr"] for p in curve] == [0.8, 0.8, 0.8]
    assert [p["reinforcement"] for p in curve] == [0.5, 0.5, 0.5]


def test_learned_row_needs_a_gamma_policy(table1: ModuleType, tmp_path: Path) -> None:
    from rlopt.scheduler import load_policy

    data = fake_image_data(n_train=64, n_test=16)
    with pytest.raises(ValueError, match="needs a policy"):
        table1.run_table1(data, table1.QUICK, ["learned"], progress=False)
    lr_only = load_policy(write_policy(tmp_path / "lr.rlopt", "lr", always=1))
    with pytest.raises(ValueError, match="sets R-SGD's Γ"):
        table1.run_table1(data, table1.QUICK, ["learned"], policy=lr_only, progress=False)
    with pytest.raises(SystemExit):
        table1.main(["--methods", "learned"])
    with pytest.raises(SystemExit):
        table1.main(["--methods", "learned", "--policy", str(tmp_path / "lr.rlopt")])


def test_command_line_writes_the_learned_row(table1: ModuleType, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = fake_image_data(n_train=300, n_test=2_000, seed=2, n_validation=20)
    monkeypatch.setattr(table1, "load_mnist", lambda progress=False: data)
    path = write_policy(tmp_path / "g.rlopt", "rsgd", always=1)
    out = tmp_path / "t1.json"
    table1.main(["--methods", "rsgd", "learned", "--policy", str(path), "--sizes", "250", "--runs", "1",
                 "--epochs", "1", "--no-progress", "--out", str(out)])
    document = json.loads(out.read_text())
    assert [r["method"] for r in document["rows"]] == ["R-SGD", "R-SGD learned"]
    assert document["meta"]["policy"] == {"file": str(path), "mode": "rsgd", "optimizer": "rsgd",
                                          "metadata": {"note": "test"}}

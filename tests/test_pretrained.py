"""Pretrained policies shipped as package data: LearnedScheduler.pretrained and pretrained_names."""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import rlopt.scheduler
from rlopt import LearnedScheduler, PolicyFileError
from rlopt.control import FEATURE_NAMES, ActionSpec, ObservationSpec
from rlopt.scheduler import build_q_network, pretrained_names, pretrained_policy, save_policy

#: the issue's size target for a shipped policy is "a few tens of KB"
MAX_SHIPPED_BYTES = 100_000


def fake_policy_package(root: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, int]) -> Path:
    """A package ``<root>/fake_policies_N`` holding a ``<name>.rlopt`` per entry of ``files`` (value: the
    seed of its random Q-network), made the place rlopt looks for pretrained policies."""
    name = f"fake_policies_{abs(hash(root)) % 10**8}"
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text('"""Test stand-in for rlopt.policies."""\n')
    (package / "README.md").write_text("not a policy\n")
    obs, actions = ObservationSpec(), ActionSpec()
    for policy_name, seed in files.items():
        torch.manual_seed(seed)
        net = build_q_network([obs.size, 16, actions.n_actions])
        save_policy(package / f"{policy_name}.rlopt", net, obs, actions, optimizer="sgd", initial_lr=0.1,
                    metadata={"name": policy_name})
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(rlopt.scheduler, "PRETRAINED_PACKAGE", name)
    return package


def run(sched: LearnedScheduler, opt: torch.optim.Optimizer, model: nn.Module, steps: int) -> list[int]:
    torch.manual_seed(1)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    actions = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sched.step(loss.item())
        assert sched.last_action is not None
        actions.append(sched.last_action)
    return actions


def test_pretrained_loads_the_shipped_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = fake_policy_package(tmp_path, monkeypatch, {"sgd": 0, "adam": 1})
    assert pretrained_names() == ("adam", "sgd")  # README.md and __init__.py are not policies

    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler.pretrained("sgd", opt, total_steps=500)
    assert sched.metadata["name"] == "sgd" and sched.total_steps == 500
    torch.manual_seed(0)
    model2 = nn.Linear(6, 3)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    from_file = LearnedScheduler(opt2, package / "sgd.rlopt", total_steps=500)
    assert run(sched, opt, model, 20) == run(from_file, opt2, model2, 20)
    assert sched.get_last_lr() == from_file.get_last_lr()

    # total_steps reaches the step feature: t / T
    opt.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(4, 6)), torch.zeros(4, dtype=torch.long)).backward()
    opt.step()
    assert sched.controller.observe(1.0)[FEATURE_NAMES.index("step")] == pytest.approx(21 / 500)
    assert pretrained_policy("adam").metadata["name"] == "adam"


def test_unknown_names_list_the_shipped_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_policy_package(tmp_path, monkeypatch, {"sgd": 0, "adam": 1})
    opt = torch.optim.SGD(nn.Linear(6, 3).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"no pretrained policy 'momentum'; this rlopt ships adam, sgd"):
        LearnedScheduler.pretrained("momentum", opt)
    with pytest.raises(ValueError, match="ships adam, sgd"):
        LearnedScheduler.pretrained("../sgd", opt)


def test_a_package_without_policies_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_policy_package(tmp_path, monkeypatch, {})
    assert pretrained_names() == ()
    opt = torch.optim.SGD(nn.Linear(6, 3).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="ships no pretrained policies yet"):
        LearnedScheduler.pretrained("sgd", opt)


def test_a_broken_shipped_file_is_a_policy_file_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = fake_policy_package(tmp_path, monkeypatch, {"sgd": 0})
    (package / "sgd.rlopt").write_bytes(b"truncated")
    with pytest.raises(PolicyFileError, match=r"sgd\.rlopt"):
        pretrained_policy("sgd")


def test_every_shipped_policy_loads_is_small_and_documented() -> None:
    """The real rlopt.policies package: each file loads, stays small, and has its row in README.md."""
    root = importlib.resources.files("rlopt.policies")
    readme = root.joinpath("README.md").read_text()
    for name in pretrained_names():
        policy = pretrained_policy(name)
        assert policy.optimizer in ("sgd", "momentum", "adam", "rsgd")
        with importlib.resources.as_file(root.joinpath(f"{name}.rlopt")) as path:
            assert path.stat().st_size < MAX_SHIPPED_BYTES
        assert f"| `{name}` |" in readme, f"rlopt/policies/README.md has no row for {name}"


def test_step_takes_the_loss_tensor_without_autograd_warnings() -> None:
    """``sched.step(loss)`` with the graph-attached loss, as a training loop has it, warns nothing."""
    import warnings

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler.pretrained("sgd", opt, total_steps=5)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(5):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step(loss)
    assert sched.controller.steps == 5


def test_pretrained_rsgd_sets_gamma_of_an_rsgd_optimizer() -> None:
    """The shipped Γ-controller drives rlopt.RSGD: it owns Γ from the start, keeps it in bounds and
    leaves the rate alone; optimizers without Γ are refused."""
    from rlopt import RSGD

    policy = pretrained_policy("rsgd")
    assert policy.optimizer == "rsgd" and policy.actions.mode == "rsgd"
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    opt = RSGD(model.parameters(), lr=policy.initial_lr, seed=0)
    sched = LearnedScheduler.pretrained("rsgd", opt, total_steps=60)
    assert sched.get_last_reinforcement() == [policy.actions.reinforcement_init]
    for action in run(sched, opt, model, 60):
        assert 0 <= action < policy.actions.n_actions
    seen = sched.get_last_reinforcement()
    low, high = policy.actions.reinforcement_bounds
    assert all(low <= gamma <= high for gamma in seen)
    assert seen[0] > policy.actions.reinforcement_init  # it strengthens reinforcement early in a run
    assert [g["reinforcement"] for g in opt.param_groups] == seen
    assert sched.get_last_lr() == [policy.initial_lr]  # Γ-only: the rate is the user's
    for other in (torch.optim.SGD(model.parameters(), lr=0.01), torch.optim.Adam(model.parameters(), lr=0.001)):
        with pytest.raises(ValueError, match="reinforcement probability Γ"):
            LearnedScheduler.pretrained("rsgd", other)


def test_pretrained_adam_drives_torch_adam_within_its_bounds() -> None:
    """The shipped Adam policy starts from Adam's 1e-3, keeps the rate within Adam's bounds, and (like
    every lr policy) is refused on an optimizer that starts outside them."""
    policy = pretrained_policy("adam")
    assert (policy.optimizer, policy.actions.mode, policy.initial_lr) == ("adam", "lr", 0.001)
    low, high = policy.actions.lr_bounds
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    opt = torch.optim.Adam(model.parameters(), lr=policy.initial_lr)
    sched = LearnedScheduler.pretrained("adam", opt, total_steps=60)
    run(sched, opt, model, 60)
    rates = sched.get_last_lr()
    assert all(low <= r <= high for r in rates) and rates != [policy.initial_lr]  # it moved the rate
    with pytest.raises(ValueError, match="outside the controller's bounds"):
        LearnedScheduler.pretrained("adam", torch.optim.Adam(model.parameters(), lr=0.1))

"""LearnedScheduler and the .rlopt policy file, without gymnasium or stable-baselines3."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from rlopt import RSGD, LearnedScheduler, PolicyFileError
from rlopt.control import FEATURE_NAMES, ActionSpec, ObservationSpec, fused_kernels
from rlopt.models import MLP
from rlopt.scheduler import POLICY_VERSION, build_q_network, save_policy


def write_policy(path: Path, mode: str = "lr", *, seed: int = 0, always: int | None = None) -> Path:
    actions = ActionSpec(mode=mode)  # type: ignore[arg-type]
    obs = ObservationSpec()
    torch.manual_seed(seed)
    net = build_q_network([obs.size, 16, actions.n_actions])
    if always is not None:  # a policy whose greedy action is constant
        with torch.no_grad():
            net[-1].weight.zero_()
            net[-1].bias.copy_(torch.arange(actions.n_actions) == always)
    return save_policy(path, net, obs, actions, metadata={"note": "test"})


def tiny_problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = MLP((20, 16, 4), activation="relu")
    x = torch.randn(64, 20)
    y = torch.randint(0, 4, (64,))
    return model, x, y


def train(model: nn.Module, opt: torch.optim.Optimizer, sched: LearnedScheduler, x, y, steps: int) -> list[int]:
    actions = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        actions.append(sched.step(loss.item()))
    return actions


@pytest.mark.parametrize(
    "make_opt, mode",
    [
        (lambda p: torch.optim.SGD(p, lr=0.1), "lr"),
        (lambda p: torch.optim.Adam(p, lr=0.01), "lr"),
        (lambda p: RSGD(p, lr=0.1, seed=0), "lr"),
        (lambda p: RSGD(p, lr=0.1, seed=0), "rsgd"),
        (lambda p: RSGD(p, lr=0.1, seed=0), "lr+rsgd"),
    ],
)
def test_drives_sgd_adam_and_rsgd(tmp_path: Path, make_opt, mode: str) -> None:
    path = write_policy(tmp_path / "p.rlopt", mode)
    model, x, y = tiny_problem()
    opt = make_opt(model.parameters())
    sched = LearnedScheduler.load(path, opt)
    first = nn.functional.cross_entropy(model(x), y).item()
    actions = train(model, opt, sched, x, y, 40)
    assert len(set(actions)) >= 1 and all(0 <= a < sched.actions.n_actions for a in actions)
    lo, hi = sched.actions.lr_bounds
    assert all(lo <= lr <= hi for lr in sched.get_last_lr())
    assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
    assert nn.functional.cross_entropy(model(x), y).item() < first
    assert sched.metadata["note"] == "test"


def test_constant_raise_is_clamped_at_the_upper_bound(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt", always=2)
    model, x, y = tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler.load(path, opt)
    assert set(train(model, opt, sched, x, y, 30)) == {2}
    assert sched.get_last_lr() == [0.5]


def test_rsgd_policy_owns_gamma(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt", "rsgd", always=0)  # always strengthen reinforcement
    model, x, y = tiny_problem()
    opt = RSGD(model.parameters(), lr=0.05, seed=0)
    sched = LearnedScheduler.load(path, opt)
    assert sched.get_last_reinforcement() == [0.5]
    train(model, opt, sched, x, y, 3)
    assert sched.get_last_reinforcement()[0] == pytest.approx(1 - 0.5 * 0.9**3)


def test_state_dict_round_trip_continues_identically(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt", seed=3)
    model, x, y = tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler.load(path, opt)
    train(model, opt, sched, x, y, 10)
    saved = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    torch.save(saved, tmp_path / "ckpt.pt")
    expected = train(model, opt, sched, x, y, 8)

    model2, _, _ = tiny_problem(seed=99)
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model2.load_state_dict(loaded["model"])
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.5)
    opt2.load_state_dict(loaded["opt"])
    sched2 = LearnedScheduler.load(path, opt2)
    sched2.load_state_dict(loaded["sched"])
    assert train(model2, opt2, sched2, x, y, 8) == expected


def test_mode_the_optimizer_cannot_take(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt", "rsgd")
    model, _, _ = tiny_problem()
    with pytest.raises(PolicyFileError, match="reinforcement"):
        LearnedScheduler.load(path, torch.optim.SGD(model.parameters(), lr=0.1))


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    model, _, _ = tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(PolicyFileError, match="no such policy file"):
        LearnedScheduler.load(tmp_path / "missing.rlopt", opt)
    (tmp_path / "junk.rlopt").write_bytes(b"not a torch file")
    with pytest.raises(PolicyFileError, match="not a readable"):
        LearnedScheduler.load(tmp_path / "junk.rlopt", opt)
    torch.save({"weights": {}}, tmp_path / "foreign.rlopt")
    with pytest.raises(PolicyFileError, match="format tag"):
        LearnedScheduler.load(tmp_path / "foreign.rlopt", opt)

    good = torch.load(write_policy(tmp_path / "p.rlopt"), weights_only=True)
    torch.save({**good, "version": POLICY_VERSION + 1}, tmp_path / "future.rlopt")
    with pytest.raises(PolicyFileError, match="version"):
        LearnedScheduler.load(tmp_path / "future.rlopt", opt)
    other_features = {**good["observation"], "features": [*good["observation"]["features"][:-1], "momentum"]}
    torch.save({**good, "observation": other_features}, tmp_path / "features.rlopt")
    with pytest.raises(PolicyFileError, match="features"):
        LearnedScheduler.load(tmp_path / "features.rlopt", opt)


def test_policy_file_is_weights_only(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt")
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "rlopt-policy"
    assert payload["network"]["sizes"] == [len(FEATURE_NAMES), 16, 3]


def greedy_case(tmp_path: Path, activation: str, *, seed: int, width: int, n_obs: int):
    """A random ``lr+rsgd`` Q-network, its scheduler, random observations and the network's argmax."""
    torch.manual_seed(seed)
    obs_spec, actions = ObservationSpec(), ActionSpec(mode="lr+rsgd")
    net = build_q_network([obs_spec.size, width, width, actions.n_actions], activation)
    path = save_policy(tmp_path / "p.rlopt", net, obs_spec, actions, activation=activation)
    model, _, _ = tiny_problem()
    sched = LearnedScheduler.load(path, RSGD(model.parameters(), lr=0.1))
    observations = torch.randn(n_obs, obs_spec.size) * 3
    with torch.no_grad():
        expected = net(observations).argmax(dim=1).tolist()
    return net, sched, observations, expected


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_greedy_action_is_the_argmax_of_the_network(tmp_path: Path, activation: str) -> None:
    """The fused addmm+ReLU path gives the module's Q-values bit for bit; ties go to the lowest action."""
    net, sched, observations, expected = greedy_case(tmp_path, activation, seed=1, width=32, n_obs=200)
    obs_spec = sched.observation
    assert [sched.decide(o) for o in observations] == expected
    for o in observations[:20]:  # the Q-values themselves, not only their argmax
        x = o.reshape(1, -1)
        for layer in sched._layers:
            x = layer(x)
        with torch.no_grad():
            assert torch.equal(x, net(o.reshape(1, -1)))
    tie = write_policy(tmp_path / "tie.rlopt", always=2)  # last layer: zero weights, bias decides
    tied = LearnedScheduler.load(tie, torch.optim.SGD(tiny_problem()[0].parameters(), lr=0.1))
    with torch.no_grad():
        tied.q_network[-1].bias.fill_(1.0)
    assert tied.decide(torch.randn(obs_spec.size)) == 0


@pytest.mark.skipif(fused_kernels() is None, reason="the fused kernels need numba (rlopt[fast])")
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_fused_greedy_action_matches_torch_or_defers(tmp_path: Path, activation: str) -> None:
    """The float64 kernel answers only where float32 provably agrees; near ties go to the torch layers."""
    net, sched, observations, expected = greedy_case(tmp_path, activation, seed=2, width=64, n_obs=2000)
    obs_spec, actions = sched.observation, sched.actions
    assert sched._fused_greedy is not None
    answers = [sched._fused_greedy(o.numpy()) for o in observations]
    assert all(a == e for a, e in zip(answers, expected, strict=True) if a is not None)
    assert sum(a is None for a in answers) < 0.05 * len(answers)  # the kernel decides almost always
    assert [sched.decide(o) for o in observations] == expected
    # a near tie: the two best output rows differ in one weight by one float32 ulp
    with torch.no_grad():
        net[-1].weight[1] = net[-1].weight[0]
        net[-1].bias[:2] = 100.0
        net[-1].weight[1, 0] = torch.nextafter(net[-1].weight[0, 0], torch.tensor(math.inf))
    sched = LearnedScheduler(RSGD(tiny_problem()[0].parameters(), lr=0.1), net, obs_spec, actions)
    o = torch.ones(obs_spec.size)
    assert sched._fused_greedy is not None and sched._fused_greedy(o.numpy()) is None
    with torch.no_grad():
        assert sched.decide(o) == int(net(o.reshape(1, -1)).argmax())


def test_fused_false_runs_torch_only(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt")
    model, x, y = tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler.load(path, opt, fused=False)
    train(model, opt, sched, x, y, 3)
    assert sched._fused_greedy is None and not sched.controller._statistics.fused

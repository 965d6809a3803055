"""LearnedScheduler and the .rlopt policy file, without gymnasium or stable-baselines3."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from rlopt import RSGD, LearnedScheduler, PolicyFileError
from rlopt.control import FEATURE_NAMES, ActionSpec, ObservationSpec
from rlopt.models import MLP
from rlopt.scheduler import POLICY_VERSION, GreedyQ, Policy, build_q_network, load_policy, save_policy


def write_policy(path: Path, mode: str = "lr", *, seed: int = 0, always: int | None = None) -> Path:
    actions = ActionSpec(mode=mode)  # type: ignore[arg-type]
    obs = ObservationSpec()
    torch.manual_seed(seed)
    net = build_q_network([obs.size, 16, actions.n_actions])
    if always is not None:  # a policy whose greedy action is constant
        with torch.no_grad():
            net[-1].weight.zero_()
            net[-1].bias.copy_(torch.arange(actions.n_actions) == always)
    optimizer = "sgd" if mode == "lr" else "rsgd"
    return save_policy(path, net, obs, actions, optimizer=optimizer, initial_lr=0.1, metadata={"note": "test"})


def tiny_problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = MLP((20, 16, 4), activation="relu")
    x = torch.randn(64, 20)
    y = torch.randint(0, 4, (64,))
    return model, x, y


def train(model: nn.Module, opt: torch.optim.Optimizer, sched: LearnedScheduler, x, y, steps: int,
          *, zero_grad_after_step: bool = False) -> list[int]:
    actions = []
    for _ in range(steps):
        if not zero_grad_after_step:
            opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if zero_grad_after_step:
            opt.zero_grad()
        assert sched.step(loss.item()) is None  # as torch schedulers
        assert sched.last_action is not None
        actions.append(sched.last_action)
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
    assert all(0 <= a < sched.actions.n_actions for a in actions)
    assert actions == [sched.decide(o) for o in recorded_observations(path, make_opt, 40)]
    lo, hi = sched.actions.lr_bounds
    assert all(lo <= lr <= hi for lr in sched.get_last_lr())
    assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
    assert nn.functional.cross_entropy(model(x), y).item() < first
    assert sched.metadata["note"] == "test"


def recorded_observations(path: Path, make_opt, steps: int) -> list[np.ndarray]:
    """The observations of the same run, recorded through the controller while the same policy acts."""
    model, x, y = tiny_problem()
    opt = make_opt(model.parameters())
    sched = LearnedScheduler(opt, path)
    observations = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        obs = sched.controller.observe(loss.item())
        observations.append(obs)
        sched.controller.act(sched.decide(obs))
    return observations


def test_is_a_torch_lr_scheduler_built_the_way_torch_users_guess(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt", seed=1)
    model, x, y = tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    from_path = LearnedScheduler(opt, path)
    assert isinstance(from_path, LRScheduler)
    policy = load_policy(path)
    assert isinstance(policy, Policy) and policy.optimizer == "sgd" and policy.initial_lr == 0.1
    model2, _, _ = tiny_problem()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    from_policy = LearnedScheduler(opt2, policy)
    assert train(model, opt, from_path, x, y, 10) == train(model2, opt2, from_policy, x, y, 10)
    assert from_path.get_last_lr() == from_policy.get_last_lr() and from_path.last_epoch == 10
    with pytest.raises(TypeError, match="loss"):
        from_path.step()


def test_works_with_zero_grad_on_either_side_of_the_step(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt", seed=2)
    runs = []
    for after in (False, True):
        model, x, y = tiny_problem()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = LearnedScheduler(opt, path)
        runs.append((train(model, opt, sched, x, y, 25, zero_grad_after_step=after), sched.get_last_lr()))
    assert runs[0] == runs[1]


def test_step_without_an_optimizer_step_warns_and_does_nothing(tmp_path: Path) -> None:
    model, _, _ = tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler(opt, write_policy(tmp_path / "p.rlopt"))
    before = sched.state_dict()
    with pytest.warns(UserWarning, match=r"no optimizer\.step\(\)"):
        sched.step(1.0)
    assert sched.state_dict() == before and sched.last_epoch == 0
    assert opt.param_groups[0]["lr"] == 0.1


def test_a_grad_scaler_that_skips_steps_does_not_break_the_loop(tmp_path: Path) -> None:
    """torch.amp.GradScaler skips optimizer.step() when the scaled gradients overflow; the scheduler skips
    those calls too, and its budget counts the steps that ran."""
    torch.manual_seed(0)
    model, x, y = tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler(opt, write_policy(tmp_path / "p.rlopt"), total_steps=20)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)
    taken = []
    opt.register_step_post_hook(lambda *_: taken.append(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(20):
            loss = nn.functional.cross_entropy(model(x), y) * (1e30 if step in (3, 11) else 1.0)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step(loss)
    assert len(taken) == 18 and sched.last_epoch == 18
    assert sum("no optimizer.step()" in str(w.message) for w in caught) == 2


def test_total_steps_sets_the_step_feature(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt")
    model, x, y = tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler(opt, path, total_steps=1000)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    obs = sched.controller.observe(loss.item())
    assert obs[FEATURE_NAMES.index("step")] == pytest.approx(1 / 1000)
    with pytest.raises(ValueError, match="total steps"):
        LearnedScheduler(opt, path, total_steps=0)


def test_a_starting_rate_outside_the_bounds_is_refused(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt", always=1)  # "keep" forever
    model, _, _ = tiny_problem()
    with pytest.raises(ValueError, match=r"lr 10, outside .*0\.001, 0\.5"):
        LearnedScheduler(torch.optim.SGD(model.parameters(), lr=10.0), path)
    with pytest.raises(PolicyFileError, match="outside"):
        LearnedScheduler.load(path, torch.optim.SGD(model.parameters(), lr=10.0))
    LearnedScheduler(torch.optim.SGD(model.parameters(), lr=10.0), path, lr_bounds=(1.0, 20.0))


def test_survives_any_loss_sequence(tmp_path: Path) -> None:
    """Property-style: random finite and non-finite losses (the divergence of a real run) never raise."""
    path = write_policy(tmp_path / "p.rlopt", seed=4)
    rng = np.random.default_rng(1)
    for _ in range(20):
        model, x, y = tiny_problem()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = LearnedScheduler(opt, path)
        for _ in range(30):
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            value = float(rng.choice([math.inf, math.nan, -math.inf, 0.0])) if rng.random() < 0.3 else loss.item()
            sched.step(value)
            assert all(0.001 <= lr <= 0.5 for lr in sched.get_last_lr())


def test_constant_raise_is_clamped_at_the_upper_bound(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt", always=2)
    model, x, y = tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # the policy's own clamp: without the safety net, whose stall cap holds raises until the loss has fallen
    sched = LearnedScheduler.load(path, opt, safety=None)
    assert set(train(model, opt, sched, x, y, 30)) == {2}
    assert sched.get_last_lr() == [0.5]


def test_a_tensor_learning_rate_stays_the_same_tensor(tmp_path: Path) -> None:
    """As torch's own schedulers do, a rate given as a tensor (capturable or compiled optimizers) is updated in
    place: the optimizer keeps the tensor it was built with, and it holds the scheduler's rate."""
    path = write_policy(tmp_path / "p.rlopt", always=2)
    model, x, y = tiny_problem()
    lr = torch.tensor(0.1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = LearnedScheduler.load(path, opt, safety=None)
    train(model, opt, sched, x, y, 5)
    assert opt.param_groups[0]["lr"] is lr
    assert float(lr) == pytest.approx(0.1 / 0.9**5) and sched.get_last_lr() == pytest.approx([float(lr)])
    losses = [1.0, math.nan]  # and the safety net's back-off writes it the same way
    safe = LearnedScheduler.load(path, opt)
    for loss in losses:
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        safe.step(loss)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(safe.get_last_lr()[0])


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
    with pytest.raises(ValueError, match="reinforcement"):
        LearnedScheduler(torch.optim.SGD(model.parameters(), lr=0.1), path)


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


def test_unusable_policy_contents_are_policy_file_errors(tmp_path: Path) -> None:
    good = torch.load(write_policy(tmp_path / "p.rlopt"), weights_only=True)
    weights = {k: v.clone() for k, v in good["weights"].items()}
    weights["0.weight"][0, 0] = math.nan
    cases = {
        "nan_weights": ({**good, "weights": weights}, "non-finite"),
        "nan_clip": ({**good, "observation": {**good["observation"], "clip": math.nan}}, "clip"),
        "list_metadata": ({**good, "metadata": [1, 2]}, "metadata"),
        "no_optimizer": ({k: v for k, v in good.items() if k != "optimizer"}, "optimizer"),
        "bad_optimizer": ({**good, "optimizer": {"name": "lbfgs", "initial_lr": 0.1}}, "lbfgs"),
    }
    for name, (payload, message) in cases.items():
        torch.save(payload, tmp_path / f"{name}.rlopt")
        with pytest.raises(PolicyFileError, match=message):
            load_policy(tmp_path / f"{name}.rlopt")


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
    path = save_policy(tmp_path / "p.rlopt", net, obs_spec, actions, optimizer="rsgd", initial_lr=0.1,
                       activation=activation)
    model, _, _ = tiny_problem()
    sched = LearnedScheduler.load(path, RSGD(model.parameters(), lr=0.1))
    observations = torch.randn(n_obs, obs_spec.size) * 3
    with torch.no_grad():
        expected = net(observations).argmax(dim=1).tolist()
    return net, sched, observations, expected


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_greedy_action_is_the_argmax_of_the_network_outside_near_ties(tmp_path: Path, activation: str) -> None:
    """NumPy on cached weights reproduces the torch network's argmax wherever the two best Q-values
    are more than GreedyQ.TIE_TOLERANCE apart (relative); ties go to the lowest action."""
    net, sched, observations, expected = greedy_case(tmp_path, activation, seed=0, width=64, n_obs=2000)
    with torch.no_grad():
        q = net(observations)
    top2 = q.topk(2, dim=1).values
    clear = ((top2[:, 0] - top2[:, 1]) > GreedyQ.TIE_TOLERANCE * q.abs().max(dim=1).values.clamp(min=1)).tolist()
    actions = [sched.decide(o) for o in observations]
    assert sum(clear) > 1900
    assert all(a == e for a, e, c in zip(actions, expected, clear, strict=True) if c)
    assert np.allclose(sched._greedy.q_values(observations[0].numpy()), q[0].numpy(), rtol=1e-5, atol=1e-6)
    tie = GreedyQ(build_q_network([2, 3], activation), activation)
    tie.weights[0][:] = 0.0
    tie.biases[0][:] = 1.0
    assert tie(np.zeros(2, dtype=np.float32)) == 0


def test_recorded_env_observations_give_the_networks_action(tmp_path: Path) -> None:
    """Observations recorded from a real controlled run (not random ones) act as the network does."""
    path = write_policy(tmp_path / "p.rlopt", seed=5)
    make_opt = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    observations = recorded_observations(path, make_opt, 60)
    policy = load_policy(path)
    with torch.no_grad():
        expected = policy.q_network(torch.from_numpy(np.stack(observations))).argmax(dim=1).tolist()
    sched = LearnedScheduler(make_opt(tiny_problem()[0].parameters()), policy)
    assert [sched.decide(o) for o in observations] == expected


@pytest.mark.parametrize("mode", ["rsgd", "lr+rsgd"])
@pytest.mark.parametrize("gamma_action", [0, 1, 2])
def test_gamma_actions_write_param_groups(tmp_path: Path, mode: str, gamma_action: int) -> None:
    """Each Γ action multiplies 1 − Γ by its factor in every param group; the lr moves only under lr+rsgd."""
    actions = ActionSpec(mode=mode)  # type: ignore[arg-type]
    action = gamma_action if mode == "rsgd" else 3 * 1 + gamma_action  # lr+rsgd: lr factor 1 (keep)
    path = write_policy(tmp_path / "p.rlopt", mode, always=action)
    model, x, y = tiny_problem()
    params = list(model.parameters())
    opt = RSGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.02}], lr=0.05, seed=0)
    sched = LearnedScheduler(opt, path, total_steps=10, safety=None)  # the lr stays the policy's to move
    # the policy owns Γ from construction on: the schedule the optimizer was built with is replaced
    assert [g["reinforcement"] for g in opt.param_groups] == [actions.reinforcement_init] * 2
    steps = 4
    assert set(train(model, opt, sched, x, y, steps)) == {action}
    factor = actions.reinforcement_factors[gamma_action]
    expected = 1 - (1 - actions.reinforcement_init) * factor**steps
    assert [g["reinforcement"] for g in opt.param_groups] == pytest.approx([expected] * 2)
    assert sched.get_last_reinforcement() == pytest.approx([expected] * 2)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.02]  # keep-lr actions, no safety back-off


def test_gamma_and_lr_move_together_under_joint_control(tmp_path: Path) -> None:
    """lr+rsgd action 3·i + j applies lr factor i and 1 − Γ factor j in the same step."""
    actions = ActionSpec(mode="lr+rsgd")
    path = write_policy(tmp_path / "p.rlopt", "lr+rsgd", always=2)  # lr × 0.9, 1 − Γ × 1/0.9
    model, x, y = tiny_problem()
    opt = RSGD(model.parameters(), lr=0.1, seed=0)
    sched = LearnedScheduler(opt, path, safety=None)
    train(model, opt, sched, x, y, 3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.9**3)
    assert opt.param_groups[0]["reinforcement"] == pytest.approx(1 - (1 - actions.reinforcement_init) / 0.9**3)


def test_gamma_actions_stop_at_the_bounds(tmp_path: Path) -> None:
    """Weakening reinforcement without end clamps Γ at its lower bound; the optimizer never sees Γ < 0."""
    path = write_policy(tmp_path / "p.rlopt", "rsgd", always=2)
    model, x, y = tiny_problem()
    opt = RSGD(model.parameters(), lr=0.05, seed=0)
    sched = LearnedScheduler(opt, path)
    seen = []
    for _ in range(12):  # 0.5 / 0.9^7 > 1: Γ would pass 0 after seven steps
        train(model, opt, sched, x, y, 1)
        seen.append(opt.param_groups[0]["reinforcement"])
    lo, hi = sched.actions.reinforcement_bounds
    assert all(lo <= g <= hi for g in seen)
    assert seen[-1] == lo and seen[5] > lo


@pytest.mark.parametrize("mode", ["rsgd", "lr+rsgd"])
@pytest.mark.parametrize(
    "make_opt",
    [lambda p: torch.optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
     lambda p: torch.optim.Adam(p, lr=0.01)],
    ids=["sgd", "momentum", "adam"],
)
def test_gamma_policy_refused_without_gamma(tmp_path: Path, mode: str, make_opt) -> None:
    """A policy that sets Γ cannot drive an optimizer without one: a clear error, nothing written."""
    path = write_policy(tmp_path / "p.rlopt", mode)
    model, _, _ = tiny_problem()
    opt = make_opt(model.parameters())
    before = [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups]
    with pytest.raises(ValueError, match=r"reinforcement probability Γ.*use rlopt\.RSGD"):
        LearnedScheduler(opt, path)
    with pytest.raises(PolicyFileError, match=r"p\.rlopt.*reinforcement"):
        LearnedScheduler.load(path, opt)
    assert [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups] == before
    assert all("reinforcement" not in g for g in opt.param_groups)

"""Reinforcement, momentum and learning-rate schedules of rlopt.schedules."""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from rlopt.schedules import (
    ConstantReinforcement,
    ExpReinforcement,
    MomentumSchedule,
    PaperLRDecay,
    PowerReinforcement,
    ReinforcementSchedule,
    SutskeverMomentum,
    make_momentum_sgd,
    schedule_from_dict,
    schedule_to_dict,
)


def _roundtrip(obj: Any) -> Any:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ---------------------------------------------------------------- Γ(t) ------------------------------------


def test_power_reinforcement_hand_values() -> None:
    gamma = PowerReinforcement()
    assert gamma(1) == 0.0
    assert gamma(4) == pytest.approx(0.5)
    assert gamma(100) == pytest.approx(0.9)
    assert PowerReinforcement(a0=2.0, b0=1.0)(4) == pytest.approx(0.5)
    assert PowerReinforcement(a0=2.0, b0=1.0)(1) == 0.0  # 1 - 2 clamped
    assert PowerReinforcement(a0=0.0)(1) == 1.0


def test_exp_reinforcement_epoch_boundaries() -> None:
    g0, lam = 0.9, 0.1
    gamma = ExpReinforcement(gamma0=g0, lam=lam, steps_per_epoch=10)
    expected = {
        1: 1 - g0,  # first epoch: γ = γ0
        10: 1 - g0**10,
        11: 1 - (g0 * math.exp(-lam)) ** 11,  # second epoch
        20: 1 - (g0 * math.exp(-lam)) ** 20,
        21: 1 - (g0 * math.exp(-2 * lam)) ** 21,
    }
    for t, value in expected.items():
        assert gamma(t) == pytest.approx(value, rel=1e-12)
    assert ExpReinforcement(gamma0=1.0, lam=0.0)(50) == 0.0  # vanilla SGD
    defaults = ExpReinforcement()
    assert (defaults.gamma0, defaults.lam, defaults.steps_per_epoch) == (0.9995, 1e-4, 1)
    assert defaults(3) == pytest.approx(1 - (0.9995 * math.exp(-2e-4)) ** 3)


def test_constant_reinforcement() -> None:
    assert ConstantReinforcement(0.3)(1) == 0.3
    assert ConstantReinforcement(0.3)(10_000) == 0.3


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConstantReinforcement(1.2),
        lambda: ConstantReinforcement(-0.1),
        lambda: ExpReinforcement(gamma0=0.0),
        lambda: ExpReinforcement(gamma0=1.1),
        lambda: ExpReinforcement(lam=-1.0),
        lambda: ExpReinforcement(steps_per_epoch=0),
        lambda: PowerReinforcement(a0=-1.0),
        lambda: PowerReinforcement(b0=-0.5),
        lambda: SutskeverMomentum(mu_max=1.0),
        lambda: SutskeverMomentum(interval=0),
    ],
)
def test_invalid_schedule_arguments(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("schedule", [ConstantReinforcement(0.5), ExpReinforcement(), PowerReinforcement()])
def test_reinforcement_schedules_are_one_based_and_typed(schedule: Any) -> None:
    assert isinstance(schedule, ReinforcementSchedule)
    with pytest.raises(ValueError):
        schedule(0)
    values = [schedule(t) for t in (1, 2, 10, 1000, 10**6)]
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values)


def test_schedules_are_frozen() -> None:
    with pytest.raises(AttributeError):
        PowerReinforcement().a0 = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantReinforcement(0.25),
        ExpReinforcement(0.99, 1e-3, 7),
        PowerReinforcement(0.5, 0.3),
        SutskeverMomentum(0.9, 100),
    ],
)
def test_schedule_dict_round_trip(schedule: Any) -> None:
    data = _roundtrip(schedule_to_dict(schedule))
    assert data["type"] == type(schedule).__name__
    assert schedule_from_dict(data) == schedule


def test_schedule_dict_rejects_unknown() -> None:
    assert schedule_to_dict(lambda t: 0.5) is None
    with pytest.raises(ValueError, match="unknown"):
        schedule_from_dict({"type": "Nope"})


# ---------------------------------------------------------------- Sutskever Eq. (5) -----------------------


def test_sutskever_momentum_hand_values() -> None:
    mu = SutskeverMomentum(mu_max=0.999)
    expected = {0: 0.5, 249: 0.5, 250: 0.75, 499: 0.75, 500: 1 - 1 / 6, 750: 0.875, 2250: 0.95}
    for t, value in expected.items():
        # 1 - 2^(-1 - log2(k)) with k = floor(t/250) + 1
        assert value == pytest.approx(1 - 2 ** (-1 - math.log2(t // 250 + 1)))
        assert mu(t) == pytest.approx(value)
    assert SutskeverMomentum(mu_max=0.8)(500) == 0.8
    assert SutskeverMomentum(mu_max=0.8)(10**7) == 0.8
    assert SutskeverMomentum(mu_max=0.99, interval=10)(10) == 0.75


# ---------------------------------------------------------------- PaperLRDecay ----------------------------


def _sgd(lr: float = 0.8, momentum: float = 0.0) -> torch.optim.SGD:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr, momentum=momentum)


def _step_epochs(opt: torch.optim.Optimizer, sched: Any, n: int) -> None:
    for _ in range(n):
        opt.step()
        sched.step()


def test_paper_lr_decay_hand_values() -> None:
    eta0, beta = 0.8, 0.5
    opt = _sgd(eta0)
    decay = PaperLRDecay(opt, beta=beta, min_lr=0.0)
    seen = [opt.param_groups[0]["lr"]]
    for _ in range(3):
        _step_epochs(opt, decay, 1)
        seen.append(opt.param_groups[0]["lr"])
    assert seen == pytest.approx([eta0, eta0 * beta, eta0 * beta**3, eta0 * beta**6])
    assert decay.get_last_lr() == pytest.approx([eta0 * beta**6])


def test_paper_lr_decay_floor_and_defaults() -> None:
    opt = _sgd(0.8)
    decay = PaperLRDecay(opt, beta=0.5, min_lr=0.1)
    _step_epochs(opt, decay, 2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # 0.8 / 8 = 0.1
    _step_epochs(opt, decay, 3)
    assert opt.param_groups[0]["lr"] == 0.1
    default = PaperLRDecay(_sgd(0.8))
    assert (default.beta, default.min_lr) == (0.999, 0.02)


def test_paper_lr_decay_closed_form_matches_recursion() -> None:
    opt = _sgd(0.8)
    decay = PaperLRDecay(opt, beta=0.9, min_lr=0.05)
    _step_epochs(opt, decay, 7)
    other = _sgd(0.8)
    closed = PaperLRDecay(other, beta=0.9, min_lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # step(epoch) is deprecated in torch
        closed.step(7)
    assert other.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert opt.param_groups[0]["lr"] == pytest.approx(max(0.05, 0.8 * 0.9**28))


def test_paper_lr_decay_state_dict() -> None:
    opt = _sgd(0.8)
    decay = PaperLRDecay(opt, beta=0.9, min_lr=0.05)
    _step_epochs(opt, decay, 3)
    state = _roundtrip(decay.state_dict())
    assert "optimizer" not in state
    opt2 = _sgd(0.8)
    other = PaperLRDecay(opt2, beta=0.5, min_lr=0.0)
    other.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())
    _step_epochs(opt, decay, 1)
    _step_epochs(opt2, other, 1)
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.8 * 0.9**10)


@pytest.mark.parametrize("kwargs", [{"beta": 0.0}, {"beta": 1.5}, {"min_lr": -0.1}])
def test_paper_lr_decay_invalid(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PaperLRDecay(_sgd(), **kwargs)


# ---------------------------------------------------------------- MomentumSchedule -------------------------


def test_momentum_schedule_sets_momentum_before_each_update() -> None:
    opt = _sgd(momentum=0.9)
    sched = MomentumSchedule(opt, PowerReinforcement())
    seen = [opt.param_groups[0]["momentum"]]
    for _ in range(3):
        _step_epochs(opt, sched, 1)
        seen.append(opt.param_groups[0]["momentum"])
    assert seen == pytest.approx([0.0, 1 - 1 / math.sqrt(2), 1 - 1 / math.sqrt(3), 0.5])
    assert sched.get_last_momentum() == pytest.approx([0.5])
    assert sched.last_step == 3


def test_momentum_schedule_requires_momentum_key() -> None:
    adam = torch.optim.Adam([nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="momentum"):
        MomentumSchedule(adam, PowerReinforcement())
    with pytest.raises(ValueError):
        MomentumSchedule(_sgd(momentum=0.9), lambda t: 1.5)


def test_momentum_schedule_state_dict() -> None:
    opt = _sgd(momentum=0.9)
    sched = MomentumSchedule(opt, SutskeverMomentum(0.99, interval=2))
    _step_epochs(opt, sched, 5)
    state = _roundtrip(sched.state_dict())
    other = MomentumSchedule(_sgd(momentum=0.9), PowerReinforcement())
    other.load_state_dict(state)
    assert other.last_step == 5 and other.schedule == SutskeverMomentum(0.99, interval=2)
    assert other.get_last_momentum() == pytest.approx([1 - 1 / 8])  # μ(6): k = 4


def _reference_momentum(
    p0: torch.Tensor, grads: list[torch.Tensor], lr: float, wd: float, nesterov: bool
) -> torch.Tensor:
    """Eq. (6) (or torch's Nesterov form) with ρ_t = 1 - 1/√t and ν_0 = 0, by hand."""
    p, v = p0.clone(), torch.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        rho = 1 - 1 / math.sqrt(t)
        g = g + wd * p
        v = rho * v + g
        p = p - lr * (g + rho * v if nesterov else v)
    return p


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adaptive_momentum_from_rho_zero_follows_eq6(nesterov: bool, weight_decay: float) -> None:
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(50, generator=gen)
    grads = [torch.randn(50, generator=gen) for _ in range(6)]
    p = nn.Parameter(p0.clone())
    opt, sched = make_momentum_sgd(
        [p], 0.1, PowerReinforcement(), nesterov=nesterov, weight_decay=weight_decay
    )
    assert opt.param_groups[0]["momentum"] == 0.0 and opt.param_groups[0]["nesterov"] is nesterov
    for g in grads:
        p.grad = g.clone()
        opt.step()
        sched.step()
    expected = _reference_momentum(p0, grads, 0.1, weight_decay, nesterov)
    torch.testing.assert_close(p.detach(), expected)


def test_momentum_dropping_to_zero_mid_run_restarts_buffer() -> None:
    # ρ = (0.9, 0, 0.9): ν_2 = g_2, so ν_3 = 0.9 g_2 + g_3 (not 0.9 ν_1 + g_3)
    rhos = {1: 0.9, 2: 0.0, 3: 0.9}
    p = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=1.0, momentum=0.9)
    sched = MomentumSchedule(opt, lambda t: rhos.get(t, 0.9))
    grads = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])]
    for g in grads:
        p.grad = g.clone()
        opt.step()
        sched.step()
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], torch.tensor([0.0, 0.9, 1.0]))

"""The controller core: features, actions, bounds — shared by the env and the learned scheduler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlopt.control import FEATURE_NAMES, ActionSpec, Controller, ObservationSpec, _ParameterStatistics, fused_kernels
from rlopt.optim import RSGD

needs_numba = pytest.mark.skipif(fused_kernels() is None, reason="the fused kernels need numba (rlopt[fast])")
BOTH_PATHS = [False, pytest.param(True, marks=needs_numba)]


def sgd_on(values: list[float], lr: float = 0.1) -> tuple[torch.nn.Parameter, torch.optim.SGD]:
    p = torch.nn.Parameter(torch.tensor(values))
    return p, torch.optim.SGD([p], lr=lr)


def test_observation_has_one_finite_float32_per_feature() -> None:
    p, opt = sgd_on([1.0, -2.0, 3.0])
    ctrl = Controller(opt)
    p.grad = torch.tensor([0.1, -0.2, 0.3])
    obs = ctrl.observe(2.3)
    assert obs.dtype == np.float32
    assert obs.shape == (len(FEATURE_NAMES),) == (ObservationSpec().size,)
    assert np.isfinite(obs).all()
    named = dict(zip(FEATURE_NAMES, obs.tolist(), strict=True))
    assert named["loss"] == pytest.approx(0.0)  # ln(L_0 / L_0)
    assert named["log_lr"] == pytest.approx(-1.0)
    assert named["log_one_minus_reinf"] == pytest.approx(0.0)


def test_parameter_and_gradient_features() -> None:
    p, opt = sgd_on([1.0, 2.0, 3.0, 4.0])
    ctrl = Controller(opt)
    p.grad = torch.tensor([1.0, -1.0, 1.0, -1.0])
    ctrl.observe(1.0)
    with torch.no_grad():
        p.copy_(torch.tensor([2.0, 2.0, 1.0, 4.0]))  # one up, one down, two unchanged
    p.grad = torch.tensor([3.0, -1.0, 0.0, 0.0])  # mean |g| = 1 = G_0; Σg⁺ = 3, Σg⁻ = 1
    named = dict(zip(FEATURE_NAMES, ctrl.observe(0.5).tolist(), strict=True))
    assert named["params_increased"] == pytest.approx(0.25)
    assert named["params_decreased"] == pytest.approx(0.25)
    assert named["param_change_ratio"] == pytest.approx(math.log10((3 / 4) / (9 / 4)), rel=1e-5)
    assert named["grad"] == pytest.approx(0.0, abs=1e-6)
    assert named["grad_pos_sum"] == pytest.approx(math.log(3 / 4), rel=1e-5)
    assert named["grad_neg_sum"] == pytest.approx(math.log(1 / 4), rel=1e-5)
    assert named["loss"] == pytest.approx(math.log(0.5), rel=1e-5)
    assert named["loss_prev"] == pytest.approx(0.0)
    assert named["loss_decrease_run"] == pytest.approx(1 / 20)
    assert named["loss_fluctuation"] == pytest.approx(0.5 / 0.75, rel=1e-5)


def test_observation_stays_finite_when_training_diverges() -> None:
    p, opt = sgd_on([1.0, 2.0])
    ctrl = Controller(opt)
    p.grad = torch.ones(2)
    ctrl.observe(1.0)
    with torch.no_grad():
        p.fill_(float("nan"))
    p.grad = torch.full((2,), float("inf"))
    obs = ctrl.observe(float("nan"))
    assert np.isfinite(obs).all()
    assert np.abs(obs).max() <= ObservationSpec().clip
    assert not ctrl.params_finite


@pytest.mark.parametrize("action, factor", [(0, 0.9), (1, 1.0), (2, 1 / 0.9)])
def test_lr_actions_multiply_every_group(action: int, factor: float) -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}])
    assert Controller(opt).act(action)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * factor, 0.01 * factor])


def test_leaving_the_bounds_is_reported_and_clamped() -> None:
    _, opt = sgd_on([1.0], lr=0.49)
    ctrl = Controller(opt)
    assert not ctrl.act(2)
    assert opt.param_groups[0]["lr"] == 0.5
    _, opt = sgd_on([1.0], lr=0.00105)
    assert not Controller(opt).act(0)
    assert opt.param_groups[0]["lr"] == 0.001


def test_rsgd_actions_scale_one_minus_gamma() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = RSGD([p], lr=0.1, seed=0)
    ctrl = Controller(opt, actions=ActionSpec(mode="rsgd", reinforce_init=0.5))
    assert opt.param_groups[0]["reinforcement"] == 0.5  # the controller owns Γ from the start
    assert ctrl.act(0)  # 1 − Γ: 0.5 → 0.45
    assert opt.param_groups[0]["reinforcement"] == pytest.approx(0.55)
    assert ctrl.hyperparameters() == pytest.approx((0.1, 0.55))


def test_joint_mode_decodes_both_factors() -> None:
    spec = ActionSpec(mode="lr+rsgd")
    assert spec.n_actions == 9
    assert spec.decode(0) == (0.9, 0.9)
    assert spec.decode(5) == (1.0, 1 / 0.9)
    assert spec.decode(7) == (1 / 0.9, 1.0)
    with pytest.raises(ValueError, match="outside Discrete"):
        spec.decode(9)


def test_rsgd_mode_refuses_an_optimizer_without_reinforcement() -> None:
    _, opt = sgd_on([1.0])
    with pytest.raises(ValueError, match="reinforcement"):
        Controller(opt, actions=ActionSpec(mode="rsgd"))


def test_specs_round_trip_through_dicts() -> None:
    obs, act = ObservationSpec(loss_window=10), ActionSpec(mode="lr+rsgd", lr_bounds=(1e-4, 0.1))
    assert ObservationSpec.from_dict(obs.to_dict()) == obs
    assert ActionSpec.from_dict(act.to_dict()) == act


def test_statistics_buffers_survive_a_state_round_trip() -> None:
    p, opt = sgd_on([1.0, 2.0, 3.0])
    a = Controller(opt)
    for value in (0.5, -0.5, 0.25):
        p.grad = torch.full((3,), value)
        opt.step()
        a.observe(1.0 + value)
    saved = a.state_dict()
    saved_prev = saved["prev_params"].clone()
    b = Controller(opt)
    b.load_state_dict(saved)
    p.grad = torch.tensor([0.3, -0.1, 0.0])
    opt.step()
    expected = a.observe(0.9)
    assert np.array_equal(b.observe(0.9), expected)
    assert torch.equal(saved["prev_params"], saved_prev)  # the loaded state is not written into


def naive_statistics(params: list[torch.Tensor], previous: list[torch.Tensor] | None) -> list[float]:
    """Σ|g|, Σg, Σsign Δθ, #changed, Σ|Δθ|, Σ|θ| written the obvious way, in float64."""
    g = torch.cat([p.grad.reshape(-1) for p in params]).double()
    theta = torch.cat([p.detach().reshape(-1) for p in params]).double()
    prev = theta if previous is None else torch.cat([q.reshape(-1) for q in previous]).double()
    delta = theta - prev
    return [g.abs().sum().item(), g.sum().item(), delta.sign().sum().item(),
            delta.sign().abs().sum().item(), delta.abs().sum().item(), theta.abs().sum().item()]


@pytest.mark.parametrize("fused", BOTH_PATHS)
def test_statistics_match_a_naive_computation_over_several_steps(fused: bool) -> None:
    """Buffers for θ_t and θ_{t−1} alternate between steps; channels-last weights are read in memory order."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))
    model[0].to(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    params = list(model.parameters())
    stats = _ParameterStatistics(params, fused=fused)
    assert stats.fused == fused
    previous = None
    for step in range(5):
        opt.zero_grad()
        model(torch.randn(8, 2, 6, 6)).square().mean().backward()
        opt.step()
        if step == 2:  # a parameter that did not change: neither increased nor decreased
            with torch.no_grad():
                params[-1].copy_(previous[-1])
        expected = naive_statistics(params, previous)
        assert stats.compute() == pytest.approx(expected, rel=1e-4, abs=1e-6)
        previous = [p.detach().clone() for p in params]
    assert torch.equal(stats.previous_params, torch.cat([_flat_memory_order(p) for p in params]))


def _flat_memory_order(p: torch.Tensor) -> torch.Tensor:
    if p.dim() == 4 and not p.is_contiguous():
        return p.detach().permute(0, 2, 3, 1).reshape(-1)  # channels-last storage order
    return p.detach().reshape(-1)


def _cnn_statistics(fused: bool, steps: int, diverge_at: int | None = None,
                    dtype: torch.dtype = torch.float32) -> list[list[float]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 26 * 26, 10)).to(dtype)
    model[0].to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    stats = _ParameterStatistics(list(model.parameters()), fused=fused)
    rows = []
    for step in range(steps):
        opt.zero_grad()
        x = torch.randn(16, 1, 28, 28, dtype=dtype)
        torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (16,))).backward()
        if step == diverge_at:
            model[-1].weight.grad[0, :3] = torch.tensor([math.inf, -math.inf, math.nan])
        opt.step()
        rows.append(list(stats.compute()))
    return rows


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_and_torch_statistics_agree_through_divergence(dtype: torch.dtype) -> None:
    """The numba pass and the torch calls compute the same sums (up to rounding), NaN and inf included."""
    fused = _cnn_statistics(True, 6, diverge_at=4, dtype=dtype)
    plain = _cnn_statistics(False, 6, diverge_at=4, dtype=dtype)
    for a, b in zip(fused[:4], plain[:4], strict=True):
        assert a == pytest.approx(b, rel=1e-5 if dtype == torch.float32 else 1e-12, abs=1e-7)
    for a, b in zip(fused[4:], plain[4:], strict=True):
        assert np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(np.isinf(a), np.isinf(b))
        assert any(math.isnan(v) for v in a)
        assert a[2:4] == pytest.approx(b[2:4])  # sign counts: a NaN change counts as no change, as torch.sign


@needs_numba
def test_fused_statistics_are_reproducible_across_buffers() -> None:
    """Same inputs at other addresses give the same bits: vectorized sums do not depend on alignment."""
    assert _cnn_statistics(True, 3) == _cnn_statistics(True, 3)
    torch.manual_seed(1)
    base = torch.randn(20_001)
    results = set()
    for offset in range(8):  # the same values at every float offset within a 32-byte line
        storage = torch.zeros(20_001 + offset)
        param = storage[offset:]
        param.copy_(base)
        param.grad = base.clone()
        stats = _ParameterStatistics([param], fused=True)
        stats.compute()
        param.mul_(0.5)
        results.add(stats.compute())
    assert len(results) == 1


def test_fused_true_without_numba_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    fused_kernels.cache_clear()
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    try:
        p, opt = sgd_on([1.0, 2.0])
        with pytest.raises(ImportError, match=r"rlopt\[fast\]"):
            Controller(opt, fused=True)
        controller = Controller(opt)  # the default falls back to torch
        p.grad = torch.ones(2)
        opt.step()
        assert np.isfinite(controller.observe(1.0)).all()
        assert controller._statistics is not None and not controller._statistics.fused
    finally:
        fused_kernels.cache_clear()


@needs_numba
def test_fused_statistics_with_many_tensors_and_a_missing_gradient() -> None:
    """300 tensors (one compiled kernel serves any count) and a parameter without gradient."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(7)) for _ in range(300)]
    for p in params:
        p.grad = torch.randn(7)
    params[3].grad = None
    fused, plain = _ParameterStatistics(params, fused=True), _ParameterStatistics(params, fused=False)
    for _ in range(3):
        assert fused.compute() == pytest.approx(plain.compute(), rel=1e-5)
        with torch.no_grad():
            for p in params[::2]:
                p.add_(torch.randn(7))
    assert torch.equal(fused.previous_params, plain.previous_params)

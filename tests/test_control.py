"""The controller core: features, actions, bounds — shared by the env and the learned scheduler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlopt.control import FEATURE_NAMES, ActionSpec, Controller, ObservationSpec, reinforcement_of
from rlopt.optim import RSGD


def sgd_on(values: list[float], lr: float = 0.1) -> tuple[torch.nn.Parameter, torch.optim.SGD]:
    p = torch.nn.Parameter(torch.tensor(values))
    return p, torch.optim.SGD([p], lr=lr)


def step_with(p: torch.Tensor, opt: torch.optim.Optimizer, grad: list[float]) -> None:
    p.grad = torch.tensor(grad)
    opt.step()


def test_observation_has_one_finite_float32_per_feature() -> None:
    p, opt = sgd_on([1.0, -2.0, 3.0])
    ctrl = Controller(opt)
    step_with(p, opt, [0.1, -0.2, 0.3])
    obs = ctrl.observe(2.3)
    assert obs.dtype == np.float32
    assert obs.shape == (len(FEATURE_NAMES),) == (ObservationSpec().size,)
    assert np.isfinite(obs).all()
    named = dict(zip(FEATURE_NAMES, obs.tolist(), strict=True))
    assert named["loss"] == pytest.approx(0.0)  # ln(L_0 / L_0)
    assert named["log_lr"] == pytest.approx(-1.0)
    assert named["log_one_minus_reinforcement"] == pytest.approx(0.0)


def test_parameter_and_gradient_features() -> None:
    p, opt = sgd_on([1.0, 2.0, 3.0, 4.0], lr=1.0)
    ctrl = Controller(opt)
    step_with(p, opt, [1.0, -1.0, 1.0, -1.0])  # θ = [0, 3, 2, 5]; G_0 = 1
    ctrl.observe(1.0)
    step_with(p, opt, [3.0, -1.0, 0.0, 0.0])  # Δθ = [-3, 1, 0, 0]: one down, one up, two unchanged
    named = dict(zip(FEATURE_NAMES, ctrl.observe(0.5).tolist(), strict=True))
    assert named["params_increased"] == pytest.approx(0.25)
    assert named["params_decreased"] == pytest.approx(0.25)
    assert named["param_change_ratio"] == pytest.approx(math.log10((4 / 4) / (14 / 4)), rel=1e-5)
    assert named["grad"] == pytest.approx(0.0, abs=1e-6)  # mean |g| = 1 = G_0
    assert named["grad_pos_sum"] == pytest.approx(math.log(3 / 4), rel=1e-5)
    assert named["grad_neg_sum"] == pytest.approx(math.log(1 / 4), rel=1e-5)
    assert named["loss"] == pytest.approx(math.log(0.5), rel=1e-5)
    assert named["loss_prev"] == pytest.approx(0.0)
    assert named["loss_decrease_run"] == pytest.approx(1 / 20)
    assert named["loss_fluctuation"] == pytest.approx(0.5 / 0.75, rel=1e-5)


def _train_cnn_observations(zero_grad_after_step: bool, steps: int = 4) -> list[np.ndarray]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctrl = Controller(opt)
    data = torch.Generator().manual_seed(1)
    observations = []
    for _ in range(steps):
        x, y = torch.randn(8, 1, 8, 8, generator=data), torch.randint(0, 3, (8,), generator=data)
        if not zero_grad_after_step:
            opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if zero_grad_after_step:
            opt.zero_grad()  # set_to_none=True: the gradients are gone before the controller observes
        observations.append(ctrl.observe(loss.item()))
    return observations


def test_features_do_not_depend_on_where_zero_grad_is_called() -> None:
    before, after = _train_cnn_observations(False), _train_cnn_observations(True)
    for a, b in zip(before, after, strict=True):
        assert np.array_equal(a, b)
    grad_features = [FEATURE_NAMES.index(n) for n in ("grad", "grad_pos_sum", "grad_neg_sum")]
    assert all(np.abs(obs[grad_features]).max() < 5 for obs in after)  # not the clip of missing gradients


def test_observing_without_an_optimizer_step_is_an_error() -> None:
    p, opt = sgd_on([1.0, 2.0])
    ctrl = Controller(opt)
    with pytest.raises(RuntimeError, match=r"optimizer\.step\(\)"):
        ctrl.observe(1.0)
    step_with(p, opt, [1.0, 1.0])
    ctrl.observe(1.0)
    with pytest.raises(RuntimeError, match=r"optimizer\.step\(\)"):
        ctrl.observe(1.0)  # the same step twice would repeat stale statistics


def test_observation_stays_finite_when_training_diverges() -> None:
    p, opt = sgd_on([1.0, 2.0])
    ctrl = Controller(opt)
    step_with(p, opt, [1.0, 1.0])
    ctrl.observe(1.0)
    step_with(p, opt, [math.inf, math.nan])
    obs = ctrl.observe(float("nan"))
    assert np.isfinite(obs).all()
    assert np.abs(obs).max() <= ObservationSpec().clip
    assert not ctrl.params_finite


def test_any_loss_sequence_gives_finite_observations() -> None:
    """Property-style: random finite and non-finite losses in any order never raise or leak NaN."""
    rng = np.random.default_rng(0)
    specials = [math.inf, -math.inf, math.nan, 0.0, -1.0, 1e-300, 1e300]
    for trial in range(30):
        p, opt = sgd_on([1.0, -1.0, 0.5])
        ctrl = Controller(opt, ObservationSpec(loss_window=int(rng.integers(2, 6))))
        for _ in range(25):
            loss = float(rng.choice(specials)) if rng.random() < 0.4 else float(rng.lognormal(0, 3))
            step_with(p, opt, rng.normal(size=3).tolist())
            obs = ctrl.observe(loss)
            assert np.isfinite(obs).all(), (trial, loss)
            assert np.abs(obs).max() <= ObservationSpec().clip


def test_inf_oldest_loss_in_the_window_then_finite_loss() -> None:
    """The crash of a real divergence: ln(L_t / W_first) with W_first = inf must not raise."""
    p, opt = sgd_on([1.0])
    ctrl = Controller(opt)
    for loss in (math.inf, 1.0, 0.5):
        step_with(p, opt, [0.1])
        obs = ctrl.observe(loss)
    assert obs[FEATURE_NAMES.index("loss_delta")] == -ObservationSpec().clip


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


def test_rsgd_actions_scale_one_minus_reinforcement() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = RSGD([p], lr=0.1, seed=0)
    ctrl = Controller(opt, actions=ActionSpec(mode="rsgd", reinforcement_init=0.5))
    assert opt.param_groups[0]["reinforcement"] == 0.5  # the controller owns Γ from the start
    assert ctrl.act(0)  # 1 − Γ: 0.5 → 0.45
    assert opt.param_groups[0]["reinforcement"] == pytest.approx(0.55)
    assert reinforcement_of(opt) == pytest.approx(0.55)
    assert ctrl.hyperparameters() == pytest.approx((0.1, 0.55))
    assert "reinforce_prob" not in opt.param_groups[0]


def test_reinforcement_of_optimizers_without_it_is_zero() -> None:
    _, opt = sgd_on([1.0])
    assert reinforcement_of(opt) == 0.0
    assert reinforcement_of(RSGD([torch.nn.Parameter(torch.ones(1))], reinforcement=0.3)) == 0.3


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


@pytest.mark.parametrize("clip", [math.nan, math.inf, 0.0])
def test_observation_spec_refuses_a_clip_that_is_not_finite_and_positive(clip: float) -> None:
    with pytest.raises(ValueError, match="clip"):
        ObservationSpec(clip=clip)


def test_state_holds_no_parameters_and_a_restored_controller_continues_identically() -> None:
    p, opt = sgd_on([1.0, 2.0, 3.0])
    a = Controller(opt)
    for value in (0.5, -0.5, 0.25):
        step_with(p, opt, [value] * 3)
        a.observe(1.0 + value)
    saved = a.state_dict()
    assert not any(isinstance(v, torch.Tensor) for v in saved.values())
    assert len(repr(saved)) < 1000  # a few numbers, whatever the model's size
    a.remove_hooks()
    b = Controller(opt)
    b.load_state_dict(saved)
    c = Controller(torch.optim.SGD([q := torch.nn.Parameter(p.detach().clone())], lr=0.1))
    c.load_state_dict(saved)
    step_with(p, opt, [0.3, -0.1, 0.0])
    step_with(q, c.optimizer, [0.3, -0.1, 0.0])
    assert np.array_equal(b.observe(0.9), c.observe(0.9))


def naive_statistics(params: list[torch.Tensor], before: list[torch.Tensor]) -> list[float]:
    """Σ|g|, Σg, Σsign Δθ, #changed, Σ|Δθ|, Σ|θ| written the obvious way, in float64."""
    g = torch.cat([p.grad.reshape(-1) for p in params]).double()
    theta = torch.cat([p.detach().reshape(-1) for p in params]).double()
    delta = theta - torch.cat([q.reshape(-1) for q in before]).double()
    return [g.abs().sum().item(), g.sum().item(), delta.sign().sum().item(),
            delta.sign().abs().sum().item(), delta.abs().sum().item(), theta.abs().sum().item()]


def test_statistics_match_a_naive_computation_over_several_steps() -> None:
    """Channels-last weights are read in memory order; a parameter without gradient counts zeros."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))
    model[0].to(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    params = list(model.parameters())
    ctrl = Controller(opt)
    for step in range(5):
        opt.zero_grad(set_to_none=step % 2 == 0)
        model(torch.randn(8, 2, 6, 6)).square().mean().backward()
        before = [p.detach().clone() for p in params]
        if step == 2:
            params[-1].grad = None  # Adam skips it: it neither increases nor decreases
        opt.step()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.grad = g
        expected = naive_statistics(params, before)
        ctrl.observe(1.0)
        assert list(ctrl._statistics.latest or ()) == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_a_dropped_controller_no_longer_measures_steps() -> None:
    import gc
    import weakref

    _, opt = sgd_on([1.0])
    ctrl = Controller(opt)
    ref = weakref.ref(ctrl)
    del ctrl
    gc.collect()
    assert ref() is None
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks

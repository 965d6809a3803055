"""R-SGD (Eq. (8) of Huang & Toyoizumi) and SGD with Langevin noise (Eq. (5) of Zhang et al.)."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from rlopt.optim import RSGD, LangevinSGD
from rlopt.schedules import ConstantReinforcement, ExpReinforcement, PowerReinforcement

Batch = tuple[torch.Tensor, torch.Tensor]


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


def _batches(n: int, seed: int = 1) -> list[Batch]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(10, 8, generator=gen), torch.randint(4, (10,), generator=gen)) for _ in range(n)]


def _train(model: nn.Module, opt: torch.optim.Optimizer, batches: list[Batch]) -> None:
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _params_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def _roundtrip(obj: Any) -> Any:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _two_steps(prob: float, g0: torch.Tensor, g1: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Buffer g̃_2 after updates with gradients g0 then g1 under constant Γ = prob."""
    p = nn.Parameter(torch.zeros_like(g0))
    opt = RSGD([p], lr=0.1, reinforcement=prob, seed=seed)
    for g in (g0, g1):
        p.grad = g.clone()
        opt.step()
    return opt.state[p]["reinforced_grad"]


# ---------------------------------------------------------------- Eq. (8) ---------------------------------


@pytest.mark.parametrize("prob", [0.2, 0.5, 0.8])
def test_fraction_reinforced_is_gamma(prob: float) -> None:
    n = 20_000
    g0, g1 = torch.ones(n), torch.full((n,), 2.0)
    buf = _two_steps(prob, g0, g1)
    assert set(buf.unique().tolist()) <= {2.0, 3.0}
    frac = (buf == 3.0).double().mean().item()
    assert abs(frac - prob) < 4 * math.sqrt(prob * (1 - prob) / n)


@pytest.mark.parametrize("prob", [0.2, 0.5, 0.8])
def test_expected_reinforced_grad(prob: float) -> None:
    # E[g̃_t | g̃_{t-1}] = g_t + Γ g̃_{t-1}, checked on the mean over components
    n = 20_000
    gen = torch.Generator().manual_seed(5)
    g0 = torch.rand(n, generator=gen) + 0.5
    g1 = torch.randn(n, generator=gen)
    buf = _two_steps(prob, g0, g1, seed=11)
    extra = buf - g1
    sem = extra.std().item() / math.sqrt(n)
    assert abs(extra.mean().item() - prob * g0.mean().item()) < 4 * sem


def test_update_uses_reinforced_grad() -> None:
    g0, g1 = torch.ones(1000), torch.full((1000,), 2.0)
    p = nn.Parameter(torch.zeros(1000))
    opt = RSGD([p], lr=0.1, reinforcement=0.5, seed=0)
    for g in (g0, g1):
        p.grad = g.clone()
        opt.step()
    expected = -0.1 * g0 - 0.1 * opt.state[p]["reinforced_grad"]
    torch.testing.assert_close(p.detach(), expected)
    assert opt.state[p]["step"] == 2


def test_gamma_one_sums_gradients() -> None:
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = RSGD([p], lr=0.5, reinforcement=1.0)
    grads = [torch.tensor([1.0, 0.0, -1.0]), torch.tensor([2.0, 1.0, 1.0]), torch.tensor([-4.0, 3.0, 0.5])]
    sums = [torch.tensor([1.0, 0.0, -1.0]), torch.tensor([3.0, 1.0, 0.0]), torch.tensor([-1.0, 4.0, 0.5])]
    expected_p = torch.tensor([1.0, -2.0, 0.5])
    for g, s in zip(grads, sums, strict=True):
        p.grad = g
        opt.step()
        expected_p = expected_p - 0.5 * s
        assert torch.equal(opt.state[p]["reinforced_grad"], s)
    torch.testing.assert_close(p.detach(), expected_p)
    assert opt.state_dict()["rng"]["generators"] == {}  # Γ = 1 needs no random draw


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("zero", [0.0, ConstantReinforcement(0.0)])
def test_gamma_zero_is_sgd_bit_for_bit(weight_decay: float, zero: Any) -> None:
    batches = _batches(20)
    m_sgd, m_rsgd = _mlp(), _mlp()
    _train(m_sgd, torch.optim.SGD(m_sgd.parameters(), lr=0.3, weight_decay=weight_decay), batches)
    opt = RSGD(m_rsgd.parameters(), lr=0.3, reinforcement=zero, weight_decay=weight_decay)
    _train(m_rsgd, opt, batches)
    assert _params_equal(m_sgd, m_rsgd)
    assert opt.state_dict()["rng"]["generators"] == {}  # no random draw for Γ = 0


def test_maximize_matches_sgd() -> None:
    batches = _batches(5)
    m_sgd, m_rsgd = _mlp(), _mlp()
    _train(m_sgd, torch.optim.SGD(m_sgd.parameters(), lr=0.1, weight_decay=0.1, maximize=True), batches)
    _train(
        m_rsgd, RSGD(m_rsgd.parameters(), lr=0.1, reinforcement=0.0, weight_decay=0.1, maximize=True), batches
    )
    assert _params_equal(m_sgd, m_rsgd)


def test_default_schedule_first_step_is_sgd_then_reinforces() -> None:
    batches = _batches(6)
    m_sgd, m_rsgd = _mlp(), _mlp()
    _train(m_sgd, torch.optim.SGD(m_sgd.parameters(), lr=0.8), batches[:1])
    opt = RSGD(m_rsgd.parameters(), seed=0)
    assert opt.reinforcement() == 0.0  # Γ(1) = 1 - 1/√1
    _train(m_rsgd, opt, batches[:1])
    assert _params_equal(m_sgd, m_rsgd)
    assert opt.reinforcement() == pytest.approx(1 - 1 / math.sqrt(2))
    _train(m_rsgd, opt, batches[1:])
    assert opt.reinforcement() == pytest.approx(1 - 1 / math.sqrt(7))
    assert "reinforce_prob" not in opt.param_groups[0]  # Γ has one name: "reinforcement"


# ---------------------------------------------------------------- control ---------------------------------


def test_controller_override_takes_effect_next_step() -> None:
    p = nn.Parameter(torch.zeros(500))
    opt = RSGD([p], lr=0.1, reinforcement=PowerReinforcement(), seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        p.grad = torch.randn(500, generator=gen)
        opt.step()
    group = opt.param_groups[0]
    assert opt.reinforcement() == pytest.approx(1 - 1 / math.sqrt(5))  # Γ(5), the next step's
    group["reinforcement"] = 0.0
    assert opt.reinforcement() == 0.0
    p.grad = torch.randn(500, generator=gen)
    opt.step()
    assert torch.equal(opt.state[p]["reinforced_grad"], p.grad)
    group["reinforcement"] = 1.0
    previous = opt.state[p]["reinforced_grad"].clone()
    p.grad = torch.randn(500, generator=gen)
    opt.step()
    assert torch.equal(opt.state[p]["reinforced_grad"], previous + p.grad)
    group["reinforcement"] = PowerReinforcement()  # back to the schedule, at the current index
    assert opt.reinforcement() == pytest.approx(1 - 1 / math.sqrt(7))


def test_lr_override_takes_effect() -> None:
    p = nn.Parameter(torch.zeros(3))
    opt = RSGD([p], lr=0.1, reinforcement=0.0)
    opt.param_groups[0]["lr"] = 0.5
    p.grad = torch.ones(3)
    opt.step()
    assert torch.equal(p.detach(), torch.full((3,), -0.5))


# ---------------------------------------------------------------- validation ------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": -0.1},
        {"weight_decay": -1e-3},
        {"reinforcement": 1.5},
        {"reinforcement": -0.1},
        {"reinforcement": math.nan},
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RSGD([nn.Parameter(torch.zeros(2))], **kwargs)


def test_out_of_range_gamma_at_step_time_leaves_params_untouched() -> None:
    p = nn.Parameter(torch.ones(3))
    opt = RSGD([p], lr=0.1, reinforcement=lambda t: 0.5 * t)  # Γ(1) = 0.5, Γ(2) = 1.0, Γ(3) = 1.5
    p.grad = torch.ones(3)
    opt.step()
    opt.step()
    before = p.detach().clone()
    with pytest.raises(ValueError, match="t=3"):
        opt.step()
    assert torch.equal(p.detach(), before)
    opt.param_groups[0]["reinforcement"] = 2.0
    with pytest.raises(ValueError):
        opt.step()


def test_sparse_gradients_rejected() -> None:
    emb = nn.Embedding(10, 3, sparse=True)
    opt = RSGD(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_closure_returns_loss() -> None:
    model = _mlp()
    opt = RSGD(model.parameters(), lr=0.1, seed=0)
    x, y = _batches(1)[0]

    def closure() -> float:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.item()

    before = [p.detach().clone() for p in model.parameters()]
    loss = opt.step(closure)
    assert isinstance(loss, float) and loss > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_param_groups_have_their_own_reinforcement() -> None:
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    groups: list[dict[str, Any]] = [{"params": [a]}, {"params": [b], "reinforcement": 0.25}]
    opt = RSGD(groups, reinforcement=0.75)
    assert [opt.reinforcement(i) for i in range(2)] == [0.75, 0.25]
    for bad in ({"reinforcement": 3.0}, {"lr": -1.0}, {"weight_decay": -1.0}):
        with pytest.raises(ValueError):
            opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], **bad})
    assert len(opt.param_groups) == 2


# ---------------------------------------------------------------- randomness ------------------------------


def _run_rsgd(seed: int | None, n: int = 8, **kwargs: Any) -> nn.Module:
    model = _mlp()
    _train(model, RSGD(model.parameters(), lr=0.3, seed=seed, **kwargs), _batches(n))
    return model


def test_seed_reproducible_and_seeds_differ() -> None:
    assert _params_equal(_run_rsgd(3), _run_rsgd(3))
    assert not _params_equal(_run_rsgd(3), _run_rsgd(4))


def test_seed_none_follows_torch_manual_seed() -> None:
    torch.manual_seed(123)
    a = _run_rsgd(None, reinforcement=0.5)  # _mlp() reseeds; the optimizer sees initial_seed() = 0
    torch.manual_seed(123)
    b = _run_rsgd(None, reinforcement=0.5)
    assert _params_equal(a, b)
    p = nn.Parameter(torch.zeros(1))
    torch.manual_seed(1)
    s1 = RSGD([p]).seed
    torch.manual_seed(2)
    assert RSGD([p]).seed != s1


@pytest.mark.parametrize(
    "reinforcement", [PowerReinforcement(), ExpReinforcement(0.9, 0.1, steps_per_epoch=4), 0.6]
)
def test_state_dict_round_trip_continues_random_stream(reinforcement: Any) -> None:
    batches = _batches(15)
    model = _mlp(0)
    opt = RSGD(model.parameters(), lr=0.3, reinforcement=reinforcement, weight_decay=1e-3, seed=7)
    _train(model, opt, batches[:10])
    saved = _roundtrip({"model": model.state_dict(), "opt": opt.state_dict()})
    _train(model, opt, batches[10:])

    fresh = _mlp(1)
    fresh_opt = RSGD(fresh.parameters(), lr=0.01, reinforcement=0.0, seed=99)
    fresh.load_state_dict(saved["model"])
    fresh_opt.load_state_dict(saved["opt"])
    assert fresh_opt.param_groups[0]["reinforcement"] == reinforcement
    assert fresh_opt.param_groups[0]["lr"] == 0.3
    assert fresh_opt.seed == 7
    assert fresh_opt.state[next(iter(fresh.parameters()))]["step"] == 10
    _train(fresh, fresh_opt, batches[10:])
    assert _params_equal(model, fresh)


def test_state_dict_without_rng_draws_differs() -> None:
    # the check above can fail: without the generator state the stream restarts
    batches = _batches(15)
    model = _mlp(0)
    opt = RSGD(model.parameters(), lr=0.3, reinforcement=0.6, seed=7)
    _train(model, opt, batches[:10])
    saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict()})
    _train(model, opt, batches[10:])
    del saved["opt"]["rng"]
    fresh = _mlp(1)
    fresh_opt = RSGD(fresh.parameters(), seed=7)
    fresh.load_state_dict(saved["model"])
    fresh_opt.load_state_dict(saved["opt"])
    _train(fresh, fresh_opt, batches[10:])
    assert not _params_equal(model, fresh)


def test_deepcopy_continues_random_stream() -> None:
    batches = _batches(8)
    model = _mlp()
    opt = RSGD(model.parameters(), lr=0.3, reinforcement=0.5, seed=2)
    _train(model, opt, batches[:4])
    model_copy, opt_copy = copy.deepcopy((model, opt))  # torch pickles no generator by itself
    _train(model, opt, batches[4:])
    _train(model_copy, opt_copy, batches[4:])
    assert _params_equal(model, model_copy)


def test_unsaveable_schedule_keeps_the_loading_optimizers_own() -> None:
    p = nn.Parameter(torch.zeros(2))
    schedule: Callable[[int], float] = lambda t: 0.5  # noqa: E731
    opt = RSGD([p], reinforcement=schedule)
    saved = _roundtrip(opt.state_dict())
    assert saved["param_groups"][0]["reinforcement"] is None
    other = RSGD([nn.Parameter(torch.zeros(2))], reinforcement=0.3)
    other.load_state_dict(saved)
    assert other.param_groups[0]["reinforcement"] == 0.3
    assert opt.param_groups[0]["reinforcement"] is schedule  # saving does not touch the live group


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_params_draw_on_their_device() -> None:
    batches = [(x.cuda(), y.cuda()) for x, y in _batches(6)]
    model = _mlp().cuda()
    opt = RSGD(model.parameters(), lr=0.3, reinforcement=0.5, seed=0)
    _train(model, opt, batches[:3])
    saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict()})
    assert list(saved["opt"]["rng"]["generators"]) == ["cuda:0"]
    _train(model, opt, batches[3:])
    fresh = _mlp(1).cuda()
    fresh.load_state_dict(saved["model"])
    fresh_opt = RSGD(fresh.parameters(), seed=1)
    fresh_opt.load_state_dict(saved["opt"])
    _train(fresh, fresh_opt, batches[3:])
    assert _params_equal(model, fresh)


# ---------------------------------------------------------------- Langevin --------------------------------


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_langevin_without_noise_is_sgd(weight_decay: float) -> None:
    batches = _batches(10)
    m_sgd, m_l = _mlp(), _mlp()
    _train(m_sgd, torch.optim.SGD(m_sgd.parameters(), lr=0.3, weight_decay=weight_decay), batches)
    opt = LangevinSGD(m_l.parameters(), lr=0.3, noise_scale=0.0, weight_decay=weight_decay)
    _train(m_l, opt, batches)
    assert _params_equal(m_sgd, m_l)
    assert opt.state_dict()["rng"]["generators"] == {}


def test_langevin_noise_has_the_scheduled_std() -> None:
    n = 20_000
    p = nn.Parameter(torch.zeros(n))
    opt = LangevinSGD([p], lr=0.1, noise_scale=0.02, noise_decay=0.5, seed=0)
    expected_std = {1: 0.02, 2: 0.02 / math.sqrt(2), 3: 0.02 / math.sqrt(3), 4: 0.01}
    for t in range(1, 5):
        before = p.detach().clone()
        p.grad = torch.full((n,), 0.5)
        opt.step()
        change = p.detach() - before
        # mean: the gradient step; std: γ'_t (relative SE of a sample std is 1/√(2n) = 0.5 %)
        assert change.mean().item() == pytest.approx(-0.05, abs=4 * expected_std[t] / math.sqrt(n))
        assert change.std().item() == pytest.approx(expected_std[t], rel=0.03)


def test_langevin_seeded_and_round_trip() -> None:
    batches = _batches(12)

    def fresh(seed: int) -> tuple[nn.Module, LangevinSGD]:
        model = _mlp()
        return model, LangevinSGD(model.parameters(), lr=0.1, noise_scale=0.01, seed=seed)

    (m1, o1), (m2, o2), (m3, o3) = fresh(0), fresh(0), fresh(1)
    for m, o in ((m1, o1), (m2, o2), (m3, o3)):
        _train(m, o, batches[:8])
    assert _params_equal(m1, m2) and not _params_equal(m1, m3)
    saved = _roundtrip({"model": m1.state_dict(), "opt": o1.state_dict()})
    _train(m1, o1, batches[8:])
    m4, o4 = fresh(5)
    m4.load_state_dict(saved["model"])
    o4.load_state_dict(saved["opt"])
    _train(m4, o4, batches[8:])
    assert _params_equal(m1, m4)


@pytest.mark.parametrize("kwargs", [{"lr": -1.0}, {"noise_scale": -1.0}, {"noise_decay": -0.5}])
def test_langevin_invalid_arguments(kwargs: dict[str, float]) -> None:
    args: dict[str, Any] = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError):
        LangevinSGD([nn.Parameter(torch.zeros(2))], **args)

"""rlopt.bench methods: budget plumbing, Schedule-Free's train()/eval() protocol, the peers' defaults,
and the lr sweep's divergence handling, on tiny in-memory data."""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from rlopt.bench import (
    BaselineSettings,
    EvaluationConfig,
    MethodRun,
    RunContext,
    SweepSettings,
    baseline,
    evaluate,
    policy_method,
    prepare,
    run_one,
    schedule_factor,
    summarize,
)
from rlopt.bench.stats import format_report
from rlopt.control import ActionSpec, ObservationSpec
from rlopt.data import ImageData
from rlopt.scheduler import SafetyConfig, build_q_network, save_policy
from rlopt.tasks import get_task
from rlopt.training import Trainer

#: a cheap task (ReLU MLP) wherever the model does not matter
TASK = "inverted-mlp-relu"
SIZES: dict[str, Any] = {"train_size": 128, "validation_size": 32}


def write_policy(path: Path, optimizer: str = "sgd", lr: float = 0.1) -> Path:
    """A small random-weight lr policy declared for ``optimizer`` at ``lr``."""
    torch.manual_seed(0)
    actions, observation = ActionSpec(mode="lr"), ObservationSpec()
    network = build_q_network([observation.size, 8, actions.n_actions])
    return save_policy(path, network, observation, actions, optimizer=optimizer, initial_lr=lr)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(4, 2)


def step_through(built: object, steps: int) -> list[float]:
    """Take ``steps`` optimizer steps with the method's hook; the lr each step used."""
    optimizer, hook = built.optimizer, built.hook  # type: ignore[attr-defined]
    used = []
    for _ in range(steps):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        sum(p.sum() for p in optimizer.param_groups[0]["params"]).backward()
        optimizer.step()
        hook(1.0)
    return used


# ----------------------------------------------------------------------------------------------
# budget plumbing
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_factor_warms_up_peaks_and_reaches_zero_at_the_budget(schedule: str) -> None:
    budget, warmup = 110, 10  # 100 decay steps: a half and a quarter are whole steps
    factors = [schedule_factor(schedule, t, budget, warmup) for t in range(budget + 1)]  # type: ignore[arg-type]
    assert factors[0] == pytest.approx(1 / warmup) and factors[warmup - 1] == pytest.approx(1.0)
    assert factors[warmup] == 1.0 and factors[budget] == 0.0 and factors[budget - 1] > 0
    assert all(a >= b for a, b in zip(factors[warmup:], factors[warmup + 1:], strict=False))
    middle = schedule_factor(schedule, warmup + (budget - warmup) // 2, budget, warmup)  # type: ignore[arg-type]
    assert middle == pytest.approx(0.5)  # cosine: ½(1 + cos π/2); linear: 1 − ½
    quarter = schedule_factor(schedule, warmup + (budget - warmup) // 4, budget, warmup)  # type: ignore[arg-type]
    assert quarter == pytest.approx(0.75 if schedule == "linear" else 0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule_factor("constant", 57, budget, warmup) == 1.0


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_warmup_schedules_are_told_the_budget_and_end_at_zero(name: str) -> None:
    settings = BaselineSettings(sgd_lr=0.2, warmup_fraction=0.1)
    method = baseline(name, settings)
    assert method.budget_aware
    for budget in (40, 80):
        built = method.build(tiny_model(), RunContext(budget=budget, steps_per_epoch=10, seed=0))
        used = step_through(built, budget)
        assert max(used) == pytest.approx(0.2) and used.index(max(used)) == round(0.1 * budget) - 1
        assert used[-1] > 0 and built.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)
    assert not baseline("sgd").budget_aware and not baseline("prodigy").budget_aware


def test_learned_scheduler_step_feature_is_t_over_the_budget(tmp_path: Path) -> None:
    method = policy_method(write_policy(tmp_path / "p.rlopt"))
    assert method.budget_aware and method.family == "sgd" and method.default_lr == 0.1
    built = method.build(tiny_model(), RunContext(budget=37, steps_per_epoch=10, seed=0))
    scheduler = built.scheduler
    assert scheduler.total_steps == 37
    seen: list[np.ndarray] = []

    def keep(observation: np.ndarray) -> int:
        seen.append(observation)
        return 1  # action 1 keeps the rate

    scheduler._greedy = keep
    step_through(built, 5)
    assert [float(o[0]) for o in seen] == pytest.approx([k / 37 for k in range(1, 6)])


def test_the_runner_tells_budget_aware_methods_their_budget(tiny_data: ImageData) -> None:
    config = EvaluationConfig(tasks=(TASK,), budgets=(20, 40), seeds=1, baselines=("cosine",), **SIZES)
    prepared = prepare(config, data=tiny_data)
    task, method = get_task(TASK), prepared.methods[0]
    with pytest.raises(ValueError, match="one budget at a time"):
        run_one(method, task, 7, (20, 40), prepared)
    short, long = run_one(method, task, 7, (20,), prepared)[0], run_one(method, task, 7, (40,), prepared)[0]
    assert short.curves is not None and long.curves is not None
    assert len(short.curves.lr) == 20 and len(long.curves.lr) == 40
    assert short.curves.lr[-1] < 0.01 * short.curves.lr.max()   # cosine over 20 steps ends near 0 …
    assert long.curves.lr[19] > 0.4 * long.curves.lr.max()      # … over 40 it is half-way at step 20


# ----------------------------------------------------------------------------------------------
# the peers
# ----------------------------------------------------------------------------------------------


def test_peer_settings_are_the_packages_documented_defaults() -> None:
    import prodigyopt
    import schedulefree

    settings = BaselineSettings()

    def default(cls: type, name: str) -> object:
        return inspect.signature(cls).parameters[name].default

    assert settings.sf_sgd_lr == default(schedulefree.SGDScheduleFree, "lr")
    assert settings.sf_adamw_lr == default(schedulefree.AdamWScheduleFree, "lr")
    assert settings.sf_warmup_steps == default(schedulefree.SGDScheduleFree, "warmup_steps")
    assert settings.sf_warmup_steps == default(schedulefree.AdamWScheduleFree, "warmup_steps")
    assert settings.prodigy_lr == default(prodigyopt.Prodigy, "lr")


def test_schedule_free_is_evaluated_in_eval_mode_and_trained_in_train_mode(
    tiny_data: ImageData, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes: list[object] = []
    original = Trainer.evaluate

    def spy(self: Trainer, images: torch.Tensor, labels: torch.Tensor) -> object:
        modes.append(self.optimizer.param_groups[0].get("train_mode"))
        return original(self, images, labels)

    monkeypatch.setattr(Trainer, "evaluate", spy)
    config = EvaluationConfig(tasks=(TASK,), budgets=(6, 12), seeds=1, baselines=("sf-sgd", "sf-adamw", "sgd"),
                              **SIZES)
    result = evaluate(config, data=tiny_data, progress=False)
    # 2 Schedule-Free methods × 2 budgets × 3 evaluations (training sample, validation, test), all in
    # eval mode; training resumed after the first budget (a step in eval mode raises)
    assert modes.count(False) == 12 and modes.count(None) == 6 and True not in modes
    for name in ("sf-sgd", "sf-adamw"):
        assert {r.budget for r in result.records if r.method == name} == {6, 12}
        assert not any(r.diverged for r in result.records if r.method == name)


def test_schedule_free_is_scored_at_its_average_not_at_its_gradient_point(tiny_data: ImageData) -> None:
    """Skipping the eval() switch would score y instead of x: the measured loss would differ."""
    config = EvaluationConfig(tasks=(TASK,), budgets=(12,), seeds=1, baselines=("sf-sgd",), **SIZES)
    prepared = prepare(config, data=tiny_data)
    scored = run_one(prepared.methods[0], get_task(TASK), 3, (12,), prepared)[0]
    method = prepared.methods[0]

    def without_eval_switch(model: nn.Module, context: RunContext) -> MethodRun:
        built = method.build(model, context)
        return MethodRun(built.optimizer, before_training=built.before_training)

    careless = dataclasses.replace(method, build=without_eval_switch)
    unscored = run_one(careless, get_task(TASK), 3, (12,), prepared)[0]
    assert scored.curves is not None and unscored.curves is not None
    np.testing.assert_array_equal(scored.curves.loss, unscored.curves.loss)  # the same training …
    assert scored.final_train_loss != unscored.final_train_loss            # … scored at another point


def test_a_missing_peer_package_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # None in sys.modules: the import raises ImportError
    with pytest.raises(ValueError, match="prodigy needs the package prodigyopt"):
        baseline("prodigy")


# ----------------------------------------------------------------------------------------------
# the lr sweep
# ----------------------------------------------------------------------------------------------


def test_lr_sweep_counts_divergence_with_finite_penalties(tiny_data: ImageData, tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.rlopt")
    config = EvaluationConfig(policies=(str(policy),), tasks=(TASK,), budgets=(10, 20), seeds=1,
                              baselines=("sgd", "prodigy"), lr_sweep=True,
                              sweep=SweepSettings(sgd_rates=(0.1, 1e4), adam_rates=(1e-3,)), **SIZES)
    result = evaluate(config, data=tiny_data, progress=False)
    seed = result.seeds[0]
    # sgd's own rate (0.1) is in the sweep: those runs serve it; prodigy has no starting rate to sweep
    assert {(r.method, r.sweep_lr) for r in result.records} == {
        (f"policy:{policy}", None), (f"policy:{policy}", 1e4), ("sgd", None), ("sgd", 1e4), ("prodigy", None)}
    for method in (f"policy:{policy}", "sgd"):  # 1e4 is far outside the policy's bounds: widened, no crash
        for budget in (10, 20):
            blown = result.record(TASK, budget, method, seed, 1e4)
            assert blown.diverged and blown.diverged_at is not None and blown.diverged_at <= 10
            numbers = [blown.final_train_loss, blown.final_train_accuracy, blown.final_smoothed_loss,
                       blown.val_loss, blown.val_accuracy, blown.test_loss, blown.test_accuracy]
            assert all(math.isfinite(v) for v in numbers)
            assert blown.test_accuracy < 0.5  # the untrained model's score
    healthy = result.record(TASK, 20, "sgd", seed)
    assert not healthy.diverged and healthy.test_accuracy > result.record(TASK, 20, "sgd", seed, 1e4).test_accuracy
    summary = summarize(result)
    sweep = {(e["method"], e["budget"]): e for e in summary["sweep"]}
    assert set(sweep) == {("sgd", 10), ("sgd", 20), (f"policy:{policy}", 10), (f"policy:{policy}", 20)}
    entry = sweep[("sgd", 20)]
    assert [c["diverged"] for c in entry["rates"]] == [0, 1]
    accuracies = [c["test_accuracy"]["mean"] for c in entry["rates"]]
    assert entry["spread"] == pytest.approx(max(accuracies) - min(accuracies)) and entry["spread"] > 0
    report = format_report(result, summary)
    assert "lr sweep" in report and "(1 div.)" in report


def test_lr_sweep_starts_momentum_methods_at_the_same_effective_steps(tmp_path: Path) -> None:
    """SGD with momentum μ sweeps SGD's rates × (1 − μ): its effective step lr / (1 − μ) spans SGD's."""
    sweep = SweepSettings()
    assert sweep.momentum_rates == pytest.approx(tuple(r * (1 - BaselineSettings().momentum) for r in sweep.sgd_rates))
    assert baseline("momentum", BaselineSettings()).family == "momentum"
    assert baseline("sgd", BaselineSettings()).family == "sgd"
    assert sweep.rates("momentum") == sweep.momentum_rates and sweep.rates("adam") == sweep.adam_rates
    policy = write_policy(tmp_path / "m.rlopt", optimizer="momentum", lr=0.01)
    assert policy_method(policy).family == "momentum"


@pytest.mark.parametrize("name", ["rsgd", "rsgd-exp"])
def test_rsgd_baselines_follow_their_gamma_schedules(name: str) -> None:
    """rsgd uses Γ(t) = 1 − 1/√t, rsgd-exp the paper's Γ(t) = 1 − γ^t with γ = γ0·e^{−λ·t_ep}; both
    decay the rate once per epoch."""
    from rlopt.control import reinforcement_of

    settings = BaselineSettings()
    built = baseline(name, settings).build(tiny_model(), RunContext(budget=50, steps_per_epoch=10, seed=0))
    gammas = []
    for _ in range(25):
        gammas.append(reinforcement_of(built.optimizer))
        step_through(built, 1)
    for t, gamma in enumerate(gammas, start=1):
        if name == "rsgd":
            assert gamma == pytest.approx(1 - t**-0.5)
        else:
            epoch = (t - 1) // 10
            gamma_t = settings.rsgd_exp_gamma0 * math.exp(-settings.rsgd_exp_lambda * epoch)
            assert gamma == pytest.approx(1 - gamma_t**t)
    assert built.optimizer.param_groups[0]["lr"] < settings.rsgd_lr  # two epochs of decay


def test_a_policy_method_runs_with_the_safety_net_it_is_given(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "p.rlopt")
    context = RunContext(budget=20, steps_per_epoch=10, seed=0)
    default = policy_method(path).build(tiny_model(), context).scheduler
    assert default.safety == SafetyConfig()
    ablated = SafetyConfig(relapse_cap=False)
    assert policy_method(path, ablated).build(tiny_model(), context).scheduler.safety == ablated
    assert policy_method(path, None).build(tiny_model(), context).scheduler._safety is None

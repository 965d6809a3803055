"""The LearnedScheduler's safety net (SafetyConfig): quiet on healthy training, backs off on a rising loss."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from helpers import fake_image_data
from torch import nn

from rlopt import RSGD, LearnedScheduler
from rlopt.control import ActionSpec, ObservationSpec
from rlopt.models import MLP
from rlopt.scheduler import SafetyConfig, build_q_network, save_policy

KEEP, RAISE = 1, 2


def constant_policy(path: Path, action: int, mode: str = "lr") -> Path:
    """A policy file whose greedy action is always ``action``."""
    actions = ActionSpec(mode=mode)  # type: ignore[arg-type]
    obs = ObservationSpec()
    net = build_q_network([obs.size, 8, actions.n_actions])
    last = net[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.arange(actions.n_actions) == action)
    return save_policy(path, net, obs, actions, optimizer="sgd" if mode == "lr" else "rsgd", initial_lr=0.1)


def noisy_training_run(policy: Path, make_opt, *, seed: int, safety: SafetyConfig | None, steps: int = 300) -> int:
    """Mini-batches of 16 from tiny data whose labels are 30 % random: a loss that falls, then stays noisy.

    Returns the number of back-offs of the run.
    """
    data = fake_image_data(n_train=256, n_test=8, seed=0)
    x, y = data.train.float_images(flatten=True), data.train.labels.clone()
    flip_gen = torch.Generator().manual_seed(1)
    flip = torch.rand(len(y), generator=flip_gen) < 0.3
    y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=flip_gen)
    torch.manual_seed(seed)
    model = MLP((784, 32, 10), activation="relu")
    opt = make_opt(model.parameters())
    sched = LearnedScheduler(opt, policy, safety=safety)
    batches = torch.Generator().manual_seed(seed)
    first = last = math.nan
    for step in range(steps):
        idx = torch.randint(0, len(y), (16,), generator=batches)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step(loss.item())
        first = loss.item() if step == 0 else first
        last = loss.item()
    assert last < first  # it did train
    return sched.backoffs


@pytest.mark.parametrize(
    "make_opt, seed",
    [
        (lambda p: torch.optim.SGD(p, lr=0.1), 0),
        (lambda p: torch.optim.SGD(p, lr=0.1), 1),
        (lambda p: torch.optim.Adam(p, lr=0.003), 0),
    ],
)
def test_never_fires_on_well_behaved_noisy_training(tmp_path: Path, make_opt, seed: int) -> None:
    policy = constant_policy(tmp_path / "keep.rlopt", KEEP)
    assert noisy_training_run(policy, make_opt, seed=seed, safety=SafetyConfig()) == 0
    # the run is noisy enough to matter: a net that reacts to any rise of the moving average fires
    hair_trigger = SafetyConfig(rise_factor=1.01, progress_fraction=0.0)
    assert noisy_training_run(policy, make_opt, seed=seed, safety=hair_trigger) > 5


def drive(
    sched: LearnedScheduler, opt: torch.optim.Optimizer, model: nn.Module, losses: Sequence[float]
) -> list[float]:
    """Real optimizer steps, but the scheduler is told ``losses``; returns the learning rate after each step."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    rates = []
    for loss in losses:
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        sched.step(loss)
        rates.append(float(sched.get_last_lr()[0]))
    return rates


def linear_run(
    policy: Path, lr: float, safety: SafetyConfig | None
) -> tuple[LearnedScheduler, torch.optim.SGD, nn.Module]:
    """A scheduler driving SGD at ``lr`` on a fresh ``nn.Linear(4, 1)``: (scheduler, optimizer, model)."""
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return LearnedScheduler(opt, policy, safety=safety), opt, model


FALLING = [2.3 * 0.95**t for t in range(60)]  # 2.3 → 0.11: steady progress
CLIMBING = [FALLING[-1] * 1.15**k for k in range(1, 61)]  # then a blow-up, 15 % a step


def scattered(level: float, spread: float, n: int, seed: int) -> list[float]:
    """``n`` mini-batch losses that scatter around ``level`` with no trend (a regression loss's noise)."""
    generator = torch.Generator().manual_seed(seed)
    return [level * float(f) for f in torch.empty(n).log_normal_(0.0, spread, generator=generator)]


LUCKY_START = [0.6, *scattered(0.8, 0.4, 120, 0)]  # a first batch well below the loss's level, then noise


def test_before_progress_a_rise_at_the_starting_rate_is_no_reason_to_back_off(tmp_path: Path) -> None:
    """A lucky first mini-batch becomes S_1 and B_t; the losses after it scatter by ±40 % around a level a
    third higher, with no trend, and the rate stays where the user started it. Doing nothing would train
    on: the net stays quiet. The rule it replaced backed off every cooldown, down to the lower bound."""
    policy = constant_policy(tmp_path / "keep.rlopt", KEEP)
    sched, opt, model = linear_run(policy, 0.1, SafetyConfig())
    assert drive(sched, opt, model, LUCKY_START) == pytest.approx([0.1] * len(LUCKY_START))
    assert sched.backoffs == 0
    sched, opt, model = linear_run(policy, 0.1, SafetyConfig(rise_before_progress=True))
    drive(sched, opt, model, LUCKY_START)
    assert sched.backoffs >= 5


def test_before_progress_a_rise_above_the_starting_rate_backs_off(tmp_path: Path) -> None:
    """The same losses under a policy that raises the rate above the start (no stall cap to stop it): the
    rise backs off. The cap that follows holds the rate at or below the start, where the rule applies again."""
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)
    sched, opt, model = linear_run(policy, 0.01, SafetyConfig(stall_steps=None))
    rates = drive(sched, opt, model, LUCKY_START)
    assert sched.backoffs == 1
    assert max(rates) > 0.01 and rates[-1] < 0.01


def test_after_progress_a_rise_at_the_starting_rate_backs_off(tmp_path: Path) -> None:
    policy = constant_policy(tmp_path / "keep.rlopt", KEEP)
    sched, opt, model = linear_run(policy, 0.1, SafetyConfig())
    rates = drive(sched, opt, model, FALLING + CLIMBING[:20])
    assert sched.backoffs >= 1 and min(rates) == pytest.approx(0.05)


def test_a_loss_that_starts_below_zero_backs_off_for_a_rise_at_any_rate(tmp_path: Path) -> None:
    """Progress is defined for S_1 > 0 only: a negative loss (a log-likelihood objective) that rises from its
    start at the starting rate backs off, as every rise did before the rule."""
    policy = constant_policy(tmp_path / "keep.rlopt", KEEP)
    sched, opt, model = linear_run(policy, 0.1, SafetyConfig())
    drive(sched, opt, model, [-2.0 + 0.1 * k for k in range(30)])
    assert sched.backoffs >= 1


def test_a_state_saved_before_the_rule_resumes_under_the_old_one(tmp_path: Path) -> None:
    policy = constant_policy(tmp_path / "keep.rlopt", KEEP)
    sched, opt, model = linear_run(policy, 0.1, SafetyConfig())
    drive(sched, opt, model, LUCKY_START[:2])
    state = sched.state_dict()
    assert state["safety"]["initial_rates"] == [0.1]
    old = {**state, "safety": {k: v for k, v in state["safety"].items() if k != "initial_rates"}}
    resumed, opt2, model2 = linear_run(policy, 0.1, SafetyConfig())
    resumed.load_state_dict(old)
    drive(resumed, opt2, model2, LUCKY_START[2:])
    assert resumed.backoffs >= 5  # every rate counts as raised, as it did when the state was saved


def test_a_sharply_rising_loss_backs_the_rate_off_and_holds_it(tmp_path: Path) -> None:
    config = SafetyConfig(backoff=0.5, cooldown_steps=5, hold_steps=8)
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)  # a policy that raises the rate without end
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = LearnedScheduler(opt, policy, safety=config)
    rates = drive(sched, opt, model, FALLING)
    assert sched.backoffs == 0 and rates[-1] == 0.5  # healthy: the policy alone drove the rate to its bound

    backed_off_at, actions = [], []
    for k, loss in enumerate(CLIMBING):
        rates += drive(sched, opt, model, [loss])
        actions.append(sched.last_action)
        if sched.last_backed_off:
            backed_off_at.append(k)
    assert actions == [RAISE] * len(CLIMBING)  # last_action stays the policy's own choice
    first = backed_off_at[0]
    assert CLIMBING[first] < FALLING[0]  # before the loss is back where the run started
    i = len(FALLING) + first
    assert rates[i] == pytest.approx(rates[i - 1] * 0.5)
    # the hold: the policy keeps asking to raise, the rate stays at its backed-off value
    assert all(r <= rates[i] for r in rates[i : i + 1 + config.hold_steps])
    # the loss keeps climbing: more back-offs, never closer together than the cooldown
    assert len(backed_off_at) >= 3 and sched.backoffs == len(backed_off_at)
    assert min(b - a for a, b in itertools.pairwise(backed_off_at)) >= config.cooldown_steps
    assert min(rates) >= sched.actions.lr_bounds[0]

    # the same run without the net: the policy alone keeps the rate at its upper bound
    model2 = nn.Linear(4, 1)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.01)
    alone = LearnedScheduler(opt2, policy, safety=None)
    assert drive(alone, opt2, model2, FALLING + CLIMBING)[-1] == 0.5 and alone.backoffs == 0


def test_the_hold_ends_and_the_policy_takes_over_again(tmp_path: Path) -> None:
    config = SafetyConfig(hold_steps=6, stall_steps=None)  # a flat loss: the stall cap would hold the rate too
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler(opt, policy, safety=config)
    rates = drive(sched, opt, model, [1.0, math.nan] + [1.0] * 10)  # one broken step, then a flat loss
    assert sched.backoffs == 1
    backed_off = 0.1 / 0.9 * 0.5
    assert rates[1] == pytest.approx(backed_off)
    assert rates[2 : 2 + config.hold_steps] == pytest.approx([backed_off] * config.hold_steps)
    assert rates[2 + config.hold_steps] == pytest.approx(backed_off / 0.9)  # raising again


def test_by_default_a_back_off_caps_the_rate_for_the_rest_of_the_run(tmp_path: Path) -> None:
    """The rates above a back-off made this run's loss rise once: the policy may not raise into them again
    (it may still lower the rate, and go back up to the cap); a second back-off lowers the cap."""
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler(opt, policy, safety=SafetyConfig(stall_steps=None))
    rates = drive(sched, opt, model, [1.0, math.nan] + [1.0] * 300)
    backed_off = 0.1 / 0.9 * 0.5
    assert sched.backoffs == 1 and rates[1:] == pytest.approx([backed_off] * 301)
    rates = drive(sched, opt, model, [math.nan] + [1.0] * 20)
    assert rates == pytest.approx([backed_off / 2] * 21)
    # and a resumed scheduler keeps the unending hold
    resumed = LearnedScheduler(opt, policy, safety=SafetyConfig(stall_steps=None))
    resumed.load_state_dict(sched.state_dict())
    assert resumed.state_dict()["safety"]["hold_left"] is None
    assert drive(resumed, opt, model, [1.0] * 20) == pytest.approx([backed_off / 2] * 20)


def test_non_finite_losses_back_off_at_every_step_down_to_the_lower_bound(tmp_path: Path) -> None:
    policy = constant_policy(tmp_path / "keep.rlopt", KEEP)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler(opt, policy)
    rates = drive(sched, opt, model, [1.0, math.inf, math.nan, -math.inf] + [math.nan] * 10)
    assert rates[:4] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert rates[-1] == sched.actions.lr_bounds[0] and sched.backoffs == 13


def test_a_policy_that_sets_only_gamma_runs_without_the_net(tmp_path: Path) -> None:
    policy = constant_policy(tmp_path / "gamma.rlopt", KEEP, mode="rsgd")
    model = nn.Linear(4, 1)
    opt = RSGD(model.parameters(), lr=0.1, seed=0)
    sched = LearnedScheduler(opt, policy)
    assert drive(sched, opt, model, [1.0, math.nan, math.nan]) == [0.1, 0.1, 0.1]
    assert sched.backoffs == 0


def test_state_dict_carries_the_hold(tmp_path: Path) -> None:
    config = SafetyConfig(hold_steps=6)
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LearnedScheduler(opt, policy, safety=config)
    drive(sched, opt, model, [1.0, math.nan, 1.0])  # backed off, two steps into the hold
    state = {"opt": opt.state_dict(), "sched": sched.state_dict(), "model": model.state_dict()}
    expected = drive(sched, opt, model, [1.0] * 8)

    model2 = nn.Linear(4, 1)
    model2.load_state_dict(state["model"])
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    opt2.load_state_dict(state["opt"])
    sched2 = LearnedScheduler(opt2, policy, safety=config)
    sched2.load_state_dict(state["sched"])
    assert sched2.backoffs == 1
    assert drive(sched2, opt2, model2, [1.0] * 8) == pytest.approx(expected)


def test_a_run_without_progress_is_held_at_its_starting_rate(tmp_path: Path) -> None:
    """A plateau from the start (the loss a too-high rate can hold at chance): the policy may raise the
    rate for stall_steps steps, then the rate goes back to the user's until the loss makes progress."""
    config = SafetyConfig(stall_steps=20, stall_progress=0.05, trained_rate_ceiling=False)
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)
    sched, opt, model = linear_run(policy, 0.01, config)
    plateau = [2.3 + 0.01 * (-1) ** t for t in range(40)]  # noisy, never 5 % down
    rates = drive(sched, opt, model, plateau)
    assert rates[18] == pytest.approx(0.01 / 0.9**19)  # raised freely while on probation
    assert rates[19:] == pytest.approx([0.01] * 21)  # stalled: held at the starting rate
    assert sched.backoffs == 0  # no rise, so no back-off: the cap alone acted
    # progress (the smoothed loss 5 % below its first value) lifts the cap for good
    falling = [2.3 * 0.9**k for k in range(1, 11)]
    rates = drive(sched, opt, model, falling)
    assert rates[-1] > 0.01
    rates = drive(sched, opt, model, [falling[-1]] * 30)  # a new plateau: the cap does not return
    assert rates[-1] > rates[0] > 0.01 and sched.backoffs == 0


def test_by_default_no_raise_above_the_ceiling_before_progress(tmp_path: Path) -> None:
    """The default stall cap acts from the first step: a policy that raises on a loss that has not moved is
    held at the run's ceiling (here the user's 0.1, the shipped policies' training rate), and raises freely
    once the smoothed loss is 5 % down."""
    assert SafetyConfig().stall_steps == 0
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)
    sched, opt, model = linear_run(policy, 0.1, SafetyConfig())
    rates = drive(sched, opt, model, [2.3 + 0.01 * (-1) ** t for t in range(30)])
    assert rates == pytest.approx([0.1] * 30) and sched.backoffs == 0
    rates = drive(sched, opt, model, [2.3 * 0.9**k for k in range(1, 11)])
    assert rates[-1] > 0.1
    # without the cap the same policy is at the upper bound by then
    alone, opt2, model2 = linear_run(policy, 0.1, SafetyConfig(stall_steps=None))
    assert drive(alone, opt2, model2, [2.3 + 0.01 * (-1) ** t for t in range(30)])[-1] == pytest.approx(0.5)


def test_progress_within_the_probation_never_caps(tmp_path: Path) -> None:
    config = SafetyConfig(stall_steps=20, trained_rate_ceiling=False)
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)
    sched, opt, model = linear_run(policy, 0.01, config)
    slow = [2.3 * 0.995**t for t in range(60)]  # 2.3 → 1.7, 5 % down after a dozen steps
    rates = drive(sched, opt, model, slow)
    assert rates == pytest.approx([min(0.01 / 0.9 ** (t + 1), 0.5) for t in range(60)])
    # without progress the same policy is held at 0.01 from step 20 on
    sched2, opt2, model2 = linear_run(policy, 0.01, config)
    assert drive(sched2, opt2, model2, [2.3] * 60)[-1] == pytest.approx(0.01)
    # and with the cap switched off it is not
    sched3, opt3, model3 = linear_run(policy, 0.01, SafetyConfig(stall_steps=None, trained_rate_ceiling=False))
    assert drive(sched3, opt3, model3, [2.3] * 60)[-1] == pytest.approx(0.5)


# progress to 2.15 (6.5 % below 2.3) by step 15, then back to the starting plateau: the rise from the best
# (2.15 → 2.3, 7 %) is under rise_factor 1.1, so only the relapse test can see it
DIP_AND_RETURN = [2.3 - 0.15 * min(t, 15) / 15 for t in range(30)] + [2.15 + 0.15 * k / 15 for k in range(1, 16)]


def test_a_run_that_loses_its_progress_is_capped_for_the_rest_of_it(tmp_path: Path) -> None:
    """The inverted-digits failure: a raised rate undoes the progress without a rise the back-off sees."""
    config = SafetyConfig(stall_steps=20, trained_rate_ceiling=False)
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)
    sched, opt, model = linear_run(policy, 0.01, config)
    rates = drive(sched, opt, model, DIP_AND_RETURN + [2.3] * 10)
    assert sched.backoffs == 0  # the back-off test never fired
    relapse = next(t for t, rate in enumerate(rates) if t > 30 and rate == pytest.approx(0.01))
    assert 30 < relapse < 55 and rates[relapse - 1] > 0.01
    assert rates[relapse:] == pytest.approx([0.01] * (len(rates) - relapse))
    # new progress does not lift the cap: the policy's higher rates undid this run once
    rates = drive(sched, opt, model, [2.3 * 0.9**k for k in range(1, 41)])
    assert max(rates) == pytest.approx(0.01)
    # and a resumed scheduler keeps it
    resumed = LearnedScheduler(opt, policy, safety=config)
    resumed.load_state_dict(sched.state_dict())
    assert max(drive(resumed, opt, model, [0.1] * 10)) == pytest.approx(0.01)
    # the same run without the relapse cap goes back to the policy's rates
    sched2, opt2, model2 = linear_run(policy, 0.01, SafetyConfig(stall_steps=20, relapse_cap=False,
                                                                 trained_rate_ceiling=False))
    drive(sched2, opt2, model2, DIP_AND_RETURN + [2.3] * 10)
    assert drive(sched2, opt2, model2, [2.3 * 0.9**k for k in range(1, 41)])[-1] == pytest.approx(0.5)


def test_a_run_started_below_the_policys_training_rate_may_be_raised_to_it(tmp_path: Path) -> None:
    """The caps' ceiling is the higher of the run's rate and the policy's training start rate (0.1 here), on
    an optimizer of the policy's kind with its own bounds; otherwise the run's own rate."""
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)  # trained from lr 0.1, on SGD
    config = SafetyConfig(stall_steps=20)
    plateau = [2.3 + 0.01 * (-1) ** t for t in range(60)]
    sched, opt, model = linear_run(policy, 0.01, config)
    rates = drive(sched, opt, model, plateau)
    assert max(rates) == pytest.approx(0.1) == rates[-1]  # raised past 0.01 and held at the training rate
    sched, opt, model = linear_run(policy, 0.2, config)  # started above it: its own rate
    assert drive(sched, opt, model, plateau)[-1] == pytest.approx(0.2)
    # bounds overridden, or another optimizer: the policy's training rate says nothing there
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = LearnedScheduler(opt, policy, safety=config, lr_bounds=(1e-3, 0.5))
    assert drive(sched, opt, model, plateau)[-1] == pytest.approx(0.01)
    model = nn.Linear(4, 1)
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = LearnedScheduler(adam, policy, safety=config)
    assert drive(sched, adam, model, plateau)[-1] == pytest.approx(0.01)
    model = nn.Linear(4, 1)  # momentum 0.9 makes 0.1 a tenfold larger step than the policy trained with
    heavy = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = LearnedScheduler(heavy, policy, safety=config)
    assert drive(sched, heavy, model, plateau)[-1] == pytest.approx(0.01)
    # two param groups keep their ratio
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 0.01}, {"params": [model.bias], "lr": 0.005}], lr=0.01)
    sched = LearnedScheduler(opt, policy, safety=config)
    drive(sched, opt, model, plateau)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.05])


def test_the_relapse_cap_lets_the_policy_lower_the_rate(tmp_path: Path) -> None:
    lower = constant_policy(tmp_path / "lower.rlopt", 0)
    sched, opt, model = linear_run(lower, 0.1, SafetyConfig(stall_steps=20))
    rates = drive(sched, opt, model, DIP_AND_RETURN + [2.3] * 10)
    floor = ActionSpec().lr_bounds[0]
    assert rates == pytest.approx([max(0.1 * 0.9 ** (t + 1), floor) for t in range(len(rates))])


def test_a_relapse_before_the_probation_ends_is_not_one(tmp_path: Path) -> None:
    """Noise around the first losses can dip 5 % and come back; only what happens from stall_steps on counts."""
    config = SafetyConfig(stall_steps=40)
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)
    sched, opt, model = linear_run(policy, 0.01, config)
    early = DIP_AND_RETURN[:40]  # down by step 15, back up by step 39: all within the probation
    rates = drive(sched, opt, model, early + [2.3 * 0.9**k for k in range(1, 21)])
    assert rates[-1] == pytest.approx(0.5)  # the later progress keeps the policy in charge
    assert not sched.state_dict()["safety"]["relapsed"]


def test_state_dict_carries_the_starting_rates_of_the_stall_cap(tmp_path: Path) -> None:
    config = SafetyConfig(stall_steps=10)
    policy = constant_policy(tmp_path / "raise.rlopt", RAISE)
    sched, opt, model = linear_run(policy, 0.1, config)
    drive(sched, opt, model, [2.3] * 5)  # on probation, the rate raised above 0.1
    state = {"opt": opt.state_dict(), "sched": sched.state_dict(), "model": model.state_dict()}
    expected = drive(sched, opt, model, [2.3] * 10)
    assert expected[-1] == pytest.approx(0.1)

    model2 = nn.Linear(4, 1)
    model2.load_state_dict(state["model"])
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.5)
    opt2.load_state_dict(state["opt"])  # the raised rate: the resumed scheduler is built at it
    sched2 = LearnedScheduler(opt2, policy, safety=config)
    sched2.load_state_dict(state["sched"])
    assert drive(sched2, opt2, model2, [2.3] * 10) == pytest.approx(expected)
    # a state saved before the ceiling was named so (key "start_rates") resumes the same way
    old = {**state["sched"], "safety": dict(state["sched"]["safety"])}
    old["safety"]["start_rates"] = old["safety"].pop("ceilings")
    model3 = nn.Linear(4, 1)
    model3.load_state_dict(state["model"])
    opt3 = torch.optim.SGD(model3.parameters(), lr=0.5)
    opt3.load_state_dict(state["opt"])
    sched3 = LearnedScheduler(opt3, policy, safety=config)
    sched3.load_state_dict(old)
    assert drive(sched3, opt3, model3, [2.3] * 10) == pytest.approx(expected)


def test_a_policy_with_a_decision_interval_acts_every_kth_step(tmp_path: Path) -> None:
    actions = ActionSpec(interval=3)
    obs = ObservationSpec()
    net = build_q_network([obs.size, 8, actions.n_actions])
    with torch.no_grad():
        net[-1].weight.zero_()  # type: ignore[operator]
        net[-1].bias.copy_(torch.tensor([0.0, 0.0, 1.0]))  # type: ignore[operator]
    path = save_policy(tmp_path / "k3.rlopt", net, obs, actions, optimizer="sgd", initial_lr=0.01)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = LearnedScheduler(opt, path, safety=None)
    assert sched.actions.interval == 3  # the policy file keeps it
    rates = drive(sched, opt, model, [1.0] * 7)
    raised = [0.01 / 0.9, 0.01 / 0.9**2, 0.01 / 0.9**3]
    assert rates == pytest.approx([raised[0]] * 3 + [raised[1]] * 3 + [raised[2]])  # after calls 1, 4 and 7


@pytest.mark.parametrize(
    "field, value",
    [("rise_factor", 1.0), ("progress_fraction", 1.5), ("backoff", 1.0), ("backoff", 0.0), ("cooldown_steps", 0),
     ("hold_steps", -1), ("loss_smoothing", 1.0), ("stall_steps", -1), ("stall_progress", 0.0),
     ("stall_progress", 1.0)],
)
def test_invalid_safety_settings_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        SafetyConfig(**{field: value})  # type: ignore[arg-type]

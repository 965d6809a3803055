"""Does the return rank schedules the way final validation loss does, at every budget and starting rate?

A DQN maximises the return, a user wants a low validation loss: the reward is only useful if a
higher return means a better-trained network. For each episode length (the *budget*) and each
starting learning rate of the lr sweep, this runs a fixed set of open-loop schedules
(:data:`SCHEDULES`: keep the rate, decay it, raise it, warm up then decay, …) on
``rlopt/LRControl-v0`` from the same random start points (same network, same batches for every
schedule of a seed), and prints for each schedule its mean return and its mean final validation
loss, then the Spearman rank correlation between return and −(validation loss):

* ``ρ schedules`` — over the schedules' means across seeds: does the return order the schedules as
  the validation loss does? (1 = the same order);
* ``ρ runs`` — over every run of the cell, seeds included.

A run whose network diverged (validation loss NaN) ranks last by validation loss. Budgets default
to the benchmark grid's (``rlopt.bench.config.GRIDS["default"]``), starting rates to the SGD lr
sweep (``rlopt.bench.config.SweepSettings``).

Every episode runs once, to its budget or to a tier-1 end (bounds, divergence), and its losses are
recorded; each reward of ``--rewards`` (:data:`REWARDS`) is then scored on the same episodes by
replaying the environment's reward (:func:`replay_return`), score-floor cut-off included. The
validation loss ranked is the one at the episode's end: a user trains to the budget whatever the
agent's score, so a cut-off shortens the return, not the training. ``--traces FILE`` keeps the
recorded episodes, so new rewards can be scored without training again. Rewards: ``rlopt`` (the
environment's default), ``paper`` (§4.1: tiers on raw mini-batch losses, constant new-minimum
reward), ``no-floor`` (rlopt's without the running-score cut-off) and ``budget`` (no cut-off,
per-step costs scaled to a 250-step episode's, tier-1 ends charged their skipped steps).

Cost: (sum of budgets) × rates × schedules × seeds environment steps, at about 7 ms a step on one
CPU core (docs/benchmarks.md): 3,250 × 4 × 6 × 3 ≈ 234,000 steps for budgets 250, 1,000 and 2,000.

    python benchmarks/reward_ranking.py [--seeds 3] [--budgets 250,1000,2000] [--rates 0.001,0.01,0.1,0.5] \\
        [--rewards rlopt,no-floor,budget] [--traces runs/ranking_traces.json]
    python benchmarks/reward_ranking.py --quick --data-dir DIR --train-size 256 --validation-size 40
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs  # registers the ids
from rlopt.bench.config import GRIDS, SweepSettings
from rlopt.control import ObservationSpec, ema_update
from rlopt.rewards import EpisodeScore, RewardConfig, RewardTier, ends_episode
from rlopt.tasks import TaskSize

RESULTS = Path(__file__).resolve().parent / "results" / "reward_ranking.json"
REWARDS: dict[str, RewardConfig] = {
    "rlopt": RewardConfig(),
    "paper": RewardConfig(smoothed=False, scale_by_improvement=False, new_min_reward=1.0),
    # rlopt's reward without Algorithm 1's running-score cut-off: every episode runs its whole budget
    "no-floor": RewardConfig(score_floor=None),
    # for episodes of any length: no cut-off, per-step costs scaled to a 250-step episode's, and a
    # tier-1 end charged the skipped steps
    "budget": RewardConfig(score_floor=None, reference_horizon=TaskSize.episode_steps, charge_skipped_steps=True),
}
LOWER, KEEP, RAISE = 0, 1, 2
#: lowering the rate by 0.9 this many times divides it by about 10 (0.9**22 = 0.098)
TENFOLD_STEPS = 22

#: an open-loop schedule: the action at ``step`` of an episode of ``horizon`` steps
Schedule = Callable[[int, int], int]


def _every(step: int, interval: float) -> bool:
    return int((step + 1) / interval) > int(step / interval)


def constant(step: int, horizon: int) -> int:
    return KEEP


def decay_tenfold(step: int, horizon: int) -> int:
    """Lower by 10 % at even intervals, ending near a tenth of the starting rate."""
    return LOWER if _every(step, horizon / TENFOLD_STEPS) else KEEP


def raise_threefold(step: int, horizon: int) -> int:
    """Raise by 1/0.9 ten times at even intervals (×2.9 by the end)."""
    return RAISE if _every(step, horizon / 10) else KEEP


def warmup_then_decay(step: int, horizon: int) -> int:
    """Raise for the first 7 steps (×2.1), then decay tenfold over the rest."""
    if step < 7:
        return RAISE
    return LOWER if _every(step - 7, (horizon - 7) / TENFOLD_STEPS) else KEEP


def halve_at_midpoint(step: int, horizon: int) -> int:
    """Keep until half the budget, then lower 7 times in a row (×0.48)."""
    return LOWER if horizon // 2 <= step < horizon // 2 + 7 else KEEP


def start_lower(step: int, horizon: int) -> int:
    """Lower 11 times in a row at the start (×0.31), then keep."""
    return LOWER if step < 11 else KEEP


SCHEDULES: dict[str, Schedule] = {
    "constant": constant,
    "decay ×0.1": decay_tenfold,
    "raise ×2.9": raise_threefold,
    "warm-up, decay": warmup_then_decay,
    "halve at 1/2": halve_at_midpoint,
    "start ×0.31": start_lower,
}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their average rank; NaN when either side is constant)."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


@dataclass
class Trace:
    """What one open-loop episode recorded: enough to replay any reward's return on it."""

    losses: list[float]
    """the mini-batch losses: the reset's update first, then one per env step (NaN: diverged)."""
    changed: list[bool]
    """per env step: did the action change the rate (and pay ``change_cost``)?"""
    out_of_bounds: bool
    """the episode ended because its last action left the lr bounds (nothing trained on that step)."""
    val_loss: float
    val_accuracy: float


def episode(env_kwargs: dict[str, Any], schedule: Schedule, seed: int) -> Trace:
    """One episode from start point ``seed``, run to its budget (no score floor) or to a tier-1 end."""
    env = gym.make("rlopt/LRControl-v0", start="random",
                   **{**env_kwargs, "rewards": dataclasses.replace(env_kwargs["rewards"], score_floor=None)})
    _, info = env.reset(seed=seed)
    horizon = int(env_kwargs["episode_steps"])
    losses, changed = [float(info["loss"])], []
    step, done = 0, False
    while not done:
        action = schedule(step, horizon)
        _, _, terminated, truncated, info = env.step(action)
        losses.append(float(info["loss"]))
        changed.append(action != KEEP)
        step += 1
        done = terminated or truncated
    env.close()
    out_of_bounds = info["reward_tier"] == RewardTier.OUT_OF_BOUNDS
    if out_of_bounds:
        losses.pop()  # that step trained nothing: the env judged the previous losses
    return Trace(losses, changed, out_of_bounds, float(info["val_loss"]), float(info["val_accuracy"]))


def replay_return(trace: Trace, config: RewardConfig, horizon: int) -> tuple[float, int]:
    """The return (and length) ``rlopt/LRControl-v0`` gives ``trace``'s episode under ``config``.

    The recorded losses go through the environment's own scoring (:class:`rlopt.rewards.EpisodeScore`),
    judged as the environment judges them (the moving average, or the raw losses); tier-1 ends and
    the score floor's cut-off end the replay. ``tests/test_rewards.py`` checks it against the
    environment's returns.
    """
    beta = ObservationSpec.loss_smoothing
    smoothed: float | None = None
    judged: list[float] = []

    def judge(loss: float) -> None:
        nonlocal smoothed
        smoothed = ema_update(smoothed, loss, beta)
        value = smoothed if config.smoothed else loss
        judged.append(value if math.isfinite(loss) else math.nan)

    judge(trace.losses[0])
    episode = EpisodeScore(config, horizon, judged[0])
    for step, changed in enumerate(trace.changed, start=1):
        in_bounds = not (trace.out_of_bounds and step == len(trace.changed))
        if in_bounds:
            judge(trace.losses[step])
        step_reward, tier = episode.step(judged[-config.loss_window :], in_bounds)
        episode.total += episode.decision_cost(changed) + step_reward
        if ends_episode(tier) or episode.below_floor():
            return episode.total, step
    return episode.total, len(trace.changed)


def _loss_for_ranking(value: float) -> float:
    return value if math.isfinite(value) else math.inf  # a diverged network ranks last


def score_cell(traces: dict[str, list[Trace]], config: RewardConfig, horizon: int) -> dict[str, Any]:
    """Every schedule's runs scored under ``config``, and the rank correlations of return and −val loss."""
    runs: dict[str, list[dict[str, float]]] = {}
    for name, schedule_traces in traces.items():
        runs[name] = []
        for trace in schedule_traces:
            total, steps = replay_return(trace, config, horizon)
            runs[name].append({"return": total, "val_loss": trace.val_loss, "val_accuracy": trace.val_accuracy,
                               "steps": steps})
    returns = {name: float(np.mean([r["return"] for r in rs])) for name, rs in runs.items()}
    losses = {name: float(np.mean([_loss_for_ranking(r["val_loss"]) for r in rs])) for name, rs in runs.items()}
    all_runs = [r for rs in runs.values() for r in rs]
    return {
        "runs": runs,
        "rho_schedules": spearman(list(returns.values()), [-v for v in losses.values()]),
        "rho_runs": spearman([r["return"] for r in all_runs], [-_loss_for_ranking(r["val_loss"]) for r in all_runs]),
    }


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=_ints, default=GRIDS["default"].budgets,
                        help="episode lengths, comma-separated (default: the benchmark grid's)")
    parser.add_argument("--rates", type=_floats, default=SweepSettings().sgd_rates,
                        help="starting learning rates, comma-separated (default: the SGD lr sweep)")
    parser.add_argument("--seeds", type=int, default=3, help="random start points per schedule (default 3)")
    parser.add_argument("--rewards", default="rlopt",
                        help=f"reward configurations, comma-separated, of {list(REWARDS)} (default rlopt)")
    parser.add_argument("--data-dir", default=None, help="an IDX dataset instead of MNIST")
    parser.add_argument("--train-size", type=int, default=TaskSize.train_size)
    parser.add_argument("--validation-size", type=int, default=TaskSize.validation_size)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: budgets 20,40, the lowest and a middle rate, 1 seed; writes no results")
    parser.add_argument("--out", type=Path, default=None, help=f"result JSON (default {RESULTS}; --quick: none)")
    parser.add_argument("--traces", type=Path, default=None,
                        help="JSON of the recorded episodes: cells already in it are re-scored, not re-run, "
                             "and new ones are added (default: none kept)")
    args = parser.parse_args(argv)
    args.rewards = [name.strip() for name in args.rewards.split(",") if name.strip()]
    unknown = sorted(set(args.rewards) - set(REWARDS))
    if unknown or not args.rewards:
        parser.error(f"--rewards: unknown {unknown}; choose from {list(REWARDS)}")
    if args.quick:
        args.budgets, args.seeds = (20, 40), 1
        args.rates = tuple(dict.fromkeys((args.rates[0], args.rates[len(args.rates) // 2])))
    if not args.budgets or not args.rates or args.seeds < 1:
        parser.error("--budgets, --rates and --seeds need at least one value each")
    try:  # the env's own checks: budgets, sizes, starting rates within the lr bounds
        for budget in args.budgets:
            for rate in args.rates:
                envs.EnvConfig(episode_steps=budget, lr_init=rate, train_size=args.train_size,
                               validation_size=args.validation_size, data_dir=args.data_dir)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    base: dict[str, Any] = {"train_size": args.train_size, "validation_size": args.validation_size,
                            "data_dir": args.data_dir, "rewards": RewardConfig()}
    cells: list[dict[str, Any]] = []
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    settings = {"budgets": list(args.budgets), "rates": list(args.rates), "seeds": args.seeds,
                "schedules": list(SCHEDULES), "train_size": args.train_size,
                "validation_size": args.validation_size, "data_dir": args.data_dir,
                "rewards": {name: dataclasses.asdict(REWARDS[name]) for name in args.rewards}}
    saved = _load_traces(args.traces, settings)
    for budget in args.budgets:
        for rate in args.rates:
            key = f"{budget}/{rate:g}"
            if key not in saved:
                kwargs = {**base, "episode_steps": budget, "lr_init": rate}
                saved[key] = {name: [episode(kwargs, schedule, seed) for seed in range(args.seeds)]
                              for name, schedule in SCHEDULES.items()}
                if args.traces is not None:
                    _save_traces(args.traces, settings, saved)
            for reward_name in args.rewards:
                result = score_cell(saved[key], REWARDS[reward_name], budget)
                cells.append({"reward": reward_name, "budget": budget, "lr_init": rate, **result})
                _print_cell(reward_name, budget, rate, result)
            if out is not None:  # after every cell: an interrupted run keeps what it measured
                _write(out, settings, cells)
    print(f"\n{'reward':10s} {'budget':>7s} {'rate':>8s} {'ρ schedules':>12s} {'ρ runs':>8s}")
    for c in sorted(cells, key=lambda c: args.rewards.index(c["reward"])):
        print(f"{c['reward']:10s} {c['budget']:7d} {c['lr_init']:8g} {c['rho_schedules']:+12.2f} "
              f"{c['rho_runs']:+8.2f}")
    if out is not None:
        print(f"wrote {out}")


def _print_cell(reward_name: str, budget: int, rate: float, result: dict[str, Any]) -> None:
    print(f"\nreward {reward_name}, budget {budget}, starting rate {rate:g}")
    print(f"  {'schedule':16s} {'return':>10s} {'val loss':>10s} {'val acc':>8s} {'diverged':>9s}")
    for name, runs in result["runs"].items():
        finite = [r["val_loss"] for r in runs if math.isfinite(r["val_loss"])]
        print(f"  {name:16s} {np.mean([r['return'] for r in runs]):10.2f} "
              f"{(np.mean(finite) if finite else math.nan):10.4f} "
              f"{np.mean([r['val_accuracy'] for r in runs]):8.4f} {len(runs) - len(finite):9d}")
    print(f"  ρ(return, −val loss): schedules {result['rho_schedules']:+.2f}, runs {result['rho_runs']:+.2f}")


def _trace_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings the recorded episodes depend on (not the rewards scored on them, nor the budgets asked)."""
    return {k: v for k, v in settings.items() if k not in ("rewards", "budgets", "rates")}


def _load_traces(path: Path | None, settings: dict[str, Any]) -> dict[str, dict[str, list[Trace]]]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        recorded, cells = data["settings"], data["cells"]
        traces = {key: {name: [Trace(**t) for t in ts] for name, ts in cell.items()} for key, cell in cells.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"{path} is not a --traces file of this script ({type(exc).__name__}: {exc}); "
                         "give another path or delete it") from None
    if recorded != _trace_settings(settings):
        raise SystemExit(f"{path} was recorded with other settings ({recorded}); use another --traces file")
    return traces


def _save_traces(path: Path, settings: dict[str, Any], saved: dict[str, dict[str, list[Trace]]]) -> None:
    cells = {key: {name: [dataclasses.asdict(t) for t in ts] for name, ts in cell.items()}
             for key, cell in saved.items()}
    _write_json(path, {"settings": _trace_settings(settings), "cells": cells})


def _write(out: Path, settings: dict[str, Any], cells: list[dict[str, Any]]) -> None:
    """The results so far, written atomically."""
    _write_json(out, {"settings": settings, "cells": cells}, indent=2)


def _write_json(out: Path, data: dict[str, Any], indent: int | None = None) -> None:
    """``data`` as JSON at ``out``, written atomically (a temporary file renamed over it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent) + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    main()

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
sweep (``rlopt.bench.config.SweepSettings``). ``--rewards rlopt,paper`` also scores the paper's reward
(§4.1: tiers judged on raw mini-batch losses, constant new-minimum reward) and ``no-floor`` rlopt's
reward without the running-score cut-off (``score_floor=None``); each reward re-runs the episodes
(same seeds: the same training, since the schedules ignore the reward, up to where a cut-off ends one).

Cost: (sum of budgets) × rates × schedules × seeds environment steps per reward, at about 7 ms a
step on one CPU core (docs/benchmarks.md): the defaults are 3,250 × 4 × 6 × 3 ≈ 234,000 steps.

    python benchmarks/reward_ranking.py [--seeds 3] [--budgets 250,1000,2000] [--rates 0.001,0.01,0.1,0.5]
    python benchmarks/reward_ranking.py --quick --data-dir DIR --train-size 256 --validation-size 40
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs  # registers the ids
from rlopt.bench.config import GRIDS, SweepSettings
from rlopt.rewards import RewardConfig
from rlopt.tasks import TaskSize

RESULTS = Path(__file__).resolve().parent / "results" / "reward_ranking.json"
REWARDS: dict[str, RewardConfig] = {
    "rlopt": RewardConfig(),
    "paper": RewardConfig(smoothed=False, scale_by_improvement=False, new_min_reward=1.0),
    # rlopt's reward without Algorithm 1's running-score cut-off: every episode runs its whole budget
    "no-floor": RewardConfig(score_floor=None),
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


def episode(env_kwargs: dict[str, Any], schedule: Schedule, seed: int) -> dict[str, float]:
    """One episode from start point ``seed``; its return, final validation loss and accuracy, length."""
    env = gym.make("rlopt/LRControl-v0", start="random", **env_kwargs)
    env.reset(seed=seed)
    horizon = int(env_kwargs["episode_steps"])
    total, step, done = 0.0, 0, False
    info: dict[str, Any] = {}
    while not done:
        _, reward, terminated, truncated, info = env.step(schedule(step, horizon))
        total += float(reward)
        step += 1
        done = terminated or truncated
    env.close()
    return {"return": total, "val_loss": float(info["val_loss"]), "val_accuracy": float(info["val_accuracy"]),
            "steps": step}


def _loss_for_ranking(value: float) -> float:
    return value if math.isfinite(value) else math.inf  # a diverged network ranks last


def cell(env_kwargs: dict[str, Any], seeds: int) -> dict[str, Any]:
    """Every schedule from every seed at one (budget, starting rate, reward)."""
    runs = {name: [episode(env_kwargs, schedule, seed) for seed in range(seeds)]
            for name, schedule in SCHEDULES.items()}
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
                            "data_dir": args.data_dir}
    cells: list[dict[str, Any]] = []
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    settings = {"budgets": list(args.budgets), "rates": list(args.rates), "seeds": args.seeds,
                "schedules": list(SCHEDULES), "train_size": args.train_size,
                "validation_size": args.validation_size, "data_dir": args.data_dir}
    for reward_name in args.rewards:
        for budget in args.budgets:
            for rate in args.rates:
                kwargs = {**base, "episode_steps": budget, "lr_init": rate, "rewards": REWARDS[reward_name]}
                result = cell(kwargs, args.seeds)
                cells.append({"reward": reward_name, "budget": budget, "lr_init": rate, **result})
                print(f"\nreward {reward_name}, budget {budget}, starting rate {rate:g}")
                print(f"  {'schedule':16s} {'return':>10s} {'val loss':>10s} {'val acc':>8s} {'diverged':>9s}")
                for name, runs in result["runs"].items():
                    finite = [r["val_loss"] for r in runs if math.isfinite(r["val_loss"])]
                    print(f"  {name:16s} {np.mean([r['return'] for r in runs]):10.2f} "
                          f"{(np.mean(finite) if finite else math.nan):10.4f} "
                          f"{np.mean([r['val_accuracy'] for r in runs]):8.4f} {len(runs) - len(finite):9d}")
                print(f"  ρ(return, −val loss): schedules {result['rho_schedules']:+.2f}, "
                      f"runs {result['rho_runs']:+.2f}")
                if out is not None:  # after every cell: an interrupted run keeps what it measured
                    _write(out, settings, cells)
    print(f"\n{'reward':8s} {'budget':>7s} {'rate':>8s} {'ρ schedules':>12s} {'ρ runs':>8s}")
    for c in cells:
        print(f"{c['reward']:8s} {c['budget']:7d} {c['lr_init']:8g} {c['rho_schedules']:+12.2f} {c['rho_runs']:+8.2f}")
    if out is not None:
        print(f"wrote {out}")


def _write(out: Path, settings: dict[str, Any], cells: list[dict[str, Any]]) -> None:
    """The results so far, written atomically (a temporary file renamed over ``out``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps({"settings": settings, "cells": cells}, indent=2) + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    main()

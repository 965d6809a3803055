"""Does the reward rank learning rates the way validation accuracy does?

Runs fixed learning-rate policies (the agent always "keeps" the rate) and one hand-made schedule on
``rlopt/LRControl-v0`` with random start points, and prints each policy's return under the paper's
reward (§4.1: tiers judged on raw mini-batch losses, constant new-minimum reward) and under rlopt's
default (tiers judged on the loss's moving average, new minima paid by log-improvement), next to the
validation accuracy after the episode. A reward is only useful to a DQN if higher return means a
better-trained network; this is the measurement behind rlopt's default.

    python benchmarks/reward_ranking.py [--starts 3]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the ids)
from rlopt.rewards import RewardConfig

RESULTS = Path(__file__).resolve().parent / "results" / "reward_ranking.json"
PAPER = RewardConfig(smoothed=False, scale_by_improvement=False, new_min_reward=1.0)
RLOPT = RewardConfig()
KEEP, LOWER, RAISE = 1, 0, 2

Policy = Callable[[int], int]


def constant(step: int) -> int:
    return KEEP


def warm_then_decay(step: int) -> int:
    """Raise 0.1 → 0.21 over the first 7 steps, keep, lower by 10 % every 5th step after step 150."""
    if step < 7:
        return RAISE
    return LOWER if step > 150 and step % 5 == 0 else KEEP


POLICIES: dict[str, tuple[float, Policy]] = {
    "lr 0.05": (0.05, constant),
    "lr 0.1": (0.1, constant),
    "lr 0.2": (0.2, constant),
    "lr 0.3": (0.3, constant),
    "0.1→0.21, decay after 150": (0.1, warm_then_decay),
}


def episode(lr: float, policy: Policy, seed: int, rewards: RewardConfig) -> tuple[float, float]:
    env = gym.make("rlopt/LRControl-v0", start="random", lr_init=lr, rewards=rewards)
    env.reset(seed=seed)
    total, step, done = 0.0, 0, False
    info: dict[str, float] = {}
    while not done:
        _, reward, terminated, truncated, info = env.step(policy(step))
        total += float(reward)
        step += 1
        done = terminated or truncated
    return total, float(info["val_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=3, help="random start points per policy (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    print(f"{'policy':28s} {'paper return':>14s} {'rlopt return':>14s} {'val accuracy':>13s}")
    for name, (lr, policy) in POLICIES.items():
        paper, ours, accuracy = [], [], []
        for seed in range(args.starts):
            ret, acc = episode(lr, policy, seed, PAPER)
            paper.append(ret)
            accuracy.append(acc)
            ours.append(episode(lr, policy, seed, RLOPT)[0])  # same seed: same training run
        rows.append({"policy": name, "paper_return": paper, "rlopt_return": ours, "val_accuracy": accuracy})
        print(f"{name:28s} {np.mean(paper):14.1f} {np.mean(ours):14.1f} {np.mean(accuracy):13.4f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"starts": args.starts, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

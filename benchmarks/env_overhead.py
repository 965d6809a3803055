"""What the environment costs on top of the training step it wraps.

Measures, in one process with the same CNN, batch size, data and thread count:

* seconds per bare optimizer step of a plain torch loop (forward, backward, ``opt.step()``, ``loss.item()``);
* seconds per ``env.step`` of ``rlopt/LRControl-v0`` (that same step plus features, reward, info);
* the ratio (target ≤ 1.05: features and reward cost at most 5 % of a training step);
* env steps/s with 1 and with 2 worker processes (``SubprocVecEnv``, one torch thread each;
  target: 2 workers ≥ 1.7× one on a 2-core machine).

Blocks of bare and env steps alternate and the median block is reported, with a 95 % confidence
interval of the median ratio, so drifting machine load hits both sides alike.

    python benchmarks/env_overhead.py            # about 75 seconds
    python benchmarks/env_overhead.py --quick    # a few seconds, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from _timing import paired_medians  # benchmarks/ is on sys.path when a script here runs
from stable_baselines3.common.vec_env import SubprocVecEnv

import envs
from envs import EnvConfig, HyperparamControlEnv
from rlopt.data import iterate_batches
from rlopt.rewards import RewardConfig
from rlopt.training import build_seeded_model

ENDLESS = 10**9
RESULTS = Path(__file__).resolve().parent / "results" / "env_overhead.json"


@dataclass(frozen=True)
class Settings:
    """Benchmark sizes."""

    threads: int = 1
    """torch threads in the measuring process and in each worker."""
    block: int = 40
    """steps per timed block."""
    blocks: int = 60
    """timed blocks per side (medians reported)."""
    warmup: int = 30
    """untimed steps before measuring."""
    vec_steps: int = 400
    """vector-env steps timed per worker count and repeat."""
    vec_repeats: int = 3
    """repeats of the 1-worker / 2-worker pair (medians reported)."""


def bare_loop(env_config: EnvConfig, train_x: torch.Tensor, train_y: torch.Tensor):
    """A plain torch training loop over the env's data, batch size and model: one step per call."""
    task = env_config.task_spec
    model = build_seeded_model(task.model, 0)
    opt = torch.optim.SGD(model.parameters(), lr=env_config.initial_lr)
    batches = iterate_batches(train_x, train_y, task.batch_size, seed=0)

    def step() -> float:
        x, y = next(batches)
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def endless_env() -> gym.Env:
    """LRControl-v0 that never ends on its own (no episode length within reach, no score cut-off)."""
    return gym.make("rlopt/LRControl-v0", episode_steps=ENDLESS, rewards=RewardConfig(score_floor=None))


def single_process(settings: Settings) -> dict[str, Any]:
    torch.set_num_threads(settings.threads)
    env = endless_env()
    env.reset(seed=0)
    inner = env.unwrapped
    assert isinstance(inner, HyperparamControlEnv)
    bare = bare_loop(inner.config, inner._train_x, inner._train_y)

    def env_step() -> None:
        env.step(1)  # keep the lr: the env never ends, so no reset lands inside a timed block

    timed = paired_medians(bare, env_step, block=settings.block, blocks=settings.blocks, warmup=settings.warmup)
    return {"bare_step_s": timed.base_s, "env_step_s": timed.other_s, "ratio": timed.ratio,
            "ratio_ci95": [timed.ratio_low, timed.ratio_high]}


def _worker(threads: int) -> gym.Env:
    torch.set_num_threads(threads)
    return endless_env()


def vector_throughput(n_workers: int, settings: Settings) -> float:
    """Environment steps per second summed over ``n_workers`` worker processes."""
    import functools

    vec = SubprocVecEnv([functools.partial(_worker, settings.threads)] * n_workers)
    vec.seed(0)
    vec.reset()
    actions = np.ones(n_workers, dtype=np.int64)
    for _ in range(settings.warmup):
        vec.step(actions)
    start = time.perf_counter()
    for _ in range(settings.vec_steps):
        vec.step(actions)
    elapsed = time.perf_counter() - start
    vec.close()
    return settings.vec_steps * n_workers / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs, numbers are rough")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    args = parser.parse_args()
    settings = Settings(threads=args.threads)
    if args.quick:
        settings = Settings(threads=args.threads, block=10, blocks=3, warmup=5, vec_steps=40, vec_repeats=1)

    single = single_process(settings)
    # short throughput windows swing with the VM's load: alternate 1 and 2 workers, take medians
    ones: list[float] = []
    twos: list[float] = []
    for rep in range(settings.vec_repeats):
        for n_workers in ((1, 2) if rep % 2 == 0 else (2, 1)):
            (ones if n_workers == 1 else twos).append(vector_throughput(n_workers, settings))
    one, two = statistics.median(ones), statistics.median(twos)
    result = {
        **single,
        "vec_steps_per_s_1_worker": one,
        "vec_steps_per_s_2_workers": two,
        "speedup_2_workers": two / one,
        "settings": asdict(settings),
        "torch": torch.__version__,
        "env": envs.ENV_IDS["lr"],
    }
    print(f"bare optimizer step : {single['bare_step_s'] * 1e3:8.3f} ms")
    print(f"env.step            : {single['env_step_s'] * 1e3:8.3f} ms")
    low, high = single["ratio_ci95"]
    print(f"ratio env / bare    : {single['ratio']:8.3f}   (target <= 1.05; 95 % CI {low:.3f} to {high:.3f})")
    print(f"1 worker            : {one:8.1f} env steps/s")
    print(f"2 workers           : {two:8.1f} env steps/s   speed-up {two / one:.2f}x (target >= 1.7x)")
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

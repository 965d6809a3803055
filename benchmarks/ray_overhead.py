"""What the Ray backend costs against the process pool, and how its scheduling cost grows (issue 14).

Two measurements, both on this machine:

1. **Overhead ratio** (target: at most 1.10×): the same evaluation grid, timed end to end
   (:func:`rlopt.bench.runner.run`, data loading excluded) with the process pool (``--workers N``
   spawned processes) and with a local Ray of N CPUs. ``cold``: the run starts and stops its own Ray,
   as ``evaluate.py --backend ray`` without ``--address`` does; ``warm``: Ray is already running (a
   cluster joined with ``--address``). Repeats alternate which backend goes first; medians are reported,
   with the ratio of each back-to-back pair. Both backends must produce identical records; this is checked.
2. **Task throughput** against grid size: N small passes (one task, one method, one short budget,
   N seeds) for each N in ``--sizes`` on the warm Ray and on the process pool; passes per second and
   Ray's marginal seconds per pass (the slope between the two largest sizes).

It also prints the size of the full benchmark grid (``--grid full``: passes and optimizer steps), the
number a projection to 1/10/100 nodes starts from.

    python benchmarks/ray_overhead.py                    # the default grid (real MNIST), 2 repeats: ~30 min on 2 cores
    python benchmarks/ray_overhead.py --workers 4 --repeats 3
    python benchmarks/ray_overhead.py --budgets 250 --sizes 10,100,1000   # the default grid's task at 250 steps only
    python benchmarks/ray_overhead.py --quick            # a smoke run: in-memory data, tiny grid, sizes 10 and 20

Writes ``benchmarks/results/ray_overhead.json`` (``--quick``: prints only, unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rlopt.bench import (
    BaselineName,
    EvaluationConfig,
    EvaluationResult,
    PreparedEvaluation,
    prepare,
    resolve_method,
    run,
)
from rlopt.bench.config import GRID_NAMES, GridName, held_out_seeds
from rlopt.bench.oracle import load_oracle
from rlopt.bench.runner import plan_jobs
from rlopt.data import ImageData, Split

RESULTS = Path(__file__).resolve().parent / "results" / "ray_overhead.json"


@dataclass(frozen=True)
class Settings:
    """What the benchmark runs."""

    workers: int = 2
    """processes of the pool, and CPUs of the local Ray."""
    repeats: int = 2
    """timed runs of the grid per backend and mode."""
    grid: GridName = "default"
    """the evaluation grid timed for the overhead ratio (a named grid of rlopt.bench.config.GRIDS)."""
    budgets: tuple[int, ...] | None = None
    """replaces the grid's budgets (None: the grid's)."""
    seeds: int | None = None
    """replaces the grid's seed count (None: the grid's)."""
    baselines: tuple[BaselineName, ...] | None = None
    """replaces the grid's baselines (None: the grid's)."""
    sizes: tuple[int, ...] = (10, 100, 1000)
    """passes per throughput measurement."""
    throughput_task: str = "permuted-mlp-relu"
    """the small passes' task (a ReLU MLP: cheap steps)."""
    throughput_budget: int = 10
    """optimizer steps of each small pass."""
    train_size: int | None = None
    """replaces the evaluation's training images (None: the default, 8000)."""
    validation_size: int | None = None
    """replaces the evaluation's validation images (None: the default, 2000)."""
    quick: bool = False
    """in-memory random images instead of MNIST (no download), for a smoke run."""


def quick_data(seed: int = 0) -> ImageData:
    """Random 28×28 images with 10 labels: enough to time passes without MNIST."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, 28, 28), generator=generator, dtype=torch.uint8)
        return Split(images=images, labels=torch.arange(n) % 10)

    return ImageData(train=split(700), test=split(200), n_validation=100)


def grid_config(settings: Settings, **changes: Any) -> EvaluationConfig:
    """The timed grid's configuration, with ``changes`` on top."""
    values: dict[str, Any] = {"grid": settings.grid, "budgets": settings.budgets, "seeds": settings.seeds,
                              "baselines": settings.baselines, "threads": 1, "workers": settings.workers}
    values.update({k: v for k, v in (("train_size", settings.train_size),
                                     ("validation_size", settings.validation_size)) if v is not None})
    return EvaluationConfig(**{**values, **changes})


def start_local_ray(cpus: int) -> None:
    """A new local Ray of ``cpus`` CPUs in this process (a running cluster, if any, is left alone)."""
    import ray

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)


def timed_run(prepared: PreparedEvaluation, data: ImageData | None, **kwargs: Any) -> tuple[float, EvaluationResult]:
    start = time.perf_counter()
    result = run(prepared, progress=False, data=data, **kwargs)
    return time.perf_counter() - start, result


def same_records(a: EvaluationResult, b: EvaluationResult) -> bool:
    def key(result: EvaluationResult) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.row().items() if k not in ("wall_s", "s_per_step")} for r in result.records]

    return json.dumps(key(a), default=str) == json.dumps(key(b), default=str)


def overhead(settings: Settings, data: ImageData | None) -> dict[str, Any]:
    """Medians of the grid's wall time per backend and mode, and of the back-to-back ratios."""
    import ray

    process = prepare(grid_config(settings), data=data)
    on_ray = prepare(grid_config(settings, backend="ray"), data=data)
    times: dict[str, list[float]] = {"process": [], "ray_cold": [], "ray_warm": []}
    reference: EvaluationResult | None = None
    identical = True
    for repeat in range(settings.repeats):
        order = ("process", "ray_cold", "ray_warm") if repeat % 2 == 0 else ("ray_warm", "ray_cold", "process")
        for mode in order:
            if mode == "ray_warm":
                start_local_ray(settings.workers)
                timed_run(on_ray, data, seeds=held_out_seeds(1)[:1])  # start the workers, as a running cluster has
            wall, result = timed_run(process if mode == "process" else on_ray, data)
            if mode == "ray_warm":
                ray.shutdown()
            times[mode].append(wall)
            reference = reference or result
            identical = identical and same_records(result, reference)
            print(f"  repeat {repeat + 1}: {mode:9s} {wall:8.1f} s", flush=True)
    out: dict[str, Any] = {
        "passes": len(plan_jobs(process, held_out_seeds(process.config.seed_count))),
        "records_identical": identical,
        "wall_s": {mode: statistics.median(values) for mode, values in times.items()},
        "wall_s_each": times,
    }
    for mode in ("ray_cold", "ray_warm"):
        ratios = [r / p for r, p in zip(times[mode], times["process"], strict=True)]
        out[f"ratio_{mode}"] = statistics.median(ratios)
        out[f"ratios_{mode}"] = ratios
    return out


def throughput(settings: Settings, data: ImageData | None) -> dict[str, Any]:
    """Wall time of N small passes for each N, on a warm local Ray and on the process pool."""
    import ray

    config = grid_config(settings, tasks=(settings.throughput_task,), budgets=(settings.throughput_budget,),
                         baselines=("sgd",), seeds=1)
    rows: list[dict[str, Any]] = []
    process = prepare(config, data=data)
    on_ray = prepare(replace(config, backend="ray"), data=data)
    start = time.perf_counter()
    start_local_ray(settings.workers)
    ray_init_s = time.perf_counter() - start
    try:
        timed_run(on_ray, data, seeds=list(range(settings.workers)))  # start the workers
        for n in settings.sizes:
            seeds = list(range(n))
            ray_s, _ = timed_run(on_ray, data, seeds=seeds)
            pool_s, _ = timed_run(process, data, seeds=seeds)
            rows.append({"passes": n, "ray_s": ray_s, "process_s": pool_s, "ray_passes_per_s": n / ray_s,
                         "process_passes_per_s": n / pool_s})
            print(f"  {n:5d} passes: ray {ray_s:8.2f} s ({n / ray_s:7.1f}/s), process pool {pool_s:8.2f} s "
                  f"({n / pool_s:7.1f}/s)", flush=True)
    finally:
        ray.shutdown()
    slope = math.nan
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        slope = (b["ray_s"] - a["ray_s"]) / (b["passes"] - a["passes"])
    return {"ray_init_s": ray_init_s, "rows": rows, "ray_marginal_s_per_pass_x_workers": slope * settings.workers,
            "task": settings.throughput_task, "budget": settings.throughput_budget}


def full_grid_size() -> dict[str, Any]:
    """Passes and optimizer steps of ``--grid full`` (methods built without data; the oracle file is read)."""
    config = EvaluationConfig(grid="full")
    names = config.method_names
    oracle = load_oracle(config.oracle) if any(n.startswith("oracle-") for n in names) else None
    methods = tuple(resolve_method(n, config.baseline_settings, oracle) for n in names)
    prepared = PreparedEvaluation(config=config, methods=methods, tasks=config.task_list, data={},
                                  device=torch.device("cpu"), oracle=oracle)
    jobs = plan_jobs(prepared, held_out_seeds(config.seed_count))
    return {"passes": len(jobs), "optimizer_steps": sum(max(j.budgets) for j in jobs),
            "longest_pass_steps": max(max(j.budgets) for j in jobs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=Settings.workers, help="pool processes and local Ray CPUs")
    parser.add_argument("--repeats", type=int, default=Settings.repeats, help="timed runs per backend and mode")
    parser.add_argument("--grid", default=Settings.grid, choices=GRID_NAMES, help="the grid timed")
    parser.add_argument("--sizes", default=",".join(map(str, Settings.sizes)), help="passes per throughput run")
    parser.add_argument("--budgets", default=None, help="replaces the grid's budgets (comma-separated)")
    parser.add_argument("--seeds", type=int, default=None, help="replaces the grid's seed count")
    parser.add_argument("--quick", action="store_true", help="smoke run: random in-memory data, tiny grid")
    parser.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS}; --quick: none)")
    args = parser.parse_args()
    if args.workers < 2:
        parser.error("--workers must be >= 2: one worker runs passes in this process, without a pool")
    torch.set_num_threads(1)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    budgets = None if args.budgets is None else tuple(int(b) for b in args.budgets.split(","))
    settings = Settings(workers=args.workers, repeats=args.repeats, grid=args.grid, sizes=sizes, budgets=budgets,
                        seeds=args.seeds)
    data = None
    if args.quick:
        settings = replace(settings, budgets=(5,), seeds=2, baselines=("sgd", "cosine"), sizes=(10, 20),
                           throughput_budget=2, train_size=400, validation_size=50, quick=True, repeats=1)
        data = quick_data()

    import ray

    print(f"overhead ratio: grid {settings.grid}, {settings.workers} workers, {settings.repeats} repeats", flush=True)
    result: dict[str, Any] = {"overhead": overhead(settings, data)}
    o = result["overhead"]
    print(f"process pool {o['wall_s']['process']:.1f} s; ray cold {o['wall_s']['ray_cold']:.1f} s "
          f"(ratio {o['ratio_ray_cold']:.3f}); ray warm {o['wall_s']['ray_warm']:.1f} s (ratio "
          f"{o['ratio_ray_warm']:.3f}); target <= 1.10; records identical: {o['records_identical']}")
    print(f"throughput: {settings.throughput_task}, {settings.throughput_budget} steps per pass", flush=True)
    result["throughput"] = throughput(settings, data)
    t = result["throughput"]
    print(f"ray start-up {t['ray_init_s']:.1f} s; marginal cost per pass on Ray (× workers: CPU-seconds per pass) "
          f"{t['ray_marginal_s_per_pass_x_workers']:.4f} s")
    if not args.quick:
        result["full_grid"] = full_grid_size()
        print(f"full grid: {result['full_grid']['passes']} passes, {result['full_grid']['optimizer_steps']} "
              f"optimizer steps, longest pass {result['full_grid']['longest_pass_steps']} steps")
    result["settings"] = asdict(settings)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                         "ray": ray.__version__}
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()

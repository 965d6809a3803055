"""Table I of Huang & Toyoizumi (R-SGD): MNIST test error of BackProp, R-SGD and Adam.

The paper's protocol (§III, Algorithm 1, §V B and the caption of Table I):

* network 784-100-200-10, sigmoid units everywhere (output included, Eq. (1)), quadratic error
  E = ½εᵀε against one-hot targets, the gradient averaged over a mini-batch of B = 250;
* M = 10,000 or 15,000 training images, 2,000 test images, 150 epochs of M/B updates each;
* BackProp: plain SGD, η0 = 0.8; R-SGD: the same, with Eq. (8) and Γ(t) = 1 - 1/√t; both decay
  η_{t_ep} = η_{t_ep-1}·β^{t_ep} once per epoch with β = 0.999 and floor 0.02;
  Adam: η0 = 0.01, "heuristic parameters" of Kingma & Ba otherwise, lowest rate 0.001 (the same
  β-decay is assumed, as the paper names no other);
* five independent runs, "different sets of training and test examples"; mean ± std reported.

Beyond the paper, the row ``learned`` (``--methods ... learned --policy FILE``) is R-SGD driven by a
learned controller (a ``.rlopt`` policy of mode ``rsgd`` or ``lr+rsgd``, run as
:class:`rlopt.LearnedScheduler` told the run's total steps, epochs × M/B). It starts where the R-SGD
row starts (η0, Eq. (8), the same seeds); the policy sets Γ from its first step on. A Γ-only policy
(mode ``rsgd``) keeps the paper's per-epoch lr decay, so the row differs from R-SGD's in Γ alone;
a joint policy (``lr+rsgd``) owns the rate too and runs without the decay, its lr bounds widened to
include η0 where they do not (as evaluate.py does for lr-sweep starts).

Here run r draws its training subset (from the 50,000-image training split, so the validation
tail is never used), its 2,000 test images (from the 10,000 test images), the initialisation and
the data order from seeds derived from r alone, so the three methods of a run are paired: they see
the same images, the same start and the same batches. The 10K subset of run r is the first 10,000
of its 15K subset. Test error = fraction of test images whose largest output is not the label,
measured after the last epoch.

    python benchmarks/rsgd_table1.py            # the full table: 5 runs x 2 sizes x 3 methods, 11-15 min
    python benchmarks/rsgd_table1.py --quick    # 10K, 2 runs, 20 epochs: ~20 s, a demo
    python benchmarks/rsgd_table1.py --methods rsgd adam --sizes 10000 --runs 3 --epochs 50
    python benchmarks/rsgd_table1.py --init normal --out /tmp/table1_normal.json   # N(0, 1/fan_in) start
    python benchmarks/rsgd_table1.py --methods rsgd learned --policy rlopt/policies/rsgd.rlopt

(Times on one CPU thread, 2.5-3 ms per update.) The paper does not state the initialisation;
the default is torch's (see ``Protocol.init``).

Writes ``benchmarks/results/rsgd_table1.json`` (``--quick``: ``rsgd_table1_quick.json``):
``rows`` (one per method and training size: mean and sample std, ddof=1, over runs, and the
per-run errors), ``curves`` (per run: test error, training error, mean training loss, lr and Γ every
``curve_every`` epochs) and ``meta`` (protocol, wall time, versions, command, the policy file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rlopt.control import reinforcement_of
from rlopt.data import ImageData, Split, load_mnist
from rlopt.models import MLP
from rlopt.optim import RSGD
from rlopt.scheduler import LearnedScheduler, Policy, load_policy
from rlopt.schedules import PaperLRDecay, PowerReinforcement
from rlopt.training import resolve_device

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUT = RESULTS_DIR / "rsgd_table1.json"
QUICK_OUT = RESULTS_DIR / "rsgd_table1_quick.json"

METHODS = ("backprop", "rsgd", "adam", "learned")
"""Command-line names of the methods: the paper's three in its row order, then R-SGD with a learned
controller (needs a policy file)."""

PAPER_METHODS = ("backprop", "rsgd", "adam")
"""The methods of the paper's Table I, run by default."""

METHOD_LABELS = {"backprop": "BackProp", "rsgd": "R-SGD", "adam": "Adam", "learned": "R-SGD learned"}
"""The names of Table I (and of the learned row), used in the printed table and in the JSON rows."""

PAPER_TABLE1: dict[tuple[str, int], tuple[float, float]] = {
    ("backprop", 10_000): (0.1047, 0.0020),
    ("backprop", 15_000): (0.0948, 0.0030),
    ("rsgd", 10_000): (0.0535, 0.0021),
    ("rsgd", 15_000): (0.0465, 0.0018),
    ("adam", 10_000): (0.0535, 0.0016),
    ("adam", 15_000): (0.0471, 0.0022),
}
"""Table I of the paper: (mean, ±) test error per (method, M), five runs of 150 epochs."""

STD_DDOF = 1
"""The spread reported is the sample standard deviation over runs (ddof=1); the paper does not
say which it uses."""

INITS = ("torch", "normal")
"""The initialisations :class:`Protocol` offers (see its ``init``)."""

EVAL_CHUNK = 5_000
"""Images per forward pass when measuring errors (memory only; results do not depend on it)."""


@dataclass(frozen=True)
class Protocol:
    """Every number of the Table I protocol; defaults are the paper's."""

    train_sizes: tuple[int, ...] = (10_000, 15_000)
    """M, the training-set sizes of the table's two columns (§V B, Table I)."""
    test_size: int = 2_000
    """Test images per run, drawn from the 10,000 MNIST test images (Table I caption)."""
    batch_size: int = 250
    """B, the mini-batch size; an epoch is M/B updates (Fig. 6 caption, Algorithm 1)."""
    epochs: int = 150
    """Training epochs per run (Table I caption)."""
    runs: int = 5
    """Independent runs per (method, M), each with its own data subsets and initialisation."""
    layer_sizes: tuple[int, ...] = (784, 100, 200, 10)
    """Widths of the sigmoid MLP, input to output (§V B)."""
    sgd_lr: float = 0.8
    """η0 of BackProp and R-SGD (§III)."""
    sgd_min_lr: float = 0.02
    """Floor of the BackProp / R-SGD learning rate (§III)."""
    adam_lr: float = 0.01
    """η0 of Adam (§IV); its betas and eps are torch's defaults, Kingma & Ba's values."""
    adam_min_lr: float = 0.001
    """Floor of Adam's learning rate (§IV: "the lowest value set to 0.001")."""
    lr_beta: float = 0.999
    """β of the per-epoch decay η_{t_ep} = η_{t_ep-1}·β^{t_ep}, for all three methods (§III)."""
    reinforce_a0: float = 1.0
    """a0 of R-SGD's Γ(t) = 1 - a0/t^{b0}; the paper's MNIST choice is Γ(t) = 1 - 1/√t (§V B)."""
    reinforce_b0: float = 0.5
    """b0 of Γ(t) = 1 - a0/t^{b0}."""
    init: str = "torch"
    """Initialisation, which the paper does not state: ``"torch"`` is nn.Linear's default (weights and
    biases U(±1/√fan_in)); ``"normal"`` draws weights from N(0, 1/fan_in) and zeroes the biases.
    BackProp's result depends on it (it sets when SGD leaves the initial plateau); R-SGD's and
    Adam's hardly do."""
    curve_every: int = 10
    """Record test error, training error and training loss every this many epochs (and at 0, end)."""
    seed: int = 0
    """Base seed; run r derives all its seeds from (seed, r)."""

    def __post_init__(self) -> None:
        if not self.train_sizes or any(m < self.batch_size for m in self.train_sizes):
            raise ValueError(f"every training size must hold a full batch of {self.batch_size}: {self.train_sizes}")
        if min(self.test_size, self.batch_size, self.epochs, self.runs, self.curve_every) < 1:
            raise ValueError("test_size, batch_size, epochs, runs and curve_every must be >= 1")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")


QUICK = Protocol(train_sizes=(10_000,), runs=2, epochs=20, curve_every=5)
"""``--quick``: one column, two runs, 20 epochs — a demo that finishes in well under a minute."""


# --------------------------------------------------------------------------------------------------
# Seeds and data
# --------------------------------------------------------------------------------------------------

_SEED_PURPOSES = ("train_subset", "test_subset", "init", "order", "reinforcement")


def run_seeds(base: int, run: int) -> dict[str, int]:
    """Independent 31-bit seeds for each random choice of run ``run``, derived from ``(base, run)`` only."""
    states = np.random.SeedSequence([base, run]).generate_state(len(_SEED_PURPOSES))
    return {purpose: int(s) & 0x7FFF_FFFF for purpose, s in zip(_SEED_PURPOSES, states, strict=True)}


@dataclass(frozen=True)
class RunData:
    """One run's float tensors, built once and shared by the three methods."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    train_targets: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def _to_tensors(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return split.float_images(flatten=True).to(device), split.labels.to(device)


def make_run_data(
    data: ImageData, train_size: int, protocol: Protocol, seeds: dict[str, int], device: torch.device
) -> RunData:
    train_x, train_y = _to_tensors(data.training.subset(train_size, seed=seeds["train_subset"]), device)
    test_x, test_y = _to_tensors(data.test.subset(protocol.test_size, seed=seeds["test_subset"]), device)
    n_classes = protocol.layer_sizes[-1]
    targets = nn.functional.one_hot(train_y, n_classes).to(train_x.dtype)
    return RunData(train_x, train_y, targets, test_x, test_y)


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index tensors of one epoch: a fresh permutation of ``n`` cut into ``n // batch_size`` full batches."""
    permutation = torch.randperm(n, generator=generator)
    for start in range(0, n - batch_size + 1, batch_size):
        yield permutation[start : start + batch_size]


# --------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------


def make_optimizer(
    method: str, params: Sequence[nn.Parameter], protocol: Protocol, seed: int
) -> tuple[torch.optim.Optimizer, PaperLRDecay]:
    """The method's optimizer and its per-epoch decay η_{t_ep} = max(floor, η_{t_ep-1}·β^{t_ep}).

    ``learned`` gets R-SGD's optimizer and decay; :func:`attach_policy` then hands Γ (and, for a
    joint policy, the rate) to the learned controller.
    """
    if method == "backprop":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=protocol.sgd_lr)
        min_lr = protocol.sgd_min_lr
    elif method in ("rsgd", "learned"):
        schedule = PowerReinforcement(a0=protocol.reinforce_a0, b0=protocol.reinforce_b0)
        opt = RSGD(params, lr=protocol.sgd_lr, reinforcement=schedule, seed=seed)
        min_lr = protocol.sgd_min_lr
    elif method == "adam":
        opt = torch.optim.Adam(params, lr=protocol.adam_lr)
        min_lr = protocol.adam_min_lr
    else:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    return opt, PaperLRDecay(opt, beta=protocol.lr_beta, min_lr=min_lr)


def attach_policy(opt: torch.optim.Optimizer, policy: Policy, total_steps: int) -> LearnedScheduler:
    """A :class:`LearnedScheduler` of ``policy`` on the ``learned`` row's R-SGD, told ``total_steps``.

    A policy that controls the rate may find η0 above its lr bounds (0.8 > SGD's 0.5): the bounds
    are widened to include it rather than moving the paper's start. The safety net stays at its
    default (it only ever lowers the rate of a joint policy).
    """
    low, high = policy.actions.lr_bounds
    lr = float(opt.param_groups[0]["lr"])
    bounds = None if not policy.actions.controls_lr or low <= lr <= high else (min(low, lr), max(high, lr))
    return LearnedScheduler(opt, policy, total_steps=total_steps, lr_bounds=bounds)


def check_learned_policy(policy: Policy) -> None:
    """``ValueError`` unless ``policy`` sets R-SGD's Γ (mode ``rsgd`` or ``lr+rsgd``)."""
    if not policy.actions.controls_reinforcement:
        raise ValueError(
            f"the learned row needs a policy that sets R-SGD's Γ (mode 'rsgd' or 'lr+rsgd'); this one has mode "
            f"{policy.actions.mode!r}"
        )


def build_model(protocol: Protocol, seed: int, device: torch.device) -> MLP:
    """The sigmoid MLP initialised as ``protocol.init`` says, drawn from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP(protocol.layer_sizes, activation="sigmoid")
        if protocol.init == "normal":
            for layer in model.layers:
                assert isinstance(layer, nn.Linear)
                nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
                nn.init.zeros_(layer.bias)
    return model.to(device)


@torch.no_grad()
def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of examples whose arg-max output differs from the label."""
    wrong = 0
    for start in range(0, len(x), EVAL_CHUNK):
        out = model(x[start : start + EVAL_CHUNK])
        wrong += int((out.argmax(dim=1) != y[start : start + EVAL_CHUNK]).sum())
    return wrong / len(x)


def train_one(
    method: str, run_data: RunData, protocol: Protocol, seeds: dict[str, int], policy: Policy | None = None
) -> dict[str, Any]:
    """Train one (method, M, run) for ``protocol.epochs`` epochs; returns the final test error and the curve.

    ``learned`` needs ``policy``: its scheduler observes every update's loss and sets Γ (and a joint
    policy the rate) for the next.
    """
    device = run_data.train_x.device
    model = build_model(protocol, seeds["init"], device)
    params = list(model.parameters())
    opt, decay = make_optimizer(method, params, protocol, seeds["reinforcement"])
    order = torch.Generator().manual_seed(seeds["order"])
    n = len(run_data.train_x)
    scheduler: LearnedScheduler | None = None
    if method == "learned":
        if policy is None:
            raise ValueError("the learned row needs a policy (--policy FILE)")
        scheduler = attach_policy(opt, policy, protocol.epochs * (n // protocol.batch_size))
    decays = scheduler is None or not scheduler.actions.controls_lr  # a joint policy owns the rate

    def record(epoch: int, train_loss: float | None) -> dict[str, float | None]:
        model.eval()
        return {
            "epoch": epoch,
            "lr": float(opt.param_groups[0]["lr"]),
            "reinforcement": reinforcement_of(opt),
            "train_loss": train_loss,
            "train_error": error_rate(model, run_data.train_x, run_data.train_y),
            "test_error": error_rate(model, run_data.test_x, run_data.test_y),
        }

    curve = [record(0, None)]  # no training loss before the first epoch
    model.train()
    for epoch in range(1, protocol.epochs + 1):
        loss_sum = torch.zeros((), device=device)
        n_batches = 0
        for index in epoch_batches(n, protocol.batch_size, order):
            index = index.to(device)
            opt.zero_grad(set_to_none=True)
            outputs = model(run_data.train_x[index])
            # rlopt.models.quadratic_error with the one-hot targets built once: ½‖y* − y‖², batch mean
            loss = 0.5 * (run_data.train_targets[index] - outputs).pow(2).sum(dim=1).mean()
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step(loss)  # one float read per update, the learned row's only extra sync
            loss_sum += loss.detach()
            n_batches += 1
        if epoch % protocol.curve_every == 0 or epoch == protocol.epochs:
            curve.append(record(epoch, float(loss_sum) / n_batches))
            model.train()
        if decays:
            decay.step()
    return {"test_error": curve[-1]["test_error"], "train_error": curve[-1]["train_error"], "curve": curve}


# --------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------


def run_table1(
    data: ImageData,
    protocol: Protocol = Protocol(),
    methods: Sequence[str] = PAPER_METHODS,
    *,
    policy: Policy | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the protocol on ``data``: ``{"rows": [...], "curves": [...]}``.

    Each row is ``{"method", "train_size", "mean_test_error", "std_test_error", "runs"}`` with
    ``runs`` the per-run final test errors (in run order) and the std a sample std (ddof=1; 0.0 for
    a single run). ``curves`` holds, per (method, M, run), the recorded points of the training.
    The method ``learned`` needs ``policy`` (a Γ or joint lr+Γ policy); it is paired with the others
    like them: same subsets, initialisation, batch order and Bernoulli seed per run.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {METHODS}")
    if "learned" in methods:
        if policy is None:
            raise ValueError("the learned row needs a policy (--policy FILE)")
        check_learned_policy(policy)
    resolved = resolve_device(device)
    errors: dict[tuple[str, int], list[float]] = {(m, size): [] for m in methods for size in protocol.train_sizes}
    curves: list[dict[str, Any]] = []
    tasks = [(run, size, method) for run in range(protocol.runs) for size in protocol.train_sizes for method in methods]
    bar = tqdm(tasks, desc="Table I", unit="run", disable=not progress, dynamic_ncols=True)
    run_data: RunData | None = None
    data_key: tuple[int, int] | None = None
    for run, size, method in bar:
        bar.set_postfix_str(f"{METHOD_LABELS[method]} M={size} run={run}")
        seeds = run_seeds(protocol.seed, run)
        if data_key != (run, size):  # one set of tensors per (run, M), shared by the methods
            run_data, data_key = make_run_data(data, size, protocol, seeds, resolved), (run, size)
        assert run_data is not None
        start = time.perf_counter()
        result = train_one(method, run_data, protocol, seeds, policy)
        errors[(method, size)].append(result["test_error"])
        curves.append(
            {
                "method": METHOD_LABELS[method],
                "train_size": size,
                "run": run,
                "seeds": seeds,
                "test_error": result["test_error"],
                "train_error": result["train_error"],
                "wall_s": round(time.perf_counter() - start, 2),
                "curve": result["curve"],
            }
        )
        bar.write(
            f"{METHOD_LABELS[method]:>13}  M={size:>6}  run {run}: test error {result['test_error']:.4f}  "
            f"(train error {result['train_error']:.4f}, {curves[-1]['wall_s']:.0f} s)"
        )
    bar.close()
    rows = [
        {
            "method": METHOD_LABELS[method],
            "train_size": size,
            "mean_test_error": statistics.fmean(errs),
            "std_test_error": statistics.stdev(errs) if len(errs) > 1 else 0.0,
            "runs": errs,
        }
        for method in methods
        for size in protocol.train_sizes
        for errs in [errors[(method, size)]]
    ]
    return {"rows": rows, "curves": curves}


def format_table(rows: Sequence[dict[str, Any]], epochs: int, runs: int) -> str:
    """Measured mean ± std beside Table I of the paper, and the absolute difference of the means."""
    labels = {label: name for name, label in METHOD_LABELS.items()}
    lines = [
        f"{'method':>13}  {'M':>6}  {'measured (' + str(runs) + ' runs, ' + str(epochs) + ' ep)':>24}  "
        f"{'paper (5 runs, 150 ep)':>22}  {'|diff|':>7}",
    ]
    for row in rows:
        measured = f"{row['mean_test_error']:.4f} ± {row['std_test_error']:.4f}"
        paper = PAPER_TABLE1.get((labels[row["method"]], row["train_size"]))
        if paper is None:
            paper_text, diff_text = "-", "-"
        else:
            paper_text = f"{paper[0]:.4f} ± {paper[1]:.4f}"
            diff_text = f"{abs(row['mean_test_error'] - paper[0]):.4f}"
        lines.append(f"{row['method']:>13}  {row['train_size']:>6}  {measured:>24}  {paper_text:>22}  {diff_text:>7}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10K only, 2 runs, 20 epochs (a ~20 s demo)")
    parser.add_argument("--epochs", type=int, help="epochs per run (paper: 150)")
    parser.add_argument("--runs", type=int, help="runs per (method, M) (paper: 5)")
    parser.add_argument("--sizes", type=int, nargs="+", help="training sizes M (paper: 10000 15000)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(PAPER_METHODS),
                        help="methods to run (default: the paper's three; learned needs --policy)")
    parser.add_argument("--policy", type=Path, help="the learned row's .rlopt policy (mode rsgd or lr+rsgd)")
    parser.add_argument("--curve-every", type=int, help="epochs between recorded curve points (default 10)")
    parser.add_argument("--seed", type=int, help="base seed of the runs (default 0)")
    parser.add_argument("--init", choices=INITS, help="initialisation (default torch; see Protocol.init)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, help=f"result JSON (default {DEFAULT_OUT.name}, --quick: {QUICK_OUT.name})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    policy = None
    if "learned" in args.methods or args.policy is not None:
        if args.policy is None:
            parser.error("--methods learned needs --policy FILE")
        if "learned" not in args.methods:
            parser.error("--policy is the learned row's: add learned to --methods")
        try:
            policy = load_policy(args.policy)
            check_learned_policy(policy)
        except ValueError as exc:
            parser.error(str(exc))
    torch.set_num_threads(args.threads)
    protocol = QUICK if args.quick else Protocol()
    overrides = {
        "epochs": args.epochs,
        "runs": args.runs,
        "train_sizes": tuple(args.sizes) if args.sizes else None,
        "curve_every": args.curve_every,
        "seed": args.seed,
        "init": args.init,
    }
    protocol = dataclasses.replace(protocol, **{k: v for k, v in overrides.items() if v is not None})
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)

    steps = protocol.runs * protocol.epochs * sum(m // protocol.batch_size for m in protocol.train_sizes)
    print(
        f"Table I protocol: {protocol.runs} runs x M={list(protocol.train_sizes)} x {args.methods}, "
        f"{protocol.epochs} epochs, B={protocol.batch_size}: {steps * len(args.methods):,} updates "
        f"(~{steps * len(args.methods) * 2.8e-3 / 60:.0f} min at 2.8 ms per update on one CPU thread)",
        flush=True,
    )
    start = time.perf_counter()
    data = load_mnist(progress=False)
    result = run_table1(data, protocol, args.methods, policy=policy, device=args.device, progress=not args.no_progress)
    wall_s = time.perf_counter() - start

    print()
    print(format_table(result["rows"], protocol.epochs, protocol.runs))
    print(f"std: sample standard deviation over runs (ddof={STD_DDOF}); wall time {wall_s:.0f} s")

    document = {
        "rows": result["rows"],
        "meta": {
            "paper": "Huang & Toyoizumi, reinforced SGD, Table I",
            "protocol": dataclasses.asdict(protocol),
            "methods": [METHOD_LABELS[m] for m in args.methods],
            "policy": None if policy is None else {
                "file": str(args.policy),
                "mode": policy.actions.mode,
                "optimizer": policy.optimizer,
                "metadata": policy.metadata,
            },
            "epochs": protocol.epochs,
            "runs": protocol.runs,
            "std_ddof": STD_DDOF,
            "paper_table": [
                {"method": METHOD_LABELS[m], "train_size": size, "mean_test_error": mean, "std_test_error": std}
                for (m, size), (mean, std) in PAPER_TABLE1.items()
            ],
            "wall_s": round(wall_s, 1),
            "device": str(resolve_device(args.device)),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["main", *argv]),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "curves": result["curves"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""The Ray backend of the benchmark (``evaluate.py --backend ray``): one Ray task per training pass.

:func:`rlopt.bench.runner.run` hands its passes here when ``config.backend == "ray"``. What happens:

1. **Joining Ray** (:func:`connect`): a Ray already initialised in this process is used as it is;
   otherwise ``config.address`` (or ``$RAY_ADDRESS``) names a cluster to join, and without one a new
   local Ray starts on this machine's cores (``workers × (threads or 1)`` CPUs when ``workers > 1``).
   A Ray this module started is shut down when the passes are done.
2. **Data once**: the prepared evaluation (its methods, tasks and every task's data, on the CPU) is
   put in the object store once (``ray.put``). Each task receives a reference, not the data; Ray
   moves the object to a node once, and each worker process deserialises it once and keeps it for
   the worker's later passes (:data:`_PREPARED`). No file is read on a worker: policy and oracle
   files were read by :func:`rlopt.bench.runner.prepare` on this machine.
3. **One task per pass** (:class:`rlopt.bench.runner.Job`), submitted longest first, each reserving
   ``config.threads or 1`` CPUs and running with that many torch threads. It returns the pass's
   records and the CPU seconds its worker spent; only records come back over the network.
4. **Failures**: a pass whose worker process or node dies is run again, up to ``config.max_retries``
   times (Ray's ``max_retries``). A pass is seeded by itself, so the re-run's records are the ones the
   first try would have returned, and each pass's records are collected once, from its one result:
   none is lost or duplicated. An exception raised by the pass itself is not retried (a pass is
   deterministic: it would fail again); it, or a pass whose retries ran out, ends the evaluation
   with the error, and the passes still pending are cancelled.

Records are identical to the process backend's for the same seeds: both run
:func:`rlopt.bench.runner.run_one` on the same data with the same per-pass seeding.

``import ray`` happens only inside these functions: nothing else in rlopt imports Ray, and without
the ``ray`` extra only ``--backend ray`` fails (:class:`BackendUnavailable`, one line).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from rlopt.bench.config import EvaluationConfig
from rlopt.bench.runner import Job, PreparedEvaluation, RunRecord, TaskData, run_job
from rlopt.training import resolve_device

if TYPE_CHECKING:
    from ray import ObjectRef

__all__ = ["RAY_EXTRA", "BackendUnavailable", "PassResults", "connect", "local_cpus", "require_ray", "run_passes",
           "shippable"]

#: how users install what this backend needs
RAY_EXTRA = "pip install 'rlopt[ray]'"

#: Ray's switch for token authentication, which a process joining such a cluster must set to ``token``
AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"

#: what a pass runs: :func:`rlopt.bench.runner.run_job` (tests pass one that fails once)
PassFunction = Callable[[Job, PreparedEvaluation], list[RunRecord]]


class BackendUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be joined; the message is one line."""


@dataclass(frozen=True)
class PassResults:
    """What the passes returned, in the order they were given."""

    records: tuple[list[RunRecord], ...]
    """each pass's records."""
    cpu_s: float
    """CPU seconds the worker processes spent in the passes (successful tries only)."""


def require_ray(what: str = "--backend ray") -> None:
    """Raise :class:`BackendUnavailable` if Ray cannot be imported; the message says ``what`` needs it."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(f"{what} needs Ray, which is not installed ({exc}): {RAY_EXTRA}") from None


def local_cpus(config: EvaluationConfig) -> int | None:
    """CPUs of a local Ray for ``config``: ``workers × (threads or 1)`` when ``workers > 1``; ``None``: all cores."""
    return config.workers * (config.threads or 1) if config.workers > 1 else None


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to Ray; returns whether this call started (or joined) it.

    A Ray already initialised in this process is used as it is. Otherwise ``address``, else
    ``$RAY_ADDRESS``, names a cluster to join; without either a local Ray starts with ``num_cpus``
    CPUs (``None``: this machine's cores). Raises :class:`BackendUnavailable` (one line) when Ray is
    missing or the cluster cannot be joined. Also used by agent-training sweeps (:mod:`agents.sweep`).
    """
    require_ray()
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address is not None:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            # "local": a new Ray of our own, even where a cluster runs on this machine (that one is --address auto)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = f"the Ray cluster at {address}" if address is not None else "a local Ray"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if address not in (None, "auto") and os.environ.get(AUTH_MODE_VARIABLE) != "token":
            hint = (f" (joining a cluster with token authentication by its address needs {AUTH_MODE_VARIABLE}=token "
                    "and the cluster's token on this machine: see docs/ray.md)")
        raise BackendUnavailable(f"cannot start or join {where}: {first}{hint}") from None
    return True


def _on(device: torch.device) -> Callable[[TaskData], TaskData]:
    """A function that moves every tensor of a :class:`TaskData` to ``device``."""
    def move(data: TaskData) -> TaskData:
        return TaskData(**{f.name: getattr(data, f.name).to(device) for f in dataclasses.fields(TaskData)})

    return move


def _moved(data: dict[str, TaskData], move: Callable[[TaskData], TaskData]) -> dict[str, TaskData]:
    """``move`` applied once to each distinct :class:`TaskData` (tasks of one dataset variant share theirs)."""
    done: dict[int, TaskData] = {}
    return {name: done.setdefault(id(d), move(d)) for name, d in data.items()}


def shippable(prepared: PreparedEvaluation) -> PreparedEvaluation:
    """The prepared evaluation with its data on the CPU: what goes into the object store."""
    return dataclasses.replace(prepared, data=_moved(prepared.data, _on(torch.device("cpu"))))


#: the prepared evaluation this worker process last received, by object id: passes after the first reuse it
_PREPARED: dict[str, PreparedEvaluation] = {}


def _prepared_here(box: list[ObjectRef]) -> PreparedEvaluation:
    """The prepared evaluation in ``box`` on this worker's device, deserialised once per worker process."""
    import ray

    key = box[0].hex()
    prepared = _PREPARED.get(key)
    if prepared is None:
        shipped: PreparedEvaluation = ray.get(box[0])
        device = resolve_device(shipped.config.device)  # "auto" is this node's choice
        prepared = dataclasses.replace(shipped, device=device,
                                       data=_moved(shipped.data, _on(device)))
        _PREPARED.clear()  # one evaluation at a time: drop an earlier one's data
        _PREPARED[key] = prepared
    return prepared


def _run_pass(box: list[ObjectRef], job: Job, run: PassFunction) -> tuple[list[RunRecord], float]:
    """The Ray task: one pass on this worker; its records and the worker's CPU seconds for it.

    The reference travels inside a list, so Ray hands it over unresolved and :func:`_prepared_here`
    fetches the object only the first time this worker sees it.
    """
    prepared = _prepared_here(box)
    torch.set_num_threads(prepared.config.threads or 1)
    start = time.process_time()
    records = run(job, prepared)
    return records, time.process_time() - start


def run_passes(
    prepared: PreparedEvaluation,
    jobs: Sequence[Job],
    *,
    on_done: Callable[[Job], object] | None = None,
    run: PassFunction = run_job,
) -> PassResults:
    """Run ``jobs`` as Ray tasks (submitted in the given order); ``on_done`` is called as each finishes.

    Connects first (:func:`connect`) and shuts down a Ray it started. Raises
    :class:`BackendUnavailable` before any pass when Ray is missing or unreachable; an exception of a
    pass (or a pass whose retries ran out) propagates after the pending passes are cancelled.
    """
    config = prepared.config
    started = connect(config.address, local_cpus(config))
    import ray

    remote = ray.remote(_run_pass).options(
        num_cpus=config.threads or 1, max_retries=config.max_retries, retry_exceptions=False
    )
    pending: list[Any] = []
    try:
        box = [ray.put(shippable(prepared))]
        refs = [remote.remote(box, job, run) for job in jobs]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        results: list[tuple[list[RunRecord], float] | None] = [None] * len(refs)
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            if pending:  # and whatever else is ready by now
                more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                finished += more
            for ref in finished:
                i = index[ref]
                results[i] = ray.get(ref)  # raises a failed pass's error
                if on_done is not None:
                    on_done(jobs[i])
        done = [r for r in results if r is not None]
        assert len(done) == len(jobs)
        return PassResults(records=tuple(r for r, _ in done), cpu_s=sum(c for _, c in done))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()

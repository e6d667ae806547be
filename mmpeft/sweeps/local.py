"""Running a sweep's runs: at most as many at a time as there are slots, with start / finish and status lines.

A slot is where one run's steps run: a GPU (``CUDA_VISIBLE_DEVICES``) or none, and a number of CPU threads
(``slots``). ``schedule`` hands each run to a free slot through a launcher and waits; ``launch_local`` runs the steps
in a thread of this process (each step a subprocess), ``mmpeft.sweeps.submit`` as submitit jobs. Both run the same
``mmpeft.sweeps.runner.run_steps``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

from mmpeft.sweeps.runner import JobSettings, RunOutcome, run_steps, terminate_steps
from mmpeft.sweeps.spec import RunSpec


@dataclass(frozen=True)
class Slot:
    """One place to run a run: ``gpu`` for ``CUDA_VISIBLE_DEVICES`` (None: inherited; ``""``: none) and
    ``threads`` for ``OMP_NUM_THREADS`` (None: the process default)."""

    gpu: str | None
    threads: int | None

    def describe(self) -> str:
        where = "" if self.gpu is None else ("no GPU, " if self.gpu == "" else f"GPU {self.gpu}, ")
        return f"{where}{self.threads} thread{'s' * (self.threads != 1)}" if self.threads else where.rstrip(", ")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity: what SLURM or taskset gave it, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def slots(jobs: int, gpus: list[str] | None = None, runs_per_gpu: int = 1, threads: int | None = None,
          cpus: int | None = None) -> list[Slot]:
    """``jobs`` slots. With ``gpus``, slot i gets GPU ``gpus[i % len(gpus)]`` (round-robin, ``runs_per_gpu`` slots per
    GPU; ``jobs`` may not exceed ``len(gpus) * runs_per_gpu``); ``gpus == []`` means no GPU (``""``).

    Threads: ``threads`` each, or the CPUs split evenly, ``max(1, cpus // jobs)``: a fixed split, so a run's thread
    count (on which CPU results depend, bit for bit) does not depend on how many other runs happened to be waiting.
    """
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: run at least 1 run at a time")
    if runs_per_gpu < 1:
        raise ValueError(f"--runs-per-gpu {runs_per_gpu}: at least 1")
    if gpus and jobs > len(gpus) * runs_per_gpu:
        raise ValueError(f"--jobs {jobs} is more than --gpus {','.join(gpus)} x --runs-per-gpu {runs_per_gpu} = "
                         f"{len(gpus) * runs_per_gpu} slots; raise --runs-per-gpu or lower --jobs")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads-per-job {threads}: at least 1")
    each = threads or max(1, (cpus or available_cpus()) // jobs)
    return [Slot(None if gpus is None else (gpus[i % len(gpus)] if gpus else ""), each) for i in range(jobs)]


class Handle(Protocol):
    """A started run: a ``concurrent.futures.Future`` or a submitit ``Job``."""

    def done(self) -> bool: ...

    def result(self) -> RunOutcome: ...


Launch = Callable[[RunSpec, Slot], Handle]


def say(message: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {message}", flush=True)


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def schedule(runs: list[RunSpec], free: list[Slot], launch: Launch, *, stop: Callable[[], None] = lambda: None,
             status_every: float = 60.0, poll: float = 0.5, failure_log: Callable[[Any], str | None] = lambda h: None,
             ) -> list[RunOutcome]:
    """Run ``runs`` in order, each in a free slot (``launch``), and wait for all; returns their outcomes in order of
    finishing. Prints a line as each finishes (status, time, counts, elapsed) and, every ``status_every`` seconds,
    the runs in progress. A launcher whose handle raises gives a ``failed`` outcome (its log from ``failure_log``);
    an interrupt (Ctrl-C, an error here) calls ``stop`` before it propagates."""
    start = last = time.perf_counter()
    waiting, running, outcomes = deque(runs), {}, []
    free = list(free)
    try:
        while waiting or running:
            while waiting and free:
                run, slot = waiting.popleft(), free.pop(0)
                running[run.key] = (launch(run, slot), slot, time.perf_counter())
            for key, (handle, slot, began) in list(running.items()):
                if not handle.done():
                    continue
                del running[key]
                free.append(slot)
                try:
                    outcome = handle.result()
                except Exception as error:  # a job that died (killed, out of memory, timed out): a failure
                    outcome = RunOutcome(key, "failed", time.perf_counter() - began, exit_code=None,
                                         log=failure_log(handle), message=f"{type(error).__name__}: {error}")
                outcomes.append(outcome)
                say(f"{finish_line(outcome)} | {counts(outcomes, len(runs), running)} | elapsed "
                    f"{minutes(time.perf_counter() - start)}")
            if running and status_every and time.perf_counter() - last >= status_every:
                busy = ", ".join(f"{key} ({minutes(time.perf_counter() - began)})"
                                 for key, (_, _, began) in running.items())
                say(f"running {busy} | {counts(outcomes, len(runs), running)}")
                last = time.perf_counter()
            if running:
                time.sleep(poll)
    except BaseException:
        stop()
        raise
    return outcomes


def finish_line(outcome: RunOutcome) -> str:
    if outcome.status == "done":
        return f"done {outcome.key} in {minutes(outcome.seconds)}"
    if outcome.status == "skipped":
        return f"skipped {outcome.key}: done before"
    if outcome.status == "held":
        return f"skipped {outcome.key}: {outcome.message}"
    what = f"{outcome.step} exited with code {outcome.exit_code}" if outcome.step else outcome.message
    return f"FAILED {outcome.key}: {what}" + (f"; log {outcome.log}" if outcome.log else "")


def counts(outcomes: list[RunOutcome], total: int, running: dict) -> str:
    finished = sum(o.status in ("done", "skipped") for o in outcomes)
    failed = sum(o.status == "failed" for o in outcomes)
    waiting = total - len(outcomes) - len(running)
    return (f"{finished}/{total} finished, {failed} failed, {len(running)} running"
            + (f", {waiting} waiting" if waiting else ""))


def launch_local(settings: JobSettings, jobs: int) -> tuple[Launch, Callable[[], None]]:
    """A launcher running each run's steps in a thread of this process (at most ``jobs`` at a time), and its stop
    (terminates the step processes)."""
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sweep-run")

    def launch(run: RunSpec, slot: Slot) -> Handle:
        here = replace(settings, gpu=slot.gpu, threads=slot.threads)

        def announce(state: str) -> None:
            what = {"new": "start", "fit": "restart", "resume": "resume from its last checkpoint",
                    "eval": "evaluate" if run.eval_args else "close the record of"}[state]
            say(f"{what} {run.key} ({slot.describe() or 'inherited devices'}); log {run.run_dir / 'sweep.log'}")

        return pool.submit(run_steps, run, here, announce)

    def stop() -> None:
        pool.shutdown(wait=False, cancel_futures=True)
        terminate_steps()

    return launch, stop

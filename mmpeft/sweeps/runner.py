"""One run of a sweep: its steps (``mmpeft fit``, then ``mmpeft eval`` if the sweep has one), skip, resume and lock.

``run_steps(run, settings)`` is the whole job of one run, the same function for every executor (in a thread of the
sweep process, or in a submitit job). In the run directory it writes:

- ``command.txt``: the run's commands, runnable by hand (``sh command.txt``; ``mmpeft`` on the PATH).
- ``sweep.log``: every step's output, appended, each attempt headed by the exact command line it ran.
- ``sweep_run.json`` (atomically, at each change of state)::

    {"sweep": NAME, "config": ID, "seed": S, "case": CASE or null, "overrides": {OPTION: VALUE},
     "status": "started" | "trained" | "done" | "failed",
     "commands": [fit line, eval line], "fit_args": [...], "eval_args": [...] or null,
     "failed_step": "fit" | "eval", "exit_code": N, "log": PATH   (when failed),
     "fit_s": ..., "eval_s": ..., "resumed_from": PATH or null, "threads": N, "gpu": ID or null,
     "host": ..., "started": ISO time, "finished": ISO time}

  ``done``: every step finished (only these count as results). ``trained``: fit finished, the eval has not.

What a restart does with each run (``run_state``): ``done`` with the same commands is skipped; a run whose fit
finished reruns only the eval (a sweep given an eval section later, or a changed one, evaluates its trained runs);
otherwise fit runs again, with ``--ckpt_path <run>/checkpoints/last.ckpt`` when that checkpoint exists (mmpeft
resumes exactly). A run whose fit finished but whose checkpoint is gone (copied without it) trains again, since
its eval would have nothing to read. A run trained (or checkpointed) with fit options other than the sweep
file's is refused (``changed_runs``): its directory holds another experiment; one that failed before any
checkpoint starts over with the new options. Each run holds a lock (``.sweep.lock``, ``filelock``) while it
works, so two sweep processes on one sweep never run the same run: the second skips it (``held``).

``done`` records from before an eval was added keep ``eval_args: null`` until the sweep is run again.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from mmpeft.atomic import write_json_atomic, write_text_atomic
from mmpeft.sweeps.spec import RunSpec

RECORD = "sweep_run.json"
COMMAND_FILE = "command.txt"
LOG = "sweep.log"
LOCK = ".sweep.lock"
CHECKPOINT = Path("checkpoints") / "last.ckpt"


@dataclass(frozen=True)
class JobSettings:
    """Where and how a run's steps run. ``launcher``: the command that runs ``mmpeft`` (``[python, -m, module]``);
    ``cwd``: the directory the sweep started from (the runs' paths are relative to it); ``threads``: CPU threads
    (``OMP_NUM_THREADS``; None: the process default); ``gpu``: ``CUDA_VISIBLE_DEVICES`` (``""``: no GPU; None: as
    inherited, e.g. what SLURM gave the job)."""

    launcher: tuple[str, ...]
    cwd: str
    threads: int | None = None
    gpu: str | None = None


@dataclass(frozen=True)
class RunOutcome:
    """What ``run_steps`` did. ``status``: ``done`` (every step finished now), ``skipped`` (done before),
    ``held`` (another sweep process holds the run), ``failed`` (``step`` exited ``exit_code``; output in ``log``)."""

    key: str
    status: str
    seconds: float = 0.0
    step: str | None = None
    exit_code: int | None = None
    log: str | None = None
    message: str = ""


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``sweep_run.json``, or None when there is none (or it cannot be read: the run starts over)."""
    try:
        record = json.loads((Path(run_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def identity(args: list[str] | None) -> list[str] | None:
    """A fit command without its ``--run_dir`` (the record's place says where the run is)."""
    return None if args is None else [a for a in args if not a.startswith("--run_dir=")]


def run_state(run: RunSpec, record: dict[str, Any] | None, run_dir: Path) -> str:
    """What a restart does with ``run`` (whose directory is ``run_dir``, its record ``record``): ``new``, ``resume``
    (fit from its last checkpoint), ``fit`` (fit again from the start), ``eval`` (fit done: the eval runs, or with
    no eval any more the record is closed), ``done`` (skipped) or ``changed`` (refused: trained state of other fit
    options; a run that failed or was killed before any checkpoint simply starts over with the new options)."""
    status = (record or {}).get("status")
    trained = status in ("trained", "done") or (status == "failed" and record.get("failed_step") == "eval")
    checkpoint = (run_dir / CHECKPOINT).is_dir()
    if record is not None and identity(record.get("fit_args")) != identity(run.fit_args):
        return "changed" if trained or checkpoint else "fit"
    if trained:
        if status == "done" and (run.eval_args is None or record.get("eval_args") == run.eval_args):
            return "done"
        # the eval reads the run's checkpoint: a run copied without it (finished runs shipped without their
        # checkpoints) or whose checkpoint was deleted has nothing to evaluate, so it trains again
        return "eval" if checkpoint or run.eval_args is None else "fit"
    if checkpoint:
        return "resume"
    return "fit" if record is not None else "new"


def changed_runs(runs: list[RunSpec], cwd: str | Path) -> list[str]:
    """Messages for the runs whose directories hold a run of other fit options (``run_state`` ``changed``); the
    runs' paths are relative to ``cwd``."""
    out = []
    for run in runs:
        record = read_record(Path(cwd) / run.run_dir)
        if run_state(run, record, Path(cwd) / run.run_dir) == "changed":
            old, new = identity(record.get("fit_args")) or [], identity(run.fit_args) or []
            differ = [a for a in new if a not in old] + [f"(was {a})" for a in old if a not in new]
            out.append(f"{run.run_dir}: trained with other fit options: {' '.join(differ) or 'another order'}")
    return out


def command_line(args: list[str], settings: JobSettings) -> str:
    """The shell line of ``mmpeft ARGS`` with the environment the job gives it."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in step_env(settings).items()), "mmpeft", shlex.join(args)])


def step_env(settings: JobSettings) -> dict[str, str]:
    """The variables a step's process gets on top of the sweep's environment (CPU results depend on the thread
    count, so it is written into command.txt)."""
    env = {}
    if settings.threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(settings.threads)
    if settings.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = settings.gpu
    return env


_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def terminate_steps() -> None:
    """Stop every step process this process started that still runs (the sweep is stopping)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for process in live:
        if process.poll() is None:
            process.terminate()
    for process in live:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def run_step(args: list[str], settings: JobSettings, log: Path, label: str) -> tuple[int, float]:
    """Run ``mmpeft ARGS`` in ``settings.cwd`` with its output appended to ``log``; returns (exit code, seconds)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **step_env(settings)}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.perf_counter()
    with open(log, "a", buffering=1) as out:
        out.write(f"\n== {now()} {label}: {command_line(args, settings)}\n")
        out.flush()
        process = subprocess.Popen([*settings.launcher, *args], cwd=settings.cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        with _LIVE_LOCK:
            _LIVE.add(process)
        try:
            code = process.wait()
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(process)
            if process.poll() is None:  # interrupted while waiting: the step must not outlive its run's lock
                process.terminate()
                process.wait()
        out.write(f"== {now()} {label}: exit code {code} after {time.perf_counter() - start:.1f} s\n")
    return code, time.perf_counter() - start


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def run_steps(run: RunSpec, settings: JobSettings, announce: Callable[[str], None] | None = None) -> RunOutcome:
    """Run ``run``'s remaining steps under its lock (module docstring); never raises for a failing step.

    ``announce(state)`` is called once the lock is held and the run has work to do (``state`` as ``run_state``).
    """
    start = time.perf_counter()
    run_dir = Path(settings.cwd) / run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = FileLock(run_dir / LOCK, timeout=0)
        lock.acquire()
    except Timeout:
        return RunOutcome(run.key, "held", message=f"another sweep process holds {run_dir / LOCK}")
    try:
        record = read_record(run_dir)
        state = run_state(run, record, run_dir)
        if state == "done":
            return RunOutcome(run.key, "skipped")
        if state == "changed":
            return RunOutcome(run.key, "failed", step="fit", log=str(run.run_dir / RECORD),
                              message=changed_runs([run], settings.cwd)[0])
        if announce is not None:
            announce(state)
        return _work(run, settings, run_dir, state, record or {}, start)
    finally:
        lock.release()


def _work(run: RunSpec, settings: JobSettings, run_dir: Path, state: str, old: dict[str, Any],
          start: float) -> RunOutcome:
    log = run_dir / LOG
    # the fit line as it ran when only the eval runs now (threads and GPU may differ between attempts)
    fitted = state == "eval" and old.get("fit_args") == run.fit_args and old.get("commands")
    commands = [old["commands"][0] if fitted else command_line(run.fit_args, settings)]
    if run.eval_args is not None:
        commands.append(command_line(run.eval_args, settings))
    write_text_atomic(run_dir / COMMAND_FILE, f"# written by mmpeft sweep: run {run.key} of sweep {run.sweep!r}; "
                      "its paths are relative to the directory below\n"
                      f"cd {shlex.quote(settings.cwd)}\n" + "".join(f"{line}\n" for line in commands))
    record = {"sweep": run.sweep, "config": run.config, "seed": run.seed, "case": run.case,
              "overrides": run.overrides, "status": "started", "commands": commands, "fit_args": run.fit_args,
              "eval_args": run.eval_args, "fit_s": old.get("fit_s") if state == "eval" else None, "eval_s": None,
              "resumed_from": old.get("resumed_from") if state == "eval" else None, "threads": settings.threads,
              "gpu": settings.gpu, "host": socket.gethostname(), "started": now(), "finished": None}

    def save(**changes: Any) -> None:
        record.update(changes)
        write_json_atomic(run_dir / RECORD, record)

    def failed(step: str, code: int) -> RunOutcome:
        save(status="failed", failed_step=step, exit_code=code, log=str(run.run_dir / LOG), finished=now())
        return RunOutcome(run.key, "failed", time.perf_counter() - start, step, code, str(run.run_dir / LOG))

    if state != "eval":
        args = list(run.fit_args)
        if state == "resume":
            checkpoint = str(run.run_dir / CHECKPOINT)
            args.append(f"--ckpt_path={checkpoint}")
            record["resumed_from"] = checkpoint
        save()
        code, seconds = run_step(args, settings, log, "fit" + " (resumed)" * (state == "resume"))
        if code != 0:
            return failed("fit", code)
        save(status="trained", fit_s=round(seconds, 1))
    else:
        save(status="trained")
    if run.eval_args is not None:
        code, seconds = run_step(run.eval_args, settings, log, "eval")
        if code != 0:
            return failed("eval", code)
        record["eval_s"] = round(seconds, 1)
    save(status="done", finished=now())
    return RunOutcome(run.key, "done", time.perf_counter() - start)

"""``mmpeft sweep SWEEP.yaml``: a grid of configs x seeds, each run an ordinary ``mmpeft fit`` (+ ``mmpeft eval``).

The sweep file (named cases, a grid of options, seeds, an optional eval): ``mmpeft.sweeps.spec``. Every run gets
``<out>/<config id>/seed<S>/``, an ordinary run directory plus ``command.txt``, ``sweep.log`` and ``sweep_run.json``
(``mmpeft.sweeps.runner``); the sweep directory gets ``sweep.json`` and ``sweep.yaml`` (``mmpeft.sweeps.record``).
``mmpeft report`` reads them.

Run it again to continue: finished runs are skipped, a run killed midway resumes from its last checkpoint, a
failed one is retried, an eval added to the file later runs on the trained runs (those whose checkpoint is gone
train again). Two sweep processes on one sweep share the work (each run is locked while it runs). A failing run
does not stop the others; ``mmpeft sweep`` lists the failures with their logs at the end and exits with code 1.

Executors: ``local`` (default: up to ``--jobs`` runs at a time on this machine, ``--gpus`` round-robin with
``--runs-per-gpu`` runs per GPU, the CPU threads split between the jobs), ``submitit-local`` (the same through
submitit's LocalExecutor) and ``slurm`` (one SLURM job per run, one job array; ``--slurm-*`` options).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mmpeft.apps.sweep_preflight import check_run_options
from mmpeft.sweeps.local import Slot, launch_local, minutes, say, schedule, slots
from mmpeft.sweeps.record import write_sweep_files
from mmpeft.sweeps.runner import JobSettings, changed_runs, command_line, read_record, run_state
from mmpeft.sweeps.spec import Sweep, load_sweep
from mmpeft.sweeps.submit import SUBMITIT_DIR, SlurmOptions, launch_submitit, local_executor, slurm_executor

LAUNCHER = (sys.executable, "-m", "mmpeft.apps.main")  # `mmpeft` of this interpreter, PATH or not
STATES = {"new": "to run", "fit": "to run again from the start", "resume": "to resume from its last checkpoint",
          "eval": "trained; to evaluate", "done": "done (skipped)"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="mmpeft sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="the sweep file (YAML; schema in mmpeft/sweeps/spec.py)")
    p.add_argument("--executor", choices=("local", "submitit-local", "slurm"), default="local")
    p.add_argument("--jobs", type=int, default=None, help="runs at the same time (default: one per GPU slot with "
                   "--gpus, else 1); with slurm, the job array's parallelism (default: no limit)")
    p.add_argument("--gpus", default=None, help="GPU ids for the runs, round-robin: 0,1,2,3; 'none' hides every GPU "
                   "(CPU runs). Default: each run sees the GPUs this process sees")
    p.add_argument("--runs-per-gpu", type=int, default=1, help="runs sharing one GPU at a time (small runs)")
    p.add_argument("--threads-per-job", type=int, default=None,
                   help="CPU threads per run (OMP_NUM_THREADS); default: this machine's CPUs / --jobs")
    p.add_argument("--only", nargs="+", metavar="CONFIG_ID", help="run only these config ids (all their seeds)")
    p.add_argument("--dry-run", action="store_true", help="print the runs, their state and commands; write nothing")
    p.add_argument("--status-every", type=float, default=60.0, help="seconds between status lines (0: none)")
    slurm = p.add_argument_group("slurm (--executor slurm; --slurm-time also limits submitit-local jobs)")
    slurm.add_argument("--slurm-partition")
    slurm.add_argument("--slurm-time", type=int, default=None, help="minutes per run (slurm default 60)")
    slurm.add_argument("--slurm-gpus-per-task", type=int, default=1)
    slurm.add_argument("--slurm-cpus-per-task", type=int, default=None, help="also each run's OMP_NUM_THREADS")
    slurm.add_argument("--slurm-mem-gb", type=float, default=None)
    slurm.add_argument("--slurm-account")
    slurm.add_argument("--slurm-qos")
    slurm.add_argument("--slurm-constraint")
    slurm.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="a shell line run before each job (repeat): 'source .venv/bin/activate'")
    slurm.add_argument("--slurm-additional", action="append", default=[], metavar="KEY=VALUE",
                       help="another #SBATCH option (repeat): reservation=abc")
    return p


def gpu_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    if value.strip().lower() == "none":
        return []
    gpus = [g.strip() for g in value.split(",")]
    if not all(gpus):
        raise ValueError(f"--gpus {value!r}: GPU ids separated by commas (0,1,2,3), or none")
    return gpus


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    additional = {}
    for item in args.slurm_additional:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm-additional {item!r}: give KEY=VALUE (reservation=abc)")
        additional[key] = value
    return SlurmOptions(args.slurm_partition, args.slurm_time or 60, args.slurm_gpus_per_task,
                        args.slurm_cpus_per_task, args.slurm_mem_gb, args.slurm_account, args.slurm_qos,
                        args.slurm_constraint, tuple(args.slurm_setup), additional)


def selected(sweep: Sweep, only: list[str] | None) -> list:
    if not only:
        return sweep.runs
    unknown = [c for c in only if c not in sweep.config_ids]
    if unknown:
        raise ValueError(f"--only {unknown[0]}: not a config id of sweep {sweep.name!r}; the ids: "
                         f"{', '.join(sweep.config_ids)}")
    return [run for run in sweep.runs if run.config in only]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sweep; returns ``{"done": [...], "skipped": [...], "held": [...], "failed": [...]}`` (run keys
    ``config/seedS``). Exits with code 1 after the summary when a run failed."""
    args = parser().parse_args(argv)
    cwd = str(Path.cwd())
    sweep = load_sweep(args.sweep)
    runs = selected(sweep, args.only)
    gpus = gpu_list(args.gpus)
    if args.executor == "slurm":
        if gpus is not None or args.runs_per_gpu != 1 or args.threads_per_job is not None:
            raise ValueError("--gpus, --runs-per-gpu and --threads-per-job are for the local executors; with slurm "
                             "each run gets --slurm-gpus-per-task GPUs and --slurm-cpus-per-task CPUs")
        slurm_options(args)  # checked before anything runs
        if args.jobs is not None and args.jobs < 1:
            raise ValueError(f"--jobs {args.jobs}: at least 1")
        free = None
    else:
        if args.runs_per_gpu != 1 and not gpus:
            raise ValueError("--runs-per-gpu needs --gpus (the GPU ids the runs share)")
        jobs = args.jobs or (len(gpus) * args.runs_per_gpu if gpus else 1)
        free = slots(jobs, gpus, args.runs_per_gpu, args.threads_per_job)
    changed = changed_runs(runs, cwd)
    if changed:
        raise ValueError(f"{len(changed)} run director{'ies hold' if len(changed) > 1 else 'y holds'} training "
                         "state of other fit options than the sweep file now gives (mmpeft sweep never mixes them): "
                         + "; ".join(changed) + ". Give the sweep another out directory, or delete those runs")
    states = {run.key: run_state(run, read_record(Path(cwd) / run.run_dir), Path(cwd) / run.run_dir) for run in runs}
    todo = [run for run in runs if states[run.key] != "done"]
    if not (args.executor == "slurm" and args.slurm_setup):  # setup lines give the jobs another environment
        check_run_options(todo)  # a misspelt option is one error now, not one failed run each
    if args.dry_run:
        example = JobSettings(LAUNCHER, cwd, free[0].threads, free[0].gpu) if free else JobSettings(LAUNCHER, cwd)
        only = f" ({len(runs)} selected by --only)" if args.only else ""
        print(f"sweep {sweep.name!r}: {plural(len(sweep.config_ids), 'config')} x {plural(len(sweep.seeds), 'seed')} "
              f"= {plural(len(sweep.runs), 'run')} in {sweep.out}{only}; {len(runs) - len(todo)} done, {len(todo)} to "
              "run. Nothing is written (--dry-run).")
        for run in runs:
            print(f"\n{run.key}: {STATES[states[run.key]]}")
            for step in (run.fit_args, run.eval_args):
                if step is not None:
                    print(f"  {command_line(step, example)}")
        return {"done": [], "skipped": [r.key for r in runs if r not in todo], "held": [], "failed": []}

    write_sweep_files(sweep, Path(cwd) / sweep.out)
    say(f"sweep {sweep.name!r}: {len(runs)} runs ({plural(len(sweep.config_ids), 'config')} x "
        f"{plural(len(sweep.seeds), 'seed')}"
        f"{', --only ' + ' '.join(args.only) if args.only else ''}) in {sweep.out}; "
        f"{len(runs) - len(todo)} done already (skipped), {len(todo)} to run with the {args.executor} executor")
    launch, stop, failure_log, free = executor(args, sweep, cwd, free, todo)
    start = time.perf_counter()
    main_thread = threading.current_thread() is threading.main_thread()  # only there can signals be caught
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None  # `kill PID` stops the runs too
    try:
        outcomes = schedule(todo, free, launch, stop=stop, status_every=args.status_every,
                            poll=5.0 if args.executor == "slurm" else 0.5, failure_log=failure_log)
    except (KeyboardInterrupt, SystemExit):
        say(f"interrupted: the runs in progress were stopped; `mmpeft sweep {args.sweep}` again resumes them")
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    result = {status: [o.key for o in outcomes if o.status == status] for status in ("done", "held", "failed")}
    result["skipped"] = [r.key for r in runs if r not in todo] + [o.key for o in outcomes if o.status == "skipped"]
    say(f"sweep {sweep.name!r} finished in {minutes(time.perf_counter() - start)}: {len(runs)} runs; "
        f"{len(result['done'])} done now, {len(result['skipped'])} done before, {len(result['failed'])} failed"
        + (f", {len(result['held'])} running in another sweep process" if result["held"] else ""))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"\n{len(failed)} failed run{'s' * (len(failed) > 1)} (run `mmpeft sweep {args.sweep}` again to retry "
              "them; finished runs are skipped):", file=sys.stderr)
        for outcome in failed:
            what = (f"{outcome.step} exited with code {outcome.exit_code}" if outcome.step else outcome.message)
            print(f"  {outcome.key}: {what}\n    log: {outcome.log}", file=sys.stderr)
            for line in _tail(Path(cwd) / outcome.log if outcome.log else None):
                print(f"    | {line}", file=sys.stderr)
        raise SystemExit(1)
    return result


def executor(args: argparse.Namespace, sweep: Sweep, cwd: str, free: list[Slot] | None, todo: list) -> tuple:
    """The launcher, its stop, the log of a dead job, and the slots of ``--executor``. slurm submits every run now
    (one job array), each job with ``--slurm-cpus-per-task`` threads and the GPUs SLURM gives it."""
    settings = JobSettings(LAUNCHER, cwd)
    folder = Path(cwd) / sweep.out / SUBMITIT_DIR
    if args.executor == "local":
        return (*launch_local(settings, len(free)), lambda handle: None, free)
    if args.executor == "submitit-local":
        return (*launch_submitit(local_executor(folder, args.slurm_time), settings), free)
    options = slurm_options(args)
    settings = JobSettings(LAUNCHER, cwd, threads=options.cpus_per_task)
    launched = launch_submitit(slurm_executor(folder, sweep.name, options, args.jobs), settings, todo)
    return (*launched, [Slot(None, options.cpus_per_task)] * max(1, len(todo)))


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _tail(path: Path | None, lines: int = 6) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:] if path else []
    except OSError:
        return []


if __name__ == "__main__":
    main()


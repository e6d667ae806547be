"""Running a sweep's runs as submitit jobs: ``submitit-local`` (submitit's ``LocalExecutor``: one process per job on
this machine) or ``slurm`` (``SlurmExecutor``: one SLURM job per run, submitted as one job array).

Each job calls ``mmpeft.sweeps.runner.run_steps`` on its run, the function the local executor calls, so skipping,
resuming, locking and the records are the same. submitit's own files (pickled calls, job stdout / stderr) go to
``<out>/.submitit/``; a job that dies outside the steps (killed, out of time) is reported with its submitit log.
The sweep process waits for every job and reports as ``schedule`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmpeft.sweeps.local import Handle, Launch, Slot, say
from mmpeft.sweeps.runner import JobSettings, run_steps
from mmpeft.sweeps.spec import RunSpec

SUBMITIT_DIR = ".submitit"
LOCAL_TIME_MIN = 7 * 24 * 60  # submitit's LocalExecutor kills a job after 2 minutes unless told otherwise


@dataclass(frozen=True)
class SlurmOptions:
    """The ``--slurm-*`` options of ``mmpeft sweep`` (one SLURM job per run). ``time`` in minutes; ``mem_gb``
    None: the partition's default; ``setup``: shell lines run before the job (``module load ...``, ``source
    .venv/bin/activate``); ``additional``: more ``#SBATCH`` keys (``{"reservation": "x"}``)."""

    partition: str | None = None
    time: int = 60
    gpus_per_task: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: Sequence[str] = ()
    additional: dict[str, Any] = field(default_factory=dict)


def slurm_executor(folder: Path, name: str, options: SlurmOptions, parallel: int | None) -> Any:
    """A ``submitit.SlurmExecutor`` for one run per job (``parallel``: at most this many jobs of the array at once)."""
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError as error:  # submitit looks for srun
        raise RuntimeError(f"--executor slurm: {error} (run mmpeft sweep on a machine that submits SLURM jobs: "
                           "sbatch and srun on the PATH; on this machine use --executor local)") from None
    params: dict[str, Any] = {"job_name": f"sweep-{name}", "time": options.time, "ntasks_per_node": 1,
                              "gpus_per_task": options.gpus_per_task, "setup": list(options.setup)}
    optional = {"partition": options.partition, "cpus_per_task": options.cpus_per_task,
                "mem": None if options.mem_gb is None else f"{options.mem_gb:g}GB", "account": options.account,
                "qos": options.qos, "constraint": options.constraint,
                "additional_parameters": dict(options.additional) or None, "array_parallelism": parallel}
    params.update({k: v for k, v in optional.items() if v is not None})
    executor.update_parameters(**params)
    return executor


def local_executor(folder: Path, time_min: int | None) -> Any:
    """A ``submitit.LocalExecutor``: each job a process on this machine."""
    import submitit

    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=time_min or LOCAL_TIME_MIN)
    return executor


def launch_submitit(executor: Any, settings: JobSettings, runs: list[RunSpec] | None = None,
                    ) -> tuple[Launch, Callable[[], None], Callable[[Any], str | None]]:
    """A launcher submitting each run as a job of ``executor``, its stop (cancels the jobs still running) and the
    log of a job that died. With ``runs``, all of them are submitted at once now (one SLURM job array; the slots then
    only count them) and ``launch`` returns each one's job."""
    jobs: dict[str, Any] = {}

    def submit(run: RunSpec, slot: Slot) -> Any:
        job = executor.submit(run_steps, run, replace(settings, gpu=slot.gpu, threads=slot.threads))
        jobs[run.key] = job
        return job

    if runs:
        try:
            with executor.batch():
                for run in runs:
                    submit(run, Slot(settings.gpu, settings.threads))
        except RuntimeError as error:  # submitit's FailedJobError: sbatch said no (partition, account, time, ...)
            raise RuntimeError(f"sbatch refused the sweep's job array: {str(error).strip()}; check the --slurm-* "
                               "options") from None
        say(f"submitted {len(runs)} runs as SLURM array job {_array_id(jobs)}; submitit logs in {executor.folder}")

    def launch(run: RunSpec, slot: Slot) -> Handle:
        if run.key in jobs:
            return jobs[run.key]
        job = submit(run, slot)
        say(f"submitted {run.key} as job {job.job_id} ({slot.describe() or 'inherited devices'}); log "
            f"{run.run_dir / 'sweep.log'}")
        return job

    def stop() -> None:
        for job in jobs.values():
            if not job.done():
                job.cancel(check=False)

    def failure_log(job: Any) -> str | None:
        return str(job.paths.stderr)

    return launch, stop, failure_log


def _array_id(jobs: dict[str, Any]) -> str:
    first = next(iter(jobs.values()), None)
    return "?" if first is None else str(first.job_id).split("_")[0]

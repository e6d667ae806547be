"""Sweeps: a grid of configs x seeds, each run an ordinary ``mmpeft fit`` (then ``mmpeft eval``), run on this
machine or as submitit / SLURM jobs, restartable. ``mmpeft sweep`` (``mmpeft.apps.sweep``) is the command.

- ``spec``: the sweep file: its schema, checks and expansion into runs (``load_sweep``)
- ``runner``: one run's steps, its records, skip / resume / lock (``run_steps``)
- ``local``: slots (GPU, CPU threads), the scheduler and the local executor
- ``submit``: the submitit executors (``submitit-local``, ``slurm``)
- ``record``: the sweep directory's ``sweep.json`` and ``sweep.yaml``
"""

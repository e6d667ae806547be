"""The sweep directory's own files: ``sweep.json`` (the expanded runs) and ``sweep.yaml`` (the file as written).

``sweep.json``, rewritten atomically each time the sweep starts::

    {"format": 1, "name": NAME, "description": TEXT or null, "source": the sweep file's path as given,
     "baseline": CONFIG ID or null, "seeds": [...], "cases": [names], "grid": {OPTION: [values]}, "eval": true/false,
     "configs": [{"config": ID, "case": NAME or null, "overrides": {OPTION: VALUE}}, ...],
     "runs": [{"config": ID, "case": ..., "overrides": ..., "seed": S, "run_dir": "ID/seedS"}, ...]}

``run_dir`` is relative to the sweep directory; each run's state is its own ``sweep_run.json``
(``mmpeft.sweeps.runner``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmpeft.atomic import write_json_atomic, write_text_atomic
from mmpeft.sweeps.spec import Sweep

SWEEP_FILE = "sweep.json"
SWEEP_COPY = "sweep.yaml"
FORMAT = 1


def sweep_record(sweep: Sweep) -> dict[str, Any]:
    """The content of ``sweep.json`` (module docstring)."""
    configs = {run.config: {"config": run.config, "case": run.case, "overrides": run.overrides}
               for run in sweep.runs}
    return {"format": FORMAT, "name": sweep.name, "description": sweep.description, "source": str(sweep.source),
            "baseline": sweep.baseline, "seeds": sweep.seeds, "cases": sweep.cases, "grid": sweep.grid,
            "eval": any(run.eval_args is not None for run in sweep.runs), "configs": list(configs.values()),
            "runs": [{"config": run.config, "case": run.case, "overrides": run.overrides, "seed": run.seed,
                      "run_dir": f"{run.config}/seed{run.seed}"} for run in sweep.runs]}


def write_sweep_files(sweep: Sweep, out: Path) -> None:
    """``sweep.yaml`` then ``sweep.json`` in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / SWEEP_COPY, sweep.text)
    write_json_atomic(out / SWEEP_FILE, json.loads(json.dumps(sweep_record(sweep), default=str)))

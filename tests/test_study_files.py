"""The committed study sweep files (docs/studies/*.yaml) load: every case, config file and baseline they name exists,
so a study's documented command runs as written."""

from pathlib import Path

import pytest
import yaml

from mmpeft.sweeps.spec import load_sweep

# sweep files have a name and an output directory; the folder also holds eval configs (eval_cpu.yaml)
STUDIES = [path for path in sorted((Path(__file__).resolve().parents[1] / "docs" / "studies").glob("*.yaml"))
           if {"name", "out"} <= set(yaml.safe_load(path.read_text()) or {})]


def test_there_are_study_files():
    assert len(STUDIES) >= 4


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_file_loads(path):
    sweep = load_sweep(path)
    assert sweep.runs, f"{path.name}: no runs"
    assert len({run.seed for run in sweep.runs}) >= 3, f"{path.name}: a study needs at least 3 seeds"
    if sweep.baseline is not None:
        assert sweep.baseline in {run.config for run in sweep.runs}

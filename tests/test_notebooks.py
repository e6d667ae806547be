"""The notebooks run top to bottom on tiny settings (outputs are not committed)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_forgetting.ipynb"])
def test_notebook_executes(name, tmp_path, monkeypatch):
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit without outputs"
    monkeypatch.setenv("MMPEFT_DEMO_REPORT", str(tmp_path / "absent.json"))  # the tiny path, always
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert os.environ.get("HF_HUB_OFFLINE") == "1"

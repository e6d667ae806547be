"""The notebooks are committed executed, and still run on tiny towers showing what their committed outputs show.

Fast checks read the committed files: every code cell executed, in order, without errors, and no machine-specific
paths in the outputs. The slow check executes each notebook (nbclient, offline, tiny towers in the test's
``$MMPEFT_CACHE``, runs in a temporary directory) and checks its key outputs, taken from the kernel: notebook 01's
greedy answers name the picture's colour, notebook 02's forgetting table has a row per run with finite figures.

After changing a notebook, or what it runs, re-execute them and commit the outputs::

    python tests/test_notebooks.py              # all notebooks, in place (about a minute on 2 cores)
    python tests/test_notebooks.py 01_quickstart.ipynb
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parents[1]
NOTEBOOKS = ROOT / "notebooks"
COLOURS = ("red", "green", "blue", "yellow")  # mmpeft.apps.tiny.TINY_COLOURS, the answers the tiny data teaches
KEY_OUTPUTS = {  # what the last (test-only) cell prints as JSON from the executed notebook's kernel
    "01_quickstart.ipynb": "answers",
    "02_forgetting.ipynb": "table",
}
KERNEL_ENV = {  # the kernel inherits the environment
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    "TQDM_DISABLE": "1",  # progress bars carry rates and timings: they would churn the committed outputs
    "MMPEFT_DEMO_REPORT": "absent.json",  # notebook 02 builds its tiny runs, never reads a real demo report
}
PROGRESS_BAR = re.compile(r"^.*(\d+%\|.*\||\d+\w* \[\d+:\d+).*\]\s*$")  # tqdm: "8sample [00:01, 5.4sample/s]"
MACHINE_PATHS = re.compile(r"(/tmp/|/home/|/Users/|/root/|site-packages|[A-Z]:\\)")


def execute(name: str, workdir: Path) -> tuple[nbformat.NotebookNode, object]:
    """Run ``notebooks/<name>`` top to bottom in ``workdir`` (the caller sets ``KERNEL_ENV`` and
    ``$MMPEFT_CACHE``); returns the executed notebook (without the probe cell) and its key output."""
    from mmpeft.apps.tiny import save_tiny_towers

    save_tiny_towers()  # as `mmpeft tiny-towers` would: the notebooks' own call then writes (and prints) nothing
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    probe = nbformat.v4.new_code_cell(f"import json; print(json.dumps({KEY_OUTPUTS[name]}))")
    notebook.cells.append(probe)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}},
                   record_timing=False).execute()
    notebook.cells.pop()
    drop_progress_bars(notebook)
    errors = [f"{o.ename}: {o.evalue}" for c in code_cells(notebook) for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name}: {errors}"
    return notebook, json.loads("".join(o.text for o in probe.outputs if o.output_type == "stream"))


def drop_progress_bars(notebook: nbformat.NotebookNode) -> None:
    """Remove progress-bar lines from stderr outputs (the eval loop's bars are on whatever TQDM_DISABLE says): their
    rates and timings would change the committed outputs at every execution. Other stderr text stays."""
    for cell in code_cells(notebook):
        kept = []
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                lines = [x for x in re.split(r"[\r\n]", output.text) if x.strip() and not PROGRESS_BAR.match(x)]
                if not lines:
                    continue
                output.text = "\n".join(lines) + "\n"
            kept.append(output)
        cell.outputs = kept


def code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in notebook.cells if c.cell_type == "code"]


def text_of(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def tagged(notebook: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    (cell,) = [c for c in code_cells(notebook) if tag in c.metadata.get("tags", [])]
    return cell


def check_answers(answers: dict[str, str]) -> None:
    """Notebook 01: every colour gets a non-empty answer from the trained vocabulary, and most are right (chance
    is 1 in 4; an untrained or EOS-only model answers nothing, or random tokens)."""
    assert list(answers) == list(COLOURS)
    assert all(a.strip() in COLOURS for a in answers.values()), answers
    assert sum(a.strip() == c for c, a in answers.items()) >= 3, answers


def check_table(table: list[dict]) -> None:
    """Notebook 02: one perplexity row per tiny run, finite figures, one base model for both runs, and the plain
    run learned the colours (VQA above zero)."""
    assert [t["run"] for t in table] == ["plain", "kl"] and {t["probe"] for t in table} == {"prose"}
    assert all(math.isfinite(t[k]) and t[k] > 0 for t in table for k in ("base_ppl", "adapted_ppl")), table
    assert table[0]["base_ppl"] == pytest.approx(table[1]["base_ppl"])
    assert table[0]["vqa"] > 0, table


@pytest.mark.parametrize("name", sorted(KEY_OUTPUTS))
def test_committed_notebook_is_executed(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = code_cells(notebook)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), \
        f"{name}: not executed top to bottom; re-execute it: python tests/test_notebooks.py {name}"
    outputs = [o for c in cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert not MACHINE_PATHS.search(text) and str(ROOT) not in text, f"{name}: machine-specific paths in outputs"
    if name == "01_quickstart.ipynb":
        shown = dict(re.findall(r"^\s*(\w+) picture -> '([^']*)'", text_of(tagged(notebook, "answers")), re.M))
        check_answers({c: shown.get(c, "") for c in COLOURS})
    else:
        rows = text_of(tagged(notebook, "table")).splitlines()[1:]
        assert [r.split()[0] for r in rows] == ["plain", "kl"], rows
        assert any(c.outputs and "image/png" in c.outputs[0].get("data", {}) for c in cells), "no plot committed"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KEY_OUTPUTS))
def test_notebook_runs_and_shows_its_key_outputs(name, tmp_path, monkeypatch):
    for key, value in KERNEL_ENV.items():
        monkeypatch.setenv(key, value)
    executed, key_output = execute(name, tmp_path)
    if name == "01_quickstart.ipynb":
        check_answers(key_output)
        committed = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert text_of(tagged(executed, "answers")) == text_of(tagged(committed, "answers")), \
            f"the committed answers are stale; re-execute: python tests/test_notebooks.py {name}"
    else:
        check_table(key_output)


def main(names: list[str]) -> None:
    """Re-execute notebooks in place, in a scratch directory with a scratch tiny-tower cache."""
    with tempfile.TemporaryDirectory() as scratch:
        os.environ.update(KERNEL_ENV, MMPEFT_CACHE=str(Path(scratch) / "cache"))
        for name in names or sorted(KEY_OUTPUTS):
            notebook, key_output = execute(name, Path(scratch))
            nbformat.write(notebook, NOTEBOOKS / name)
            print(f"{name}: executed; {KEY_OUTPUTS[name]} = {key_output}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The ``mmpeft`` command (``mmpeft.apps.main``): every verb listed with one line, each verb's own help, a clear
refusal of a command line that names no verb, and the library/app boundary it sits on."""

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from mmpeft.apps.main import cli_main

VERBS = ["fit", "validate", "test", "eval", "chat", "generate", "report", "sweep", "demo", "export", "fisher",
         "tiny-towers", "quickstart"]
LIGHTNING_VERBS = ["fit", "validate", "test"]


def listed_verbs(help_text: str) -> list[list[str]]:
    """The rows of the ``verbs:`` section of ``mmpeft --help``: ``[verb, summary]`` each."""
    section = help_text.split("\nverbs:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split(None, 1) for line in section.splitlines()]


def test_help_lists_every_verb_with_one_line(capsys):
    cli_main(["--help"])
    rows = listed_verbs(capsys.readouterr().out)
    assert [row[0] for row in rows] == VERBS  # predict is not offered: VLMModule has no predict step
    assert all(len(row) == 2 and len(row[1]) > 20 for row in rows), rows


@pytest.mark.parametrize(("args", "says"), [
    ([], "mmpeft: error: name a verb"),
    (["frobnicate"], "unknown verb 'frobnicate'; the verbs: " + ", ".join(VERBS)),
    (["predict"], "'predict' is not a verb: generate with mmpeft generate --model DIR --input prompts.jsonl"),
    (["--config", "x.yaml", "fit"], "'--config' before the verb: options go after it"),
])
def test_a_command_line_without_a_verb_exits_2_with_what_to_do(args, says, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(args)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert says in captured.err and captured.out == ""
    if not args:  # `mmpeft` alone: the whole list, one line per verb
        assert [row[0] for row in listed_verbs(captured.err)] == VERBS


@pytest.mark.parametrize("verb", [v for v in VERBS if v not in LIGHTNING_VERBS])
def test_each_verb_shows_its_own_options(verb, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main([verb, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mmpeft {verb} ") and "\noptions:\n" in out


@pytest.mark.parametrize("verb", LIGHTNING_VERBS)
def test_lightning_verbs_show_lightningclis_help_and_no_warning(verb, capsys, monkeypatch, recwarn):
    monkeypatch.setattr(sys, "argv", ["mmpeft", verb, "--help"])  # as the console script runs it
    with pytest.raises(SystemExit) as stop:
        cli_main()
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for option in ("--config", "--print_config", "--trainer.max_steps", "--model.vlm", "--data.train_shards",
                   "--run_dir"):
        assert option in out, option
    # LightningCLI warns when it is given args while sys.argv has some too, which the command always does
    assert not [w for w in recwarn if "args parameter" in str(w.message)]


def test_console_script_is_the_app_and_its_help_loads_no_torch():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {"mmpeft": "mmpeft.apps.main:main"}
    code = ("import sys; from mmpeft.apps.main import main; sys.argv = ['mmpeft', '--help']; main(); "
            "print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "  tiny-towers  " in out and out.rstrip().endswith("[]")

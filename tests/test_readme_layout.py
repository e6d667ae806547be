"""The README's layout section names every module of the package, and nothing that is gone."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout\n"):]
    return section[section.index("```\n") + 4: section.index("\n```", section.index("```\n") + 4)]


def test_layout_names_every_module():
    block = layout_block()
    named = set()
    for line in block.splitlines():
        directory = re.match(r"\s*(\w+/)\s", line)  # "eval/tasks/   vqa.py, captions.py": files of a directory
        for path in re.findall(r"[\w/]+\.py", line):
            named.add(path)
            if directory and "/" not in path:
                named.add(directory.group(1) + path)
    prefix = "eval/tasks/"
    named |= {prefix + p for p in re.findall(r"(\w+\.py)", block.split(prefix, 1)[1].splitlines()[0])}
    modules = {str(p.relative_to(ROOT / "mmpeft")) for p in (ROOT / "mmpeft").rglob("*.py") if p.name != "__init__.py"}
    assert modules - named == set(), f"modules the README's layout does not name: {sorted(modules - named)}"
    existing = {p.name for d in ("mmpeft", "tests") for p in (ROOT / d).rglob("*.py")}  # bare names ("vqa.py") too
    gone = {p for p in named if not (ROOT / p).exists() and not (ROOT / "mmpeft" / p).exists()
            and ("/" in p or p not in existing)}
    assert gone == set(), f"the README's layout names files that do not exist: {sorted(gone)}"

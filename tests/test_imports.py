"""The import graph of the package: layers point one way.

Read from the source (``ast``), every import counted, those inside functions too (a lazy import is still a
dependency), except those under ``if TYPE_CHECKING:`` (annotations only, never run): the library (everything but
``mmpeft.apps``) never imports the apps, no mmpeft modules import each other in a cycle, and the training callbacks
never reach the ``mmpeft eval`` command's module.
"""

import ast
from pathlib import Path

import mmpeft

ROOT = Path(mmpeft.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imported(name: str) -> set[str]:
    """The mmpeft modules ``name`` imports (``from pkg import sub`` counts ``pkg.sub`` when it is a module)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(
        block.test) for stmt in block.body for n in ast.walk(stmt)}  # annotations only: never run
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                   else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # import a.b.c of a package attribute: the module that holds it
                target = target.rpartition(".")[0]
            if target.startswith("mmpeft") and target != name:
                out.add(target)
    return out


GRAPH = {name: imported(name) for name in MODULES}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def is_app(name: str) -> bool:
    return name == "mmpeft.apps" or name.startswith("mmpeft.apps.")


def test_the_graph_is_read():
    assert "mmpeft.eval.loop" in GRAPH["mmpeft.callbacks.probes"], "the reader finds plain imports"
    assert "mmpeft.eval.lm_eval_bridge" in GRAPH["mmpeft.eval.tasks.lm_harness"], "and imports inside functions"
    assert "mmpeft.guards.distill" in GRAPH["mmpeft.guards"], "and a package's imports of its modules"


def test_the_library_never_imports_the_apps():
    offenders = {name: sorted(filter(is_app, deps)) for name, deps in GRAPH.items()
                 if not is_app(name) and any(map(is_app, deps))}
    assert offenders == {}, "library modules that import mmpeft.apps (apps sit above the library)"


def test_no_import_cycles():
    cycles = sorted({tuple(sorted((name, other))) for name in GRAPH for other in GRAPH[name]
                     if name in reachable(other)})
    assert cycles == [], "modules that reach each other through imports (a cycle)"


def test_callbacks_do_not_import_the_eval_command():
    for name in GRAPH:
        if name.startswith("mmpeft.callbacks"):
            assert "mmpeft.eval.run" not in reachable(name) | {name}, f"{name} reaches the eval CLI (mmpeft.eval.run)"


# The layers of docs/architecture.md, lowest first: a module imports only from its own layer or those below.
LAYERS = [
    ("foundation", ["mmpeft", "mmpeft.atomic", "mmpeft.atomic_directory", "mmpeft.zoo", "mmpeft.weight_files",
                    "mmpeft.init_args", "mmpeft.config_files", "mmpeft.towers.paths", "mmpeft.towers.dtypes"]),
    ("model", ["mmpeft.types", "mmpeft.towers", "mmpeft.projectors", "mmpeft.adapters", "mmpeft.packing",
               "mmpeft.batch_plan",
               "mmpeft.llm_layers", "mmpeft.trainability", "mmpeft.fingerprint", "mmpeft.allowed_classes",
               "mmpeft.weight_sources", "mmpeft.vlm", "mmpeft.trainable_state"]),
    ("data", ["mmpeft.data"]),
    ("guards", ["mmpeft.guards"]),
    ("persistence", ["mmpeft.checkpoint", "mmpeft.model_config", "mmpeft.base_paths", "mmpeft.stage_init",
                     "mmpeft.hf_llava_export", "mmpeft.hf_vision_export", "mmpeft.tied_weights"]),
    ("evaluation", ["mmpeft.eval", "mmpeft.inference"]),
    ("training", ["mmpeft.module", "mmpeft.training_mode", "mmpeft.cli", "mmpeft.option_errors",
                  "mmpeft.optimization", "mmpeft.data.datamodule", "mmpeft.callbacks"]),
    ("sweeps", ["mmpeft.sweeps"]),
    ("apps", ["mmpeft.apps"]),
]


def layer_of(name: str) -> int:
    """The index in LAYERS of the longest prefix that holds ``name`` (``mmpeft.data.datamodule`` is training)."""
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{name} is in no layer: add it to LAYERS here and to docs/architecture.md"
    return best[0]


def test_every_import_points_down_the_layers():
    upward = sorted(f"{name} ({LAYERS[layer_of(name)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})"
                    for name, deps in GRAPH.items() for dep in deps if layer_of(dep) > layer_of(name))
    assert upward == []


def test_lightning_only_in_the_training_layer_and_above():
    training = [i for i, (name, _) in enumerate(LAYERS) if name == "training"][0]
    offenders = []
    for name, path in MODULES.items():
        if layer_of(name) < training and any(
                isinstance(n, ast.Import | ast.ImportFrom) and "lightning" in ast.unparse(n)
                for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))):
            offenders.append(name)
    assert offenders == []

"""Every file mmpeft writes goes through mmpeft.atomic or mmpeft.atomic_directory: an AST scan of mmpeft/ and
data_prep/ for file writers (open for writing, write_text / write_bytes, json.dump, torch.save, safetensors'
save_file, save_pretrained, savefig, tar writers, shutil copies and moves).

A writer passes when it writes, lexically inside ``with atomic_path(...) as tmp`` or ``with atomic_directory(...) as
tmp``, to a path built from ``tmp``; otherwise its function must be in ALLOWED with the reason it is safe."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPLEMENTATION = {"mmpeft/atomic.py", "mmpeft/atomic_directory.py"}
ATOMIC_CONTEXTS = {"atomic_path", "atomic_directory"}

# (file, function): why its writes need no atomic replace of their own
INSIDE_CALLERS_DIRECTORY = "writes into the directory its callers give it, an atomic_directory temp directory"
ALLOWED = {
    ("mmpeft/apps/demo.py", "_run_job"): "the job's console log, opened for append and line-buffered: a crash cuts "
                                         "at most its last line, and nothing reads it as data",
    ("mmpeft/sweeps/runner.py", "run_step"): "a sweep run's console log (sweep.log), opened for append and "
                                             "line-buffered: a crash cuts at most its last line; state is in "
                                             "sweep_run.json, written atomically",
    ("mmpeft/eval/captioning.py", "java_ptb_tokenize"): "java's input file in a TemporaryDirectory deleted after "
                                                        "the call: scratch, not an output",
    ("mmpeft/zoo.py", "_build_smollm2"): INSIDE_CALLERS_DIRECTORY + " (cached_entry)",
    ("mmpeft/zoo.py", "_build_efficientnet_lite0"): INSIDE_CALLERS_DIRECTORY + " (cached_entry)",
    ("mmpeft/checkpoint.py", "write_model_files"): INSIDE_CALLERS_DIRECTORY + " (save_trainable, "
                                                   "SafetensorsCheckpointIO.save_checkpoint)",
}
WRITE_METHODS = {"write_text", "write_bytes", "savefig", "save_pretrained", "to_csv", "to_json", "to_parquet"}
SHUTIL_WRITERS = {"move", "copy", "copyfile", "copy2", "copytree"}


def _mode(call: ast.Call, position: int) -> object:
    """The ``mode`` argument (keyword, or positional at ``position``): ``"?"`` when not a literal."""
    for keyword in call.keywords:
        if keyword.arg == "mode":
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "?"
    if len(call.args) > position:
        return call.args[position].value if isinstance(call.args[position], ast.Constant) else "?"
    return "r"


def _open_kind(call: ast.Call, base: str | None) -> str | None:
    """``open(path, mode)`` and the modules' ``open``s take the mode second; ``os.open`` takes flags; an object's
    ``.open`` (``Path.open``) takes it first (PIL's ``Image.open`` only reads: its first argument is no literal)."""
    if base == "os":
        flags = {n.attr for n in ast.walk(call) if isinstance(n, ast.Attribute)}
        return "os.open" if flags & {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"} else None
    if base in (None, "io", "gzip", "bz2", "lzma", "tarfile", "codecs", "fsspec"):
        mode = _mode(call, 1)
    else:
        mode = _mode(call, 0)
        if mode == "?" and not any(k.arg == "mode" for k in call.keywords):
            return None
    return f"open({mode!r})" if not isinstance(mode, str) or set(mode) & set("wax+?") else None


def _writer_kind(call: ast.Call) -> str | None:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    base = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
    if name == "open":
        return _open_kind(call, base)
    if name in WRITE_METHODS:
        return name
    if name in ("save_file", "TarWriter", "ShardWriter") or (name == "save" and base in ("torch", "np", "numpy")):
        return name
    if name == "dump" and base in ("json", "yaml", "pickle", "torch"):
        return f"{base}.dump"
    if name in SHUTIL_WRITERS and base == "shutil":
        return f"shutil.{name}"
    return None


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class _Scan(ast.NodeVisitor):
    """Collects ``(file, function, kind, line)`` of writers not writing into an atomic context's temp path."""

    def __init__(self, file: str):
        self.file, self.scope, self.temps, self.found = file, [], [], []

    def visit_FunctionDef(self, node):
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_With(self, node):
        bound: set[str] = set()
        self.temps.append(bound)  # a later item may write to what an earlier one bound (atomic_path, then a writer)
        for item in node.items:
            call = item.context_expr
            self.visit(call)
            func = call.func if isinstance(call, ast.Call) else None
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ATOMIC_CONTEXTS and isinstance(item.optional_vars, ast.Name):
                bound.add(item.optional_vars.id)
        for statement in node.body:
            self.visit(statement)
        self.temps.pop()

    def visit_Call(self, node):
        kind = _writer_kind(node)
        if kind is not None:
            targets = set().union(*(_names(a) for a in [*node.args, *(k.value for k in node.keywords)]))
            if isinstance(node.func, ast.Attribute):
                targets |= _names(node.func.value)
            if not targets & set().union(set(), *self.temps):
                self.found.append((self.file, ".".join(self.scope) or "<module>", kind, node.lineno))
        self.generic_visit(node)


def unguarded_writers() -> list[tuple[str, str, str, int]]:
    found = []
    for path in sorted([*(ROOT / "mmpeft").rglob("*.py"), *(ROOT / "data_prep").rglob("*.py")]):
        file = path.relative_to(ROOT).as_posix()
        if file not in IMPLEMENTATION:
            scan = _Scan(file)
            scan.visit(ast.parse(path.read_text(), filename=file))
            found += scan.found
    return found


def test_every_file_writer_goes_through_the_atomic_modules():
    unexplained = [f"{file}:{line} {function}: {kind}" for file, function, kind, line in unguarded_writers()
                   if (file, function) not in ALLOWED]
    assert not unexplained, ("write through mmpeft.atomic (write_*_atomic, atomic_path) or inside "
                             "mmpeft.atomic_directory, or add the function to ALLOWED with the reason:\n"
                             + "\n".join(unexplained))


def test_every_allowed_place_still_writes():
    writing = {(file, function) for file, function, _, _ in unguarded_writers()}
    stale = sorted(set(ALLOWED) - writing)
    assert not stale, f"remove these from ALLOWED (they write nothing unguarded any more): {stale}"


def test_the_scan_sees_what_it_must():
    """The scan itself: a plain write is found; one into an atomic context's temp path is not."""
    source = '''
def plain(path, data):
    with open(path, "w") as f:
        f.write(data)
    path.write_text(data)
    json.dump(data, open(path, mode="a"))
    with path.open("wb") as f, tarfile.open(path, "w") as t:
        os.open(path, os.O_WRONLY | os.O_CREAT)

def guarded(path, tensors):
    with atomic_path(path) as tmp:
        save_file(tensors, tmp)
    with atomic_directory(path) as tmp:
        (tmp / "config.json").write_text("{}")
        model.save_pretrained(tmp / "llm")
    with atomic.atomic_path(path) as tmp, TarWriter(str(tmp)) as writer:
        writer.write({})
    save_file(tensors, path)

def reading(path):
    with open(path) as f, open(path, "rb") as g, path.open() as h, Image.open(io.BytesIO(path)) as i:
        return f.read(), g.read(), h.read(), os.open(path, os.O_RDONLY), i
'''
    scan = _Scan("example.py")
    scan.visit(ast.parse(source))
    assert [(function, kind) for _, function, kind, _ in scan.found] == [
        ("plain", "open('w')"), ("plain", "write_text"), ("plain", "json.dump"), ("plain", "open('a')"),
        ("plain", "open('wb')"), ("plain", "open('w')"), ("plain", "os.open"), ("guarded", "save_file")]

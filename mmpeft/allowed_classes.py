"""The classes a saved model directory may name: mmpeft's own towers and projectors, plus what the user allows.

A model directory is data, not code. ``mmpeft_config.json`` names its towers and projector by ``class_path``;
loading looks that string up in an allow-list and never imports a module or calls anything because a file says so.

Allowed without asking, per key of the saved ``vlm`` config: mmpeft's own classes of that role, i.e. every
subclass of the role's base class defined in a module of the ``mmpeft`` package (``builtin_classes``). A projector
added to ``mmpeft/projectors.py`` is therefore loadable with no further registration; a subclass defined anywhere
else (a user's module, a test) is not, until the user names it. Today:

- ``vision``: ``OpenClipVisionTower``, ``TimmVisionTower`` (subclasses of ``VisionTower``)
- ``llm``: ``LLMTower``
- ``projector``: ``LinearProjector``, ``MLPProjector``, ``PooledMLPProjector``, ``PerceiverResampler`` (subclasses of
  ``Projector``)
- ``vision_adapter`` / ``llm_adapter`` are not classes: ``AdapterSpec.from_dict`` accepts only its own methods
  (``frozen``, ``full``, ``lora``, ``dora``, ``ia3``, ``loha``, ``lokr``) and fields.

Saved ``class_path`` strings of classes that have since moved keep working (``FORMER_PATHS``: directories written
when ``TimmVisionTower`` lived in ``mmpeft.towers.vision``).

Any other class must be named by the user, in Python (``load_pretrained(dir, allow_classes=[MyProjector])``) or on
the command line (``mmpeft eval --allow-class my_pkg.MyProjector``, which imports it because the user asked).
``trust_remote_code`` saved in a file is refused unless the caller passes it too (see ``refuse_remote_code``);
init_args that would make a library fetch or unpickle weights from elsewhere likewise (``mmpeft.weight_sources``).
``check_init_args`` checks the saved arguments' names and JSON types against the class's signature, so a bad value
is an error naming the key, not a TypeError from inside the tower.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union

from mmpeft.projectors import Projector
from mmpeft.towers.llm import LLMTower
from mmpeft.towers.timm_tower import TimmVisionTower
from mmpeft.towers.vision import VisionTower

ROLE_BASES: dict[str, type] = {"vision": VisionTower, "llm": LLMTower, "projector": Projector}
# class_path strings written before a class moved -> the class (only for the role it has in builtin_classes)
FORMER_PATHS: dict[str, type] = {"mmpeft.towers.vision.TimmVisionTower": TimmVisionTower}


def builtin_classes(role: str) -> tuple[type, ...]:
    """The classes allowed for ``role`` without asking: the role's base class (when it is concrete, as
    ``LLMTower``) and its subclasses at any depth, if defined in a module of the ``mmpeft`` package. A class defined
    elsewhere (a user's module, a test) is never among them. Imports nothing."""
    base = ROLE_BASES.get(role)
    if base is None:
        return ()
    found, stack = [], [base]
    while stack:
        cls = stack.pop()
        if cls.__module__.startswith("mmpeft.") and not inspect.isabstract(cls) and cls not in (VisionTower, Projector):
            found.append(cls)
        stack.extend(cls.__subclasses__())
    return tuple(sorted(found, key=class_path))


def class_path(cls: type) -> str:
    """``module.QualName``: how ``VisionLanguageModel.config()`` names a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _names(cls: type) -> set[str]:
    """The class's own path plus the already-imported packages above it that re-export it (``mmpeft.towers.X``,
    as YAML configs write it). Looks only at ``sys.modules``: nothing is imported."""
    names = {class_path(cls)}
    parts = cls.__module__.split(".")
    for i in range(1, len(parts)):
        package = sys.modules.get(".".join(parts[:i]))
        if package is not None and getattr(package, cls.__qualname__, None) is cls:
            names.add(f"{'.'.join(parts[:i])}.{cls.__qualname__}")
    return names


def resolve_class(spec: Any, key: str, allow_classes: Iterable[type], source: str) -> type:
    """The class a saved ``{"class_path", "init_args"}`` entry names, if it is allowed for ``key``.

    Args:
        spec: the saved entry (e.g. the file's ``vlm.projector``).
        key: which entry (``vision``, ``llm``, ``projector``); built-in classes are allowed only for their role.
        allow_classes: classes the caller allows for any key.
        source: the file, for messages; ``key`` is reported as ``<prefix>.<key>.class_path`` by the caller's prefix.

    Raises:
        ValueError naming the file, the key and how to allow the class. Nothing is imported or called.
    """
    where = f"{source}: key {key}"
    if not isinstance(spec, Mapping) or not isinstance(spec.get("class_path"), str):
        raise ValueError(f"{where} must be an object with a string class_path and an init_args object, got "
                         f"{spec!r}")
    if set(spec) - {"class_path", "init_args"}:
        raise ValueError(f"{where} has unknown fields {sorted(set(spec) - {'class_path', 'init_args'})}; only "
                         "class_path and init_args are read")
    if not isinstance(spec.get("init_args", {}), Mapping):
        raise ValueError(f"{where}.init_args must be an object, got {spec.get('init_args')!r}")
    wanted = spec["class_path"]
    role = key.rsplit(".", 1)[-1]
    candidates = [*builtin_classes(role), *allow_classes]
    for cls in candidates:
        if wanted in _names(cls) or FORMER_PATHS.get(wanted) is cls:
            return cls
    allowed = sorted(class_path(c) for c in candidates)
    raise ValueError(
        f"{where}.class_path names {wanted!r}, which is not an allowed class here (allowed: {allowed}). Loading a "
        "model directory never imports or runs a class because the file names it. If you trust this class, allow it "
        f"explicitly: load_pretrained(directory, allow_classes=[{wanted.rpartition('.')[2]}]) in Python, or "
        f"--allow-class {wanted} on the mmpeft command line."
    )


def check_init_args(cls: type, init_args: Mapping[str, Any], key: str, source: str) -> None:
    """ValueError naming the file and key unless ``cls(**init_args)`` (plus positional widths) would bind and every
    value has the JSON type its annotation asks for (``int``, ``str | None``, ``list[int | None]``, ``Literal``...;
    annotations this check does not know are left to the class)."""
    signature = inspect.signature(cls)
    try:
        signature.bind_partial(**init_args)
    except TypeError as e:
        params = [p for p in signature.parameters if p not in ("self", "vision_dim", "llm_dim")]
        raise ValueError(f"{source}: key {key}.init_args does not fit {class_path(cls)} ({e}); its arguments are "
                         f"{params}") from None
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve at run time: leave the types to the class
        hints = {}
    for name, value in init_args.items():
        if name in hints and not _fits(value, hints[name]):
            raise ValueError(f"{source}: key {key}.init_args.{name} = {value!r} has the wrong type for "
                             f"{class_path(cls)}: expected {_describe(hints[name])}. Fix the value in the file.")


def _fits(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a type annotation; forms not handled here count as fitting."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if origin is Union or origin is types.UnionType:
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (list, tuple) or origin in (list, tuple):
        item = args[0] if args and (origin is list or (len(args) == 2 and args[1] is Ellipsis)) else Any
        return isinstance(value, list | tuple) and all(_fits(v, item) for v in value)
    if annotation is dict or origin is dict:
        return isinstance(value, Mapping) and all(_fits(v, args[1] if args else Any) for v in value.values())
    return True


def _describe(annotation: Any) -> str:
    text = repr(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", repr(annotation))
    return text.replace("typing.", "").replace("NoneType", "None")


def refuse_remote_code(config: Any, source: str, trusted: bool, key: str = "") -> None:
    """Refuse a truthy ``trust_remote_code`` anywhere in a saved config unless the caller passed ``trusted``;
    likewise an ``attn_implementation`` naming a hub kernel (``org/repo``: transformers downloads and runs it).

    A file must never be able to turn on code execution by itself: the user opts in for each load.
    """
    if isinstance(config, Mapping):
        for name, value in config.items():
            path = f"{key}.{name}" if key else str(name)
            if name == "trust_remote_code" and value and not trusted:
                raise ValueError(
                    f"{source}: key {path} is true. mmpeft never runs a model's remote code because a file asks for "
                    "it. If you trust the model it names, opt in for this load: load_pretrained(directory, "
                    "trust_remote_code=...) set to True in Python, or --trust-remote-code on the mmpeft command line."
                )
            if name == "attn_implementation" and isinstance(value, str) and "/" in value and not trusted:
                raise ValueError(
                    f"{source}: key {path} = {value!r} names a hub kernel, which is code downloaded and run. Use a "
                    "built-in implementation (sdpa, eager, flash_attention_2), or opt in for this load with "
                    "--trust-remote-code (load_pretrained's trust_remote_code argument)."
                )
            refuse_remote_code(value, source, trusted, path)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            refuse_remote_code(value, source, trusted, f"{key}[{i}]")

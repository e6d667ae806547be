"""Save, load and export a VisionLanguageModel: trainable state only, safetensors, atomic directory writes.

A checkpoint directory (``save_trainable``)::

    mmpeft_config.json          what the model is and how it was trained (below); JSON, never code
    trainable.safetensors       projector, soft prompt, fully-trained tower weights (VLM parameter names)
                                (what is trainable state is defined once, in ``mmpeft.trainable_state``)
    llm_adapter/                peft layout: adapter_config.json + adapter_model.safetensors
                                (PeftModel.from_pretrained(base_llm, ".../llm_adapter") reads it)
    vision_adapter/             the same for the vision tower's adapter

An export directory (``export``) holds merged weights and needs no peft::

    mmpeft_config.json          adapters "frozen"; paths relative to this directory
    llm/                        a standard HF model + tokenizer directory (LoRA/DoRA/... merged in)
    vision_tower.safetensors    the (pruned) vision encoder with its adapter merged in
    vision_config/              open_clip_config.json, for ``local-dir:`` open_clip towers
    trainable.safetensors       projector (+ soft prompt, which cannot be merged into the LLM)

``mmpeft_config.json``::

    format             "checkpoint" or "export"
    vlm                ``VisionLanguageModel.config()``: vision / llm / projector as class_path + init_args, the
                       adapter specs, soft prompt length, switches. Local paths are absolute (checkpoints) or
                       relative to this directory (exports), never to the current directory.
    input_format       how prompts are rendered (``mmpeft.data.input_format``): chat template or USER/ASSISTANT
                       fallback, the template string, system prompt, image placeholder token, num_image_tokens and
                       placement, max_length, overlong policy. Eval, generation, probes and export all use it.
    base_fingerprints  vision / llm: config + sampled weight hash of each frozen base (``mmpeft.fingerprint``);
                       loading refuses a different base unless ``allow_base_mismatch=True``.
    extra              free metadata (training checkpoints: global_step, epoch)

Every top-level key is checked when the file is read (``mmpeft.model_config.read_model_config``), before anything is
built. A base whose saved local path is gone is reported with the fix (``mmpeft.base_paths``): ``llm_path`` /
``vision_path`` point a load at the bases' new location, and the fingerprints still check it is the same base.

Loading is data-only: classes come from the allow-list of ``mmpeft.allowed_classes`` (plus ``allow_classes``),
adapter specs through ``AdapterSpec.from_dict``, a saved ``trust_remote_code`` is refused unless the caller passes
``trust_remote_code`` itself, tower arguments that would make a library fetch or unpickle weights from elsewhere are
refused unless the caller allows them (``allow_init_args``, ``mmpeft.weight_sources``), and nothing here unpickles:
every tensor file is safetensors (a damaged one is reported by name, ``mmpeft.weight_files``), every other file JSON.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mmpeft.adapters.inject import adapter_state_dict, load_adapter_state_dict, merged_base_state_dict
from mmpeft.atomic_directory import atomic_directory, recover_directory
from mmpeft.base_paths import check_base_paths, relocate_bases
from mmpeft.data.input_format import InputFormat, default_input_format
from mmpeft.fingerprint import base_fingerprint, check_bases
from mmpeft.model_config import CONFIG_FILE, read_model_config
from mmpeft.tied_weights import merged_llm_state
from mmpeft.trainable_state import trainable_state
from mmpeft.vlm import VisionLanguageModel
from mmpeft.weight_files import load_weights

log = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
# PeftModel keys its weights under this prefix; functional injection into a bare model does not.
PEFT_PREFIX = "base_model.model."
MODEL_FILES_KEY = "mmpeft_model_files"
"""Where ``VLMModule.on_save_checkpoint`` puts ``model_files`` in a Lightning checkpoint dict, for the checkpoint IO
(``mmpeft.callbacks.checkpoint_io``) to write them beside the training state."""


def save_trainable(vlm: VisionLanguageModel, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the trainable state of ``vlm`` (see module docstring) atomically to ``directory``.

    Args:
        extra: JSON-serialisable metadata stored in the config under ``"extra"`` (e.g. step counts).
    """
    with atomic_directory(directory) as tmp:
        write_model_files(tmp, model_files(vlm, extra=extra))
    return Path(directory)


def _peft_towers(vlm: VisionLanguageModel) -> list[tuple[str, str, Any, str | None]]:
    """``(subdirectory, tower name in the VLM, peft config, peft task type)`` of each peft-adapted tower."""
    towers = [("llm_adapter", "llm.model", vlm.llm_peft_config, "CAUSAL_LM"),
              ("vision_adapter", "vision.model", vlm.vision_peft_config, None)]
    return [t for t in towers if t[2] is not None]


def model_files(vlm: VisionLanguageModel, state: dict[str, torch.Tensor] | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The files of a checkpoint directory (module docstring) as data: ``{relative path: content}``, a JSON object
    for ``.json`` files and ``{name: tensor}`` for ``.safetensors`` files (plain values: a Lightning checkpoint dict
    carries them under ``MODEL_FILES_KEY``). ``write_model_files`` writes them.

    Args:
        state: the trainable state to write, ``{VLM state-dict name: tensor}`` (default ``trainable_state(vlm)``;
            ``VLMModule`` passes what its Lightning checkpoint holds). Adapter weights go to their tower's peft
            directory, the rest to ``trainable.safetensors``.
        extra: JSON-serialisable metadata stored in the config under ``"extra"``.
    """
    state = trainable_state(vlm) if state is None else state
    files: dict[str, Any] = {
        CONFIG_FILE: {"format": "checkpoint", "vlm": vlm.config(), "input_format": _input_format(vlm).to_dict(),
                      "base_fingerprints": vlm.base_fingerprints, "extra": extra or {}},
        TRAINABLE_FILE: _outside_peft_files(vlm, state),
    }
    for sub, name, peft_config, task in _peft_towers(vlm):
        tower_state = {k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")}
        base = loadable_base(vlm.llm.init_args["name"]) if task else vlm.vision.init_args["name"]
        files[f"{sub}/{PEFT_CONFIG}"] = _peft_config_json(peft_config, base, task)
        weights = adapter_state_dict(vlm.get_submodule(name), tower_state)
        files[f"{sub}/{PEFT_WEIGHTS}"] = {PEFT_PREFIX + k: v for k, v in weights.items()}
    return files


def loadable_base(name: str) -> str:
    """The LLM's name as transformers resolves it (``adapter_config.json``'s ``base_model_name_or_path``, read by
    ``AutoPeftModelForCausalLM``): a ``zoo:`` name becomes its local directory, hub ids and local paths stay.
    mmpeft itself rebuilds the base from ``mmpeft_config.json``, never from this field."""
    if name.startswith("zoo:"):
        from mmpeft.zoo import resolve

        return str(resolve(name))
    return name


def _outside_peft_files(vlm: VisionLanguageModel, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The part of ``state`` that ``trainable.safetensors`` holds: all but the peft-adapted towers' weights."""
    in_peft_files = tuple(f"{name}." for _, name, _, _ in _peft_towers(vlm))
    return {k: v for k, v in state.items() if not k.startswith(in_peft_files)}


def _peft_config_json(peft_config: Any, base_model: str, task_type: str | None) -> dict[str, Any]:
    """``adapter_config.json`` as peft's ``PeftConfigMixin.save_pretrained`` writes it (peft 0.21.2: ``to_dict()``,
    sets as lists, keys sorted), as plain JSON values."""
    output = {k: list(v) if isinstance(v, set) else v for k, v in peft_config.to_dict().items()}
    output.update(base_model_name_or_path=base_model, task_type=task_type)
    return json.loads(json.dumps(output, sort_keys=True))


def write_model_files(directory: Path, files: dict[str, Any]) -> None:
    """Write ``model_files`` output into ``directory``, an ``atomic_directory`` temp directory (its swap makes the
    set of files atomic, and it fsyncs them)."""
    for relative, content in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            save_file(_unshared(content), path)
        else:
            path.write_text(json.dumps(content, indent=2))


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, a copy of each one whose storage an earlier one uses: safetensors refuses shared
    memory, and a fully trained LLM with tied embeddings holds its embedding matrix under two names."""
    storages: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().contiguous().cpu()
        pointer = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if pointer in storages else tensor
        storages.add(pointer)
    return out


def _input_format(vlm: VisionLanguageModel) -> InputFormat:
    if vlm.input_format is None:
        log.info("saving ChatRenderer's default input format (the model was not given one by a data config)")
        return default_input_format(vlm)
    return vlm.input_format


def load_pretrained(directory: str | Path, vlm: VisionLanguageModel | None = None, *,
                    allow_classes: Iterable[type] = (), trust_remote_code: bool = False,
                    allow_base_mismatch: bool = False, allow_init_args: Iterable[str] = (),
                    llm_path: str | None = None, vision_path: str | None = None) -> VisionLanguageModel:
    """Rebuild the model from a checkpoint or export directory and load its weights. Runs no code from the files.

    The model's ``input_format`` is set from the directory (``renderer_for(vlm)`` renders prompts with it). A model
    built here is returned in eval mode (adapter dropout off: peft's dropout layers are created in training mode);
    call ``.train()`` to train it. A ``vlm`` passed in keeps its mode.

    Args:
        vlm: load into this model instead of building one from the saved config; its towers, projector shapes
            and adapter specs must match (stage-2 initialisation from a stage-1 checkpoint).
        allow_classes: classes besides mmpeft's own towers and projectors that the saved config may name
            (CLI: ``--allow-class module.Class``).
        trust_remote_code: let a saved ``trust_remote_code: true`` stand (CLI: ``--trust-remote-code``); else
            such a file is refused.
        allow_base_mismatch: load even if a frozen base differs from the one the directory was trained on
            (``base_fingerprints``); a warning instead of an error (CLI: ``--allow-base-mismatch``).
        allow_init_args: tower arguments that pick another weight source, allowed for this load by the full key the
            refusal names (``vlm.vision.init_args.model_kwargs.checkpoint_path``; CLI: ``--allow-init-arg KEY``).
        llm_path / vision_path: where the frozen bases are now, replacing the saved local paths (a checkpoint
            copied to another machine; CLI: ``--llm-path`` / ``--vision-path``); see ``mmpeft.base_paths``.

    Raises:
        FileNotFoundError / ValueError naming the file, the key and the fix.
    """
    directory = recover_directory(Path(os.path.abspath(directory)))
    config_path = directory / CONFIG_FILE
    saved = read_model_config(directory)
    built_here = vlm is None
    if vlm is None:
        cfg = saved["vlm"]
        if saved["format"] == "export":
            cfg = _resolve_export_paths(cfg, directory)
        cfg = relocate_bases(cfg, str(config_path), llm_path, vision_path)
        check_base_paths(cfg, str(config_path), export=saved["format"] == "export")
        vlm = VisionLanguageModel.from_config(cfg, allow_classes=allow_classes, trust_remote_code=trust_remote_code,
                                              source=str(config_path), key_prefix="vlm.",
                                              allow_init_args=allow_init_args)
    elif llm_path is not None or vision_path is not None:
        raise ValueError("llm_path / vision_path relocate the bases of a model load_pretrained builds; with vlm= "
                         "given, build that model's towers from the new paths instead")
    names = {"vision": vlm.vision.init_args.get("name"), "llm": vlm.llm.init_args.get("name")}
    check_bases(saved.get("base_fingerprints"), vlm.base_fingerprints, str(config_path), names,
                allow_mismatch=allow_base_mismatch)
    _load_trainable_file(vlm, directory / TRAINABLE_FILE)
    load_adapter_files(vlm, directory)
    if "input_format" in saved:
        vlm.input_format = InputFormat.from_dict(saved["input_format"], f"{config_path}: key input_format")
    else:
        log.warning("%s has no input_format (written by an older mmpeft): prompts fall back to defaults unless the "
                    "caller supplies the training format", config_path)
    return vlm.eval() if built_here else vlm


def load_adapter_files(vlm: VisionLanguageModel, directory: str | Path, missing_ok: bool = False) -> list[str]:
    """Load ``llm_adapter/`` and ``vision_adapter/`` of a checkpoint directory into ``vlm``'s adapters.

    Args:
        missing_ok: skip (and leave at their initialisation) adapters the directory lacks or that do not fit,
            instead of raising; for initialising a new stage from an earlier one.

    Returns:
        The names of the adapters loaded.
    """
    loaded = []
    for sub, tower, peft_config in (
        ("llm_adapter", vlm.llm.model, vlm.llm_peft_config),
        ("vision_adapter", vlm.vision.model, vlm.vision_peft_config),
    ):
        path = Path(directory) / sub / PEFT_WEIGHTS
        if peft_config is None:
            if path.exists() and not missing_ok:
                raise ValueError(f"{path} holds a {sub} but the model has none; build it with the saved adapter spec")
            continue
        if not path.exists():
            if missing_ok:
                continue
            raise FileNotFoundError(f"{path} missing: the model has a {sub} the checkpoint does not")
        state = {k.removeprefix(PEFT_PREFIX): v for k, v in load_weights(path, f"the {sub} weights").items()}
        try:
            check_state_fits(adapter_state_dict(tower), state, path,
                             hint="Adapters need the same tower, method, rank and targets.")
        except ValueError:
            if missing_ok:
                continue
            raise
        load_adapter_state_dict(tower, state)
        loaded.append(sub)
    return loaded


def check_state_fits(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: Path,
                     hint: str) -> None:
    """Raise naming ``source`` and the keys unless ``state`` has exactly the keys and shapes of ``expected``."""
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    mismatched = [(k, tuple(state[k].shape), tuple(expected[k].shape))
                  for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}, shape "
            f"mismatch (saved, model) {mismatched[:5]}. {hint}"
        )


def _load_trainable_file(vlm: VisionLanguageModel, path: Path) -> None:
    state = load_weights(path, "the projector and other trainable weights")
    check_state_fits(_outside_peft_files(vlm, trainable_state(vlm)), state, path,
                     hint="Projector shapes follow (vision embed_dim, llm hidden_size) and the projector options.")
    vlm.load_state_dict(state, strict=False)  # every key checked above; the rest are frozen base weights


def export(vlm: VisionLanguageModel, directory: str | Path) -> Path:
    """Merge adapters into the base weights and write a standalone model (see module docstring).

    The export keeps the model's input format and fingerprints its merged towers (what it loads back).
    ``vlm`` is left unchanged (adapters are merged, read out and unmerged).
    """
    with atomic_directory(directory) as tmp:
        llm_state = merged_llm_state(vlm.llm.model)  # a tied lm_head shares the embeddings' tensor: stored once
        vlm.llm.model.save_pretrained(tmp / "llm", state_dict=dict(llm_state))  # it deletes tied aliases
        vlm.llm.tokenizer.save_pretrained(tmp / "llm")
        vision_state = {k: v.contiguous() for k, v in merged_base_state_dict(vlm.vision.model).items()}
        save_file(vision_state, tmp / "vision_tower.safetensors")
        save_file(trainable_state_without_towers(vlm), tmp / TRAINABLE_FILE)
        cfg = vlm.config()
        cfg["llm"]["init_args"]["name"] = "llm"
        vision_args = cfg["vision"]["init_args"]
        vision_args["weights_file"] = "vision_tower.safetensors"
        for source_weights in ("pretrained", "checkpoint_path"):  # superseded by weights_file: self-contained
            if source_weights in vision_args:
                vision_args[source_weights] = False if isinstance(vision_args[source_weights], bool) else None
        name = vision_args["name"]
        if name.startswith("local-dir:"):  # keep the architecture with the export, not only in the source dir
            (tmp / "vision_config").mkdir()
            shutil.copy(Path(name.removeprefix("local-dir:")) / "open_clip_config.json", tmp / "vision_config")
            vision_args["name"] = "local-dir:vision_config"
        cfg["vision_adapter"]["method"] = cfg["llm_adapter"]["method"] = "frozen"
        for tower in ("llm", "vision"):  # the export holds plain (dequantised) weights in the towers' dtypes
            if cfg[tower]["init_args"].get("quantize") is not None:
                cfg[tower]["init_args"]["quantize"] = None
        fingerprints = {"vision": base_fingerprint(vlm.vision, vision_state),
                        "llm": base_fingerprint(vlm.llm, llm_state)}
        (tmp / CONFIG_FILE).write_text(json.dumps({"format": "export", "vlm": cfg,
                                                   "input_format": _input_format(vlm).to_dict(),
                                                   "base_fingerprints": fingerprints}, indent=2))
    return Path(directory)


def trainable_state_without_towers(vlm: VisionLanguageModel) -> dict[str, torch.Tensor]:
    """The trainable state an export keeps beside its merged towers (projector, soft prompt)."""
    return {k: v.contiguous().cpu() for k, v in trainable_state(vlm).items() if not k.startswith(("vision.", "llm."))}


def _resolve_export_paths(cfg: Any, directory: Path) -> Any:
    """An export's paths are relative to the export directory (it can be moved): make them absolute. Entries that
    are not where an export puts them are left for ``from_config`` to report."""
    cfg = json.loads(json.dumps(cfg))
    llm, vision = (cfg.get(k, {}).get("init_args") if isinstance(cfg, dict) and isinstance(cfg.get(k), dict) else None
                   for k in ("llm", "vision"))
    if isinstance(llm, dict) and isinstance(llm.get("name"), str):
        llm["name"] = str(directory / llm["name"])
    if isinstance(vision, dict):
        if isinstance(vision.get("weights_file"), str):
            vision["weights_file"] = str(directory / vision["weights_file"])
        name = vision.get("name")
        if isinstance(name, str) and name.startswith("local-dir:"):
            vision["name"] = f"local-dir:{directory / name.removeprefix('local-dir:')}"
    return cfg


def add_loading_flags(parser: Any) -> None:
    """The command-line switches of ``load_pretrained`` (``mmpeft eval``, ``mmpeft export``)."""
    parser.add_argument("--allow-class", action="append", default=[], metavar="MODULE.CLASS",
                        help="a class the model directory may name besides mmpeft's own towers and projectors "
                             "(imported because you name it here; repeatable)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let a saved trust_remote_code: true stand (runs code shipped with the LLM's hub repo)")
    parser.add_argument("--allow-base-mismatch", action="store_true",
                        help="load even if a frozen base differs from the one the directory was trained on")
    parser.add_argument("--allow-init-arg", action="append", default=[], metavar="KEY",
                        help="a tower argument the directory may use to load weights from elsewhere, by the full key "
                             "the refusal names (e.g. vlm.vision.init_args.model_kwargs.checkpoint_path; repeatable)")
    parser.add_argument("--llm-path", metavar="DIR",
                        help="where the frozen LLM is now, if its saved path is gone (checked by its fingerprint)")
    parser.add_argument("--vision-path", metavar="PATH",
                        help="where the frozen vision base is now (open_clip local-dir, timm checkpoint_path or "
                             "open_clip pretrained file), if its saved path is gone (checked by its fingerprint)")


def loading_options(args: Any) -> dict[str, Any]:
    """``load_pretrained`` keyword arguments from flags added by ``add_loading_flags``."""

    return {"allow_classes": [import_class(c) for c in args.allow_class],
            "trust_remote_code": args.trust_remote_code, "allow_base_mismatch": args.allow_base_mismatch,
            "allow_init_args": args.allow_init_arg, "llm_path": args.llm_path, "vision_path": args.vision_path}


def import_class(dotted: str) -> type:
    """Import a class the USER named on the command line (``--allow-class my_pkg.module.MyProjector``); never
    called with a name read from a model directory (those go through ``mmpeft.allowed_classes``)."""
    module_name, _, name = dotted.rpartition(".")
    if not module_name:
        raise SystemExit(f"--allow-class {dotted!r}: give the full path, module.ClassName")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"--allow-class {dotted!r}: cannot import it ({e}); is its package installed and on "
                         "PYTHONPATH?") from None
    if not isinstance(obj, type):
        raise SystemExit(f"--allow-class {dotted!r} is a {type(obj).__name__}, not a class")
    return obj

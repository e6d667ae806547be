"""Fingerprints of the frozen bases, so adapters are never loaded onto weights they were not trained on.

A fingerprint is plain JSON, stored in ``mmpeft_config.json`` under ``base_fingerprints.{vision,llm}``::

    {"config": {...},          the tower's architecture (LLM: its HF config; vision: widths, token count, size)
     "tokenizer": {...},       LLM only: vocabulary size, sha256 of the vocabulary, image placeholder id
     "weights": "<sha256>",    hash of every tensor's name and shape and of SAMPLES evenly spaced values of it
     "tensors": 291}           how many tensors went into the hash

The weight hash reads ``SAMPLES`` values per tensor (a few hundred tensors for a 7B model), never the whole
tensor, so it costs milliseconds whatever the model size. Values are rounded to bfloat16 before hashing: the same
weights loaded in float32 or bfloat16 give the same fingerprint, while any other checkpoint (another model, another
fine-tune, re-initialised weights) changes the sampled values. It is a guard against mix-ups, not a cryptographic
proof: an edit that touches none of the sampled positions goes unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

SAMPLES = 256
# HF config keys that describe how a model was loaded or run, not what it is.
VOLATILE_CONFIG_KEYS = {"transformers_version", "dtype", "torch_dtype", "use_cache", "architectures",
                        "name_or_path", "output_attentions", "output_hidden_states", "return_dict", "id2label",
                        "label2id", "problem_type"}


def weights_fingerprint(state: Mapping[str, torch.Tensor]) -> tuple[str, int]:
    """``(sha256 hex, number of tensors)`` of a state dict: names, shapes and sampled values (see module doc)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        flat = tensor.reshape(-1)
        digest.update(json.dumps([name, list(tensor.shape)]).encode())
        if flat.numel() == 0:
            continue
        count = min(SAMPLES, flat.numel())  # evenly spaced, first and last included; integer maths (exact)
        index = torch.arange(count, dtype=torch.int64) * (flat.numel() - 1) // max(count - 1, 1)
        index = index.to(flat.device)
        values = flat[index]
        if values.is_floating_point():
            values = values.to(torch.bfloat16)
        elif values.dtype == torch.bool:
            values = values.to(torch.uint8)
        else:
            values = values.to(torch.int64)
        digest.update(values.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest(), len(state)


def base_fingerprint(tower: nn.Module, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The fingerprint of a frozen tower (call it before adapters are injected).

    Args:
        state: hash these weights instead of ``tower.model.state_dict()`` (``export`` passes the merged weights
            it writes, which is what the exported directory loads back).
    """
    model = tower.model
    fingerprint: dict[str, Any] = {"config": _config(tower)}
    tokenizer = getattr(tower, "tokenizer", None)
    if tokenizer is not None:
        vocab = sorted(tokenizer.get_vocab().items())
        fingerprint["tokenizer"] = {
            "size": len(tokenizer),
            "vocab_sha256": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
            "image_token_id": getattr(tower, "image_token_id", None),
        }
    if getattr(tower, "init_args", {}).get("random_weights"):
        fingerprint["weights"], fingerprint["tensors"] = None, None  # fresh random draws: nothing to compare
    else:
        fingerprint["weights"], fingerprint["tensors"] = weights_fingerprint(
            model.state_dict() if state is None else state)
    return json.loads(json.dumps(fingerprint, default=str))  # as it reads back from the file (tuples -> lists)


def _config(tower: nn.Module) -> dict[str, Any]:
    hf_config = getattr(tower.model, "config", None)
    if hf_config is not None and hasattr(hf_config, "to_dict"):
        return {k: v for k, v in sorted(hf_config.to_dict().items())
                if not k.startswith("_") and k not in VOLATILE_CONFIG_KEYS
                and isinstance(v, str | int | float | bool | list | tuple | dict | type(None))}
    return {"class": type(tower).__name__, "embed_dim": getattr(tower, "embed_dim", None),
            "num_tokens": getattr(tower, "num_tokens", None), "image_size": list(getattr(tower, "image_size", ())),
            "in_chans": getattr(tower, "in_chans", None)}


def base_differences(saved: Mapping[str, Any], loaded: Mapping[str, Any]) -> list[str]:
    """What differs between a saved and a freshly computed fingerprint of one tower ([] when they agree).

    Config keys present on one side only are ignored (a newer transformers adds defaults); a saved weight hash of
    ``None`` (random-weight towers) is not compared.
    """
    diffs = []
    saved_cfg, loaded_cfg = saved.get("config", {}), loaded.get("config", {})
    changed = [k for k in sorted(set(saved_cfg) & set(loaded_cfg)) if saved_cfg[k] != loaded_cfg[k]]
    if changed:
        diffs.append("config " + ", ".join(f"{k}: saved {saved_cfg[k]!r}, now {loaded_cfg[k]!r}"
                                           for k in changed[:5]))
    if saved.get("tokenizer") is not None and saved.get("tokenizer") != loaded.get("tokenizer"):
        diffs.append(f"tokenizer: saved {saved['tokenizer']}, now {loaded.get('tokenizer')}")
    if saved.get("weights") is not None and saved.get("weights") != loaded.get("weights"):
        diffs.append(f"weights: saved sha256 {saved['weights'][:12]}... over {saved.get('tensors')} tensors, now "
                     f"{str(loaded.get('weights'))[:12]}... over {loaded.get('tensors')} tensors")
    return diffs


LOAD_PRETRAINED_OVERRIDE = "pass allow_base_mismatch=True to load_pretrained (CLI: --allow-base-mismatch)"
TOWERS = ("vision", "llm")
# field -> allowed JSON types of one tower's saved fingerprint ("config" and "weights" are always written)
FIELDS: dict[str, tuple[type, ...]] = {"config": (dict,), "tokenizer": (dict, type(None)),
                                       "weights": (str, type(None)), "tensors": (int, type(None))}


def check_fingerprints_format(saved: Any, where: str) -> None:
    """Raise ValueError naming ``where`` (``<file>: key base_fingerprints``) unless ``saved`` has the shape
    ``base_fingerprint`` writes: an object with at most the towers ``vision`` / ``llm``, each an object with
    ``config`` (object), ``weights`` (sha256 string or null) and optionally ``tensors`` and ``tokenizer``.

    A tower left out is not an error here: ``check_bases`` warns that it cannot be checked.
    """
    fix = ("the model directory is damaged or was edited: restore mmpeft_config.json from the run that wrote it, "
           "or remove the key base_fingerprints to load without the base check (a warning)")
    if not isinstance(saved, dict):
        raise ValueError(f"{where} must be an object {{vision: ..., llm: ...}}, got {saved!r}; {fix}")
    unknown = sorted(set(saved) - set(TOWERS))
    if unknown:
        raise ValueError(f"{where} has unknown towers {unknown} (known: {list(TOWERS)}); {fix}")
    for tower, fingerprint in saved.items():
        if not isinstance(fingerprint, dict):
            raise ValueError(f"{where}.{tower} must be an object with fields {list(FIELDS)}, got {fingerprint!r}; "
                             f"{fix}")
        unknown, missing = sorted(set(fingerprint) - set(FIELDS)), [k for k in ("config", "weights")
                                                                     if k not in fingerprint]
        if unknown or missing:
            raise ValueError(f"{where}.{tower}: unknown fields {unknown}, missing fields {missing} (fields: "
                             f"{list(FIELDS)}); {fix}")
        for name, value in fingerprint.items():
            if not isinstance(value, FIELDS[name]) or (name == "tensors" and isinstance(value, bool)):
                raise ValueError(f"{where}.{tower}.{name} = {value!r} has the wrong type (expected "
                                 f"{' or '.join('null' if t is type(None) else t.__name__ for t in FIELDS[name])}); "
                                 f"{fix}")


def check_bases(saved: Mapping[str, Any] | None, loaded: Mapping[str, Any], source: str, names: Mapping[str, str],
                allow_mismatch: bool = False, override: str = LOAD_PRETRAINED_OVERRIDE) -> None:
    """Refuse (ValueError) when a tower's base differs from the one the model directory was trained on.

    Args:
        saved: ``base_fingerprints`` of the file (None: a directory written before fingerprints; warned about, as
            is each tower it lacks). Its format is checked (``check_fingerprints_format``) before anything else.
        loaded: the same for the towers just built.
        source: the file, for the message.
        names: tower -> where its weights came from (``init_args.name``), for the message.
        allow_mismatch: warn instead of raising (``allow_base_mismatch=True`` / ``--allow-base-mismatch``).
        override: how the caller's user allows a mismatch, for the message (``load_pretrained``'s by default;
            stage-2 initialisation names ``model.init_from_allow_base_mismatch``).
    """
    if saved is None:
        log.warning("%s has no base_fingerprints (written by an older mmpeft): the frozen bases cannot be checked",
                    source)
        return
    check_fingerprints_format(saved, f"{source}: key base_fingerprints")
    for tower in TOWERS:
        if tower not in saved:
            log.warning("%s has no base_fingerprints.%s: the frozen %s base cannot be checked", source, tower, tower)
    problems = [f"{tower} ({names.get(tower)}): {'; '.join(diffs)}" for tower in TOWERS
                if tower in saved and (diffs := base_differences(saved[tower], loaded.get(tower, {})))]
    if not problems:
        return
    message = (f"{source}: the frozen base the model was trained on differs from the one loaded now (key "
               f"base_fingerprints): " + " | ".join(problems) + ". Its adapters and projector were trained for the "
               "saved base: point vlm.<tower>.init_args at the original weights (load_pretrained's llm_path / "
               f"vision_path, CLI --llm-path / --vision-path), or, if the change is intended, {override}.")
    if not allow_mismatch:
        raise ValueError(message)
    log.warning("loading anyway (allow_base_mismatch): %s", message)

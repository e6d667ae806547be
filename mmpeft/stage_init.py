"""Starting a training stage from an earlier stage's checkpoint (``model.init_from``): projector, soft prompt and
adapters where they fit, after checking that both stages share their frozen bases."""

from __future__ import annotations

import logging
from pathlib import Path

from mmpeft.atomic_directory import recover_directory
from mmpeft.checkpoint import CONFIG_FILE, TRAINABLE_FILE, load_adapter_files, read_model_config
from mmpeft.fingerprint import check_bases
from mmpeft.vlm import VisionLanguageModel
from mmpeft.weight_files import load_weights

log = logging.getLogger(__name__)


def init_from_checkpoint(vlm: VisionLanguageModel, directory: str, allow_base_mismatch: bool = False) -> None:
    """Initialise ``vlm`` from another run's checkpoint directory (stage 2 from stage 1).

    The checkpoint's frozen bases must be ``vlm``'s (``base_fingerprints`` of its ``mmpeft_config.json`` against
    ``vlm.base_fingerprints``, by ``mmpeft.fingerprint.check_bases`` like ``load_pretrained``): a projector and
    adapters trained on other weights would initialise this run silently wrong. The projector must fit (same
    vision embed_dim, LLM hidden size and projector options); the soft prompt and adapters are taken when the
    checkpoint has them with matching shapes, and reported either way.

    Args:
        allow_base_mismatch: warn instead of raising when a base differs (``model.init_from_allow_base_mismatch``).

    Raises:
        FileNotFoundError / ValueError naming ``model.init_from``, the file, the tower and the fix.
    """
    path = recover_directory(Path(directory))  # a checkpoint left mid-swap by a crash reads as its previous version
    file = path / TRAINABLE_FILE
    if not file.is_file():
        raise FileNotFoundError(f"model.init_from={directory}: {file} not found (give a checkpoint directory)")
    try:
        saved = read_model_config(path)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"model.init_from={directory}: {e}") from None
    check_bases(saved.get("base_fingerprints"), vlm.base_fingerprints, f"model.init_from={path / CONFIG_FILE}",
                {"vision": vlm.vision.init_args.get("name"), "llm": vlm.llm.init_args.get("name")},
                allow_mismatch=allow_base_mismatch,
                override="set model.init_from_allow_base_mismatch=true (CLI: --model.init_from_allow_base_mismatch "
                         "true)")
    try:
        state = load_weights(file, "the projector and other trainable weights")
    except ValueError as e:  # a damaged file: said of the option that named it
        raise ValueError(f"model.init_from={directory}: {e}") from None
    projector = {k: v for k, v in state.items() if k.startswith("projector.")}
    own = {f"projector.{k}": v for k, v in vlm.projector.state_dict().items()}
    mismatch = [(k, tuple(projector[k].shape) if k in projector else None, tuple(v.shape))
                for k, v in own.items() if k not in projector or projector[k].shape != v.shape]
    if mismatch:
        raise ValueError(
            f"model.init_from={directory}: its projector does not fit this model (key, checkpoint shape, model "
            f"shape): {mismatch[:4]}. The projector is built from (vision embed_dim={vlm.vision.embed_dim}, LLM "
            f"hidden_size={vlm.llm.hidden_size}) and its options; use towers and a projector of the same shapes."
        )
    vlm.load_state_dict(projector, strict=False)
    taken = ["projector"]
    prompt = state.get("soft_prompt.embeddings")
    if vlm.soft_prompt is not None and prompt is not None and prompt.shape == vlm.soft_prompt.embeddings.shape:
        vlm.soft_prompt.embeddings.data.copy_(prompt)
        taken.append("soft_prompt")
    taken += load_adapter_files(vlm, path, missing_ok=True)
    log.info("initialised %s from %s", ", ".join(taken), directory)

"""The options ``mmpeft chat`` and ``mmpeft generate`` share: the model, adapters on/off, decoding, prompt format
overrides and the loading flags of ``mmpeft eval`` / ``mmpeft export``."""

from __future__ import annotations

import argparse
from typing import Any


def add_inference_flags(parser: argparse.ArgumentParser, max_new_tokens: int = 256) -> None:
    from mmpeft.checkpoint import add_loading_flags

    parser.add_argument("--model", required=True, metavar="DIR",
                        help="a checkpoint directory (e.g. runs/x/checkpoints/last.ckpt) or an mmpeft export")
    parser.add_argument("--base", action="store_true",
                        help="the adapters-off model: the same weights with every adapter (LoRA, ..., soft prompt) "
                             "bypassed, the projector kept (a checkpoint only: an export has its adapters merged)")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="reply budget (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0 (default): greedy; > 0: sample at this temperature")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when sampling (1: off)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: off)")
    parser.add_argument("--seed", type=int, help="seed for sampling (reproducible replies)")
    parser.add_argument("--system-prompt", help="override the system prompt saved with the model (as trained)")
    parser.add_argument("--max-length", type=int, help="override the saved max_length that bounds every prompt")
    parser.add_argument("--device", help="cuda if available, else cpu")
    add_loading_flags(parser)


def load_from_flags(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(InferenceModel, GenerationSettings)`` from the flags above. Bad settings fail before the model loads."""
    import torch

    from mmpeft.checkpoint import loading_options
    from mmpeft.inference import GenerationSettings, load_inference_model

    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_inference_model(args.model, base=args.base, device=device, system_prompt=args.system_prompt,
                                 max_length=args.max_length, **loading_options(args))
    return model, settings

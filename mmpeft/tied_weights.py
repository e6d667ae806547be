"""Tied weights survive adapter merging: an LLM that ties ``lm_head`` to its input embeddings is stored once.

``merged_base_state_dict`` clones every tensor, so the two names of a tied matrix stop sharing storage and
``save_pretrained`` (which drops an alias only when both names share it) would write the matrix twice (SmolLM2-135M:
651 MB instead of 538 MB, and a reload that no longer ties). ``merged_llm_state`` re-links the names that are one
parameter in the live model.
"""

from __future__ import annotations

import torch
from torch import nn

from mmpeft.adapters.inject import merged_base_state_dict


def tied_parameter_names(module: nn.Module) -> list[list[str]]:
    """Groups (2+) of state-dict names that are one parameter of ``module``, in the un-adapted key layout
    (a peft layer's ``X.base_layer.weight`` is ``X.weight``); the first name of each group is the owner's."""
    groups: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name.replace(".base_layer.", "."))
    return [names for names in groups.values() if len(names) > 1]


def merged_llm_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``merged_base_state_dict(module)`` with every tied name pointing at the same tensor (stored once)."""
    state = merged_base_state_dict(module)
    for names in tied_parameter_names(module):
        present = [n for n in names if n in state]
        for alias in present[1:]:
            state[alias] = state[present[0]]
    return state

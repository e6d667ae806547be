"""Per-tower adapters: a spec (what to train) and peft-based injection (how)."""

from mmpeft.adapters.inject import (
    adapter_state_dict,
    apply_adapter,
    disabled_adapters,
    load_adapter_state_dict,
    merged_base_state_dict,
    resolve_targets,
)
from mmpeft.adapters.spec import AdapterSpec

__all__ = [
    "AdapterSpec",
    "adapter_state_dict",
    "apply_adapter",
    "disabled_adapters",
    "load_adapter_state_dict",
    "merged_base_state_dict",
    "resolve_targets",
]

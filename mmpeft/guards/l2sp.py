"""L2-SP: squared distance of the adapted weights from the starting point (Li et al., 2018).

For adapter layers the distance is the effective weight delta ``||W_adapted - W_base||_F^2`` (cheap for LoRA and
IA3, see ``mmpeft.adapters.deltas``); for fully trained parameters it is ``||theta - theta_0||^2`` against a copy
taken at setup. Projector and soft prompt have no meaningful starting point and are not included.

The copy is the run's start and is checkpointed with it (``state_dict``), keyed by VLM parameter name
(``llm.model.<name>``): a resumed process (new objects) finds it by name and measures from the same start.
"""

from __future__ import annotations

import torch

from mmpeft.adapters.deltas import adapter_layers, delta_sq_norm
from mmpeft.guards.base import Guard, GuardContext
from mmpeft.guards.start_point import restore_start
from mmpeft.vlm import VisionLanguageModel


class L2SP(Guard):
    """Args:
    weight: multiplier in the total loss.
    towers: which towers to regularise: any of ``llm``, ``vision``.
    """

    name = "l2sp"

    def __init__(self, weight: float = 1.0, towers: list[str] | None = None):
        super().__init__(weight)
        self.towers = towers or ["llm", "vision"]
        unknown = set(self.towers) - {"llm", "vision"}
        if unknown:
            raise ValueError(f"L2SP.towers has {sorted(unknown)}; valid: 'llm', 'vision'")
        self.start: dict[str, torch.Tensor] = {}

    def _towers(self, vlm: VisionLanguageModel) -> dict[str, torch.nn.Module]:
        """``{name in the VLM: module}`` of the regularised towers (``llm.model``, ``vision.model``)."""
        return {f"{t}.model": vlm.get_submodule(f"{t}.model") for t in self.towers}

    def _fully_trained(self, vlm: VisionLanguageModel) -> dict[str, torch.Tensor]:
        """``{VLM parameter name: parameter}`` of the regularised towers that train fully."""
        full = vlm.fully_trained_modules()
        return {f"{name}.{n}": p for name, tower in self._towers(vlm).items() if name in full
                for n, p in tower.named_parameters()}

    def setup(self, vlm: VisionLanguageModel) -> None:
        self.start = {name: p.detach().clone() for name, p in self._fully_trained(vlm).items()}
        if not self.start and not any(adapter_layers(t) for t in self._towers(vlm).values()):
            raise ValueError(f"L2SP has nothing to regularise: towers {self.towers} have no adapters and are not "
                             "fully trained (set model.vlm.llm_adapter / vision_adapter)")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.start)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.start = restore_start(self.name, self.start, state)  # the run's start, not the resume point

    def __call__(self, ctx: GuardContext) -> torch.Tensor:
        total = ctx.zero()
        for tower in self._towers(ctx.vlm).values():
            for layer in adapter_layers(tower).values():
                total = total + delta_sq_norm(layer)
        for name, p in self._fully_trained(ctx.vlm).items():
            total = total + (p - self.start[name].to(p.device)).pow(2).sum()
        return total

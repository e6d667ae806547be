"""L2-SP: squared distance of the adapted weights from the starting point (Li et al., 2018).

For adapter layers the distance is the effective weight delta ``||W_adapted - W_base||_F^2`` (cheap for LoRA and
IA3, see ``mmpeft.adapters.deltas``); for fully trained parameters it is ``||theta - theta_0||^2`` against a copy
taken at setup. Projector and soft prompt have no meaningful starting point and are not included.
"""

from __future__ import annotations

import torch

from mmpeft.adapters.deltas import adapter_layers, delta_sq_norm
from mmpeft.adapters.inject import FULLY_TRAINED_FLAG
from mmpeft.guards.base import Guard, GuardContext
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

    def _towers(self, vlm: VisionLanguageModel):
        return [vlm.llm.model if t == "llm" else vlm.vision.model for t in self.towers]

    def setup(self, vlm: VisionLanguageModel) -> None:
        self.start = {}
        for tower in self._towers(vlm):
            if getattr(tower, FULLY_TRAINED_FLAG, False):
                self.start.update({f"{id(tower)}.{n}": p.detach().clone() for n, p in tower.named_parameters()})
        if not self.start and not any(adapter_layers(t) for t in self._towers(vlm)):
            raise ValueError(f"L2SP has nothing to regularise: towers {self.towers} have no adapters and are not "
                             "fully trained (set model.vlm.llm_adapter / vision_adapter)")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.start)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        # the starting point is the run's start, not the resume point
        self.start.update({k: v.to(self.start[k].device) for k, v in state.items() if k in self.start})

    def __call__(self, ctx: GuardContext) -> torch.Tensor:
        total = ctx.zero()
        for tower in self._towers(ctx.vlm):
            for layer in adapter_layers(tower).values():
                total = total + delta_sq_norm(layer)
            if getattr(tower, FULLY_TRAINED_FLAG, False):
                for n, p in tower.named_parameters():
                    total = total + (p - self.start[f"{id(tower)}.{n}"].to(p.device)).pow(2).sum()
        return total

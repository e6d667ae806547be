"""Frozen towers: vision encoders (open_clip, timm) and the causal LLM (transformers)."""

from mmpeft.towers.llm import LLMTower
from mmpeft.towers.timm_tower import TimmVisionTower
from mmpeft.towers.vision import OpenClipVisionTower, VisionTower

__all__ = ["LLMTower", "OpenClipVisionTower", "TimmVisionTower", "VisionTower"]

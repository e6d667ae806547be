"""Forgetting guards: injected loss terms, each with a weight, each logged on its own."""

from mmpeft.guards.base import Guard, GuardContext
from mmpeft.guards.distill import KLToBase, LwF
from mmpeft.guards.ewc import EWC
from mmpeft.guards.l2sp import L2SP
from mmpeft.guards.replay import Replay

__all__ = ["EWC", "Guard", "GuardContext", "KLToBase", "L2SP", "LwF", "Replay"]

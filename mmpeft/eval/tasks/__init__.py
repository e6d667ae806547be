"""Evaluation tasks, one per file, each an ``mmpeft.eval.task.EvalTask``; named in YAML by ``class_path``
(``mmpeft.eval.tasks.VQATask``) and run by ``mmpeft.eval.loop.evaluate``."""

from mmpeft.eval.tasks.captions import CaptionTask
from mmpeft.eval.tasks.generation import GenerationTask
from mmpeft.eval.tasks.gqa import GQATask
from mmpeft.eval.tasks.lm_harness import LmEvalTask
from mmpeft.eval.tasks.mmbench import MMBenchTask
from mmpeft.eval.tasks.mme import MMETask
from mmpeft.eval.tasks.pope import POPETask
from mmpeft.eval.tasks.scienceqa import ScienceQATask
from mmpeft.eval.tasks.text_probes import TextProbeTask
from mmpeft.eval.tasks.textvqa import TextVQATask
from mmpeft.eval.tasks.vision import VisionDriftTask
from mmpeft.eval.tasks.vqa import VQATask

__all__ = ["CaptionTask", "GQATask", "GenerationTask", "LmEvalTask", "MMBenchTask", "MMETask", "POPETask",
           "ScienceQATask", "TextProbeTask", "TextVQATask", "VQATask", "VisionDriftTask"]

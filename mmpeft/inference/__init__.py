"""Inference on a checkpoint or export directory: the library under ``mmpeft chat`` and ``mmpeft generate``.

Prompts are rendered exactly as training rendered them (the directory's saved input format, through
``mmpeft.data.input_format.renderer_for``), images go through the model's own transform, and ``--base`` runs the
same weights with every adapter off (``disabled_adapters``). No Lightning here; the commands live in
``mmpeft.apps.chat`` and ``mmpeft.apps.generate``.

Modules: ``settings`` (GenerationSettings), ``model`` (InferenceModel: weights + renderer + adapters on/off),
``images`` (image references -> pixel tensors), ``streaming`` (tokens as they are generated), ``conversation``
(ChatSession: multi-turn, images added at any user turn), ``prompts_file`` (the prompts JSONL format) and
``batch_generate`` (a prompts file to an output JSONL file).
"""

from mmpeft.inference.batch_generate import GenerationReport, generate_file
from mmpeft.inference.conversation import ChatSession
from mmpeft.inference.model import InferenceModel, load_inference_model
from mmpeft.inference.prompts_file import BadLine, PromptRow, read_prompts
from mmpeft.inference.settings import GenerationSettings

__all__ = ["BadLine", "ChatSession", "GenerationReport", "GenerationSettings", "InferenceModel", "PromptRow",
           "generate_file", "load_inference_model", "read_prompts"]

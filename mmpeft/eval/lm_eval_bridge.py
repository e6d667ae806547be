"""lm-evaluation-harness on the adapted model and its base, in one process, on the same weights in memory.

``HFLM`` wraps the in-memory LLM (its peft layers included); the base column runs inside ``disabled_adapters``.
A soft prompt is not seen by lm-eval (it lives in the VLM, not in the HF model). Tasks come from lm-eval's
registry (needs the hub for their datasets) or from local YAML files (``include_path``), which work offline.
Needs the optional ``lm-eval`` package (``requirements-eval.txt``).

Prompts are lm-eval's, by design: each task's own format (and lm-eval's own chat-template switches), never the
model's saved input format (``mmpeft.data.input_format``), so scores stay comparable with published lm-eval numbers.
mmpeft's own generation probes (``mmpeft.eval.text_probes``) are the ones that prompt in the trained format.
"""

from __future__ import annotations

import logging
from typing import Any

from mmpeft.adapters.inject import disabled_adapters
from mmpeft.vlm import VisionLanguageModel


def lm_eval_compare(vlm: VisionLanguageModel, tasks: list[str], include_path: str | None = None,
                    batch_size: int = 8, limit: int | None = None) -> dict[str, dict[str, Any]]:
    """``{task: {"adapted": metrics, "base": metrics, "delta": metrics}}`` (numeric metrics only)."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise ImportError("the lm-eval bridge needs lm-eval: pip install -r requirements-eval.txt") from e
    logging.getLogger("lm-eval").setLevel(logging.WARNING)
    device = str(vlm.llm.model.device)
    lm = HFLM(pretrained=vlm.llm.model, tokenizer=vlm.llm.tokenizer, batch_size=batch_size, device=device)
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()

    def run() -> dict[str, dict[str, float]]:
        results = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, log_samples=False,
                                  bootstrap_iters=0)["results"]
        return {task: {k.split(",")[0]: float(v) for k, v in metrics.items()
                       if isinstance(v, int | float) and "stderr" not in k}
                for task, metrics in results.items()}

    was_training = vlm.training
    vlm.eval()
    try:
        adapted = run()
        with disabled_adapters(vlm):
            base = run()
    finally:
        vlm.train(was_training)
    return {task: {"adapted": adapted[task], "base": base[task],
                   "delta": {k: adapted[task][k] - base[task][k] for k in adapted[task]}} for task in adapted}

"""``POPETask``: POPE yes/no hallucination metrics (``mmpeft.eval.benchmarks.pope``) of greedy answers."""

from __future__ import annotations

from typing import Any, Literal

from mmpeft.eval.benchmarks.pope import PARSINGS, pope_scores
from mmpeft.eval.tasks.benchmark_rows import interval_of, keyed_rows
from mmpeft.eval.tasks.generation import GenerationTask


class POPETask(GenerationTask):
    """POPE accuracy, precision, recall, F1 and yes-ratio (fractions), pooled and ``per_split`` (adversarial /
    popular / random), with a 95% interval of the pooled accuracy over questions (``interval_95.accuracy``).

    The prompt is the record's: ``data_prep/convert_pope.py`` writes lmms-eval's (``<image>\\n``, the question
    stripped, ``\\nAnswer the question using a single word or phrase.``).

    Args:
        shards: POPE shards (records with ``eval.answer`` yes/no, ``eval.category`` (split), ``eval.question_id``).
        name: the key of the scores (default ``pope``).
        max_new_tokens: answer budget (default 128, lmms-eval's ``pope.yaml``).
        parsing: ``lmms_eval`` (the whole answer must be ``yes``/``no``) or ``official`` (POPE's ``evaluate.py``:
            ``no`` when a word of the first sentence is No/not/no, else ``yes``).
    """

    empty_scores = {"num_questions": 0}

    def __init__(self, shards: str | list[str], name: str = "pope", max_new_tokens: int | None = 128,
                 parsing: Literal["lmms_eval", "official"] = "lmms_eval"):
        if parsing not in PARSINGS:
            raise ValueError(f"POPETask {name!r}: parsing={parsing!r}; choose one of {PARSINGS}")
        super().__init__(shards, name, max_new_tokens)
        self.parsing = parsing

    def score(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        preds, refs = keyed_rows(predictions, "POPE", ("answer", "category"), "data_prep/convert_pope.py")
        scores = pope_scores(preds, refs, self.parsing)
        scores["interval_95"] = {"accuracy": interval_of(scores["per_question"], 1.0)}
        return scores

    def summary(self, scores: dict[str, Any]) -> list[str]:
        if "accuracy" not in scores:
            return [f"{self.name}: no question scored"]
        low, high = scores["interval_95"]["accuracy"]
        lines = [f"POPE accuracy {scores['accuracy']:.4f} [{low:.4f}, {high:.4f}] F1 {scores['f1']:.4f} yes-ratio "
                 f"{scores['yes_ratio']:.4f} ({scores['num_questions']} questions, {self.parsing} parsing)"]
        lines += [f"  {split}: acc {m['accuracy']:.4f} P {m['precision']:.4f} R {m['recall']:.4f} F1 {m['f1']:.4f} "
                  f"yes {m['yes_ratio']:.4f}" for split, m in scores["per_split"].items()]
        return lines

    def curve_metrics(self, scores: dict[str, Any]) -> dict[str, float]:
        metrics = {f"{self.name}/questions": float(scores["num_questions"])}
        if "accuracy" in scores:
            metrics.update({f"{self.name}/{k}": float(scores[k]) for k in ("accuracy", "f1", "yes_ratio")})
            metrics[f"{self.name}/accuracy_lo"], metrics[f"{self.name}/accuracy_hi"] = \
                map(float, scores["interval_95"]["accuracy"])
        return metrics

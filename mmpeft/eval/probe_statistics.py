"""Statistics of a probe's adapted-vs-base results (``mmpeft.eval.text_probes.compare``): closeness of generated
answers to the base's and 95% intervals over the probe's items.

- ``rouge_l_to_base``: per prompt, ROUGE-L F-measure of the adapted answer against the base's.
- ``per_item_values``: the per-item values behind each mean-type metric of a probe result.
- ``probe_intervals``: ``{metric: {"adapted", "base", "delta"}}`` intervals (``mmpeft.eval.intervals``), perplexity over
  its windows, the difference paired item by item.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmpeft.eval.intervals import bootstrap_interval, mean_interval, paired_difference_interval

PROPORTIONS = ("acc", "acc_norm", "exact_match", "contains")  # 0/1 per item: Wilson intervals


def rouge_l_to_base(adapted: dict[str, Any], base: dict[str, Any]) -> list[float]:
    """Per prompt: ROUGE-L F-measure (pycocoevalcap's ``Rouge``, beta 1.2) of the adapted answer against the base's,
    both lower-cased and split on spaces; two empty answers count as equal (1.0)."""
    from pycocoevalcap.rouge.rouge import Rouge

    rouge = Rouge()
    scores = []
    for a, b in zip(adapted["outputs"], base["outputs"], strict=True):
        mine, theirs = " ".join(a["output"].lower().split()), " ".join(b["output"].lower().split())
        if not mine or not theirs:
            scores.append(float(mine == theirs))
            continue
        scores.append(float(rouge.calc_score([mine], [theirs])))
    return scores


def per_item_values(result: dict[str, Any]) -> dict[str, list[float]]:
    """The per-item values behind each mean-type metric of a probe result."""
    items: dict[str, list[float]] = {}
    if "correct" in result and "acc" in result:
        items["acc"], items["acc_norm"] = result["correct"], result["correct_norm"]
    outputs = result.get("outputs")
    if outputs:
        if "correct" in outputs[0]:
            items["exact_match"] = [float(o["correct"]) for o in outputs]
        if "contains" in outputs[0]:
            items["contains"] = [float(o["contains"]) for o in outputs]
        if "mean_chars" in result:
            items["mean_chars"] = [float(len(o["output"])) for o in outputs]
    return items


def probe_intervals(adapted: dict[str, Any], base: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """``{metric: {"adapted": [lo, hi], "base": [lo, hi], "delta": [lo, hi]}}``: 95% intervals over the probe's
    items (perplexity: windows), the difference paired item by item."""
    out: dict[str, dict[str, list[float]]] = {}
    if "windows" in adapted and "windows" in base:
        a_nll, tokens = zip(*adapted["windows"])
        b_nll, b_tokens = zip(*base["windows"])
        if tokens == b_tokens:  # same windows (same tokenizer and corpus): paired
            for metric, f in (("perplexity", np.exp), ("nll_per_token", lambda x: x)):
                out[metric] = {
                    "adapted": list(bootstrap_interval([a_nll, tokens], lambda n, t, f=f: f(n.sum() / t.sum()))),
                    "base": list(bootstrap_interval([b_nll, tokens], lambda n, t, f=f: f(n.sum() / t.sum()))),
                    "delta": list(bootstrap_interval(
                        [a_nll, b_nll, tokens], lambda n, m, t, f=f: f(n.sum() / t.sum()) - f(m.sum() / t.sum()))),
                }
    mine, theirs = per_item_values(adapted), per_item_values(base)
    for metric, values in mine.items():
        if metric in theirs and len(theirs[metric]) == len(values):
            proportion = metric in PROPORTIONS
            out[metric] = {"adapted": list(mean_interval(values, proportion)),
                           "base": list(mean_interval(theirs[metric], proportion)),
                           "delta": list(paired_difference_interval(values, theirs[metric]))}
    if "outputs" in adapted and "outputs" in base:
        out["rougeL_to_base"] = {"adapted": list(mean_interval(rouge_l_to_base(adapted, base)))}
    return out

"""The demo's report: what was measured, with 95% intervals, and nothing else.

Input: the demo's evaluated runs, grouped by arm (``plain``, ``kl``), one run per training seed, and the baselines
answered on the same test items (majority answer per VQA question type, one constant caption).

Every figure carries an interval, and the report says which kind:

- **one seed per arm**: intervals over test items (``mmpeft.eval.intervals``): Wilson / bootstrap for a run's
  score, paired bootstrap over the same items for a difference (run - baseline, kl - plain, adapted - base). They
  say how much the figure would move on other test items, not how much another training seed would move it.
- **several seeds per arm**: the mean over seeds and a t interval over seeds (differences between arms: over the
  per-seed differences, the arms of one seed sharing data order and initialisation).

A target is marked met only when the interval supports it (a lower bound above the baseline, a difference whose
interval excludes zero); corpus-level BLEU and METEOR have no interval and appear without one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmpeft.atomic import save_figure_atomic
from mmpeft.eval.intervals import bootstrap_interval, paired_difference_interval, score_interval
from mmpeft.eval.score_intervals import caption_intervals, paired_caption_difference, paired_vqa_difference

Interval = list[float] | None
Run = dict[str, Any]  # {"scores": eval scores, "predictions": [...]}


def question_types(run: Run) -> dict[str, str]:
    """``{str(question_id): question_type}`` of a run's VQA predictions."""
    return {str(p["eval"]["question_id"]): p["eval"]["question_type"] for p in run["predictions"]
            if p["task"] == "vqa"}


def _vqa_by_type(vqa: dict[str, Any], types: dict[str, str]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for qid in vqa["per_question"]:
        ids.setdefault(types[qid], []).append(qid)
    return ids


def _stratified_mean(vqa: dict[str, Any], by_type: dict[str, list[str]]) -> tuple[float, Interval]:
    """Mean over question types of the per-type accuracy, with a bootstrap interval resampling within types."""
    groups = [np.asarray([vqa["per_question"][q] for q in ids], dtype=float) for ids in by_type.values()]
    point = float(np.mean([g.mean() for g in groups]))
    rng = np.random.default_rng(0)
    draws = [np.mean([rng.choice(g, size=len(g)).mean() for g in groups]) for _ in range(2000)]
    return point, [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def seed_interval(values: list[float]) -> Interval:
    """95% t interval of the mean of per-seed values (None for one seed)."""
    from scipy.stats import t

    if len(values) < 2:
        return None
    arr = np.asarray(values, dtype=float)
    half = float(t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
    return [float(arr.mean()) - half, float(arr.mean()) + half]


def _fmt(value: float | None, interval: Interval, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return text if interval is None else f"{text} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


class DemoReport:
    """Builds ``report.md`` (and the figures behind it) from the demo's runs.

    Args:
        arms: ``{arm: [run per seed]}``; every run evaluated on the same test items.
        baseline: ``{"vqa": VQAResult.to_dict() of the majority answers, "captions": caption_metrics of the constant
            caption, "majority_answers": {type: answer}, "constant_caption": str}`` on the same items.
    """

    def __init__(self, arms: dict[str, list[Run]], baseline: dict[str, Any]):
        self.arms = arms
        self.baseline = baseline
        self.seeds = min(len(r) for r in arms.values())
        first = next(iter(arms.values()))[0]
        self.types = question_types(first)
        self.by_type = _vqa_by_type(first["scores"]["vqa"], self.types)
        self.checks: list[tuple[str, bool]] = []

    # ------------------------------------------------------------------ one figure per arm

    def figure(self, arm: str, value: Callable[[Run], float | None], item_interval: Callable[[Run], Interval]
               ) -> tuple[float | None, Interval]:
        """An arm's figure: the run's value and item interval (one seed) or the seed mean and t interval."""
        runs = self.arms[arm]
        values = [value(r) for r in runs]
        if any(v is None for v in values):
            return None, None
        if len(runs) == 1:
            return values[0], item_interval(runs[0])
        return float(np.mean(values)), seed_interval(values)

    def difference(self, a: str, b: str, value: Callable[[Run], float], paired_items: Callable[[Run, Run], Interval]
                   ) -> tuple[float, Interval]:
        """``a - b``: over items of the one seed (paired), or over seeds of the per-seed differences."""
        diffs = [value(x) - value(y) for x, y in zip(self.arms[a], self.arms[b])]
        if len(diffs) == 1:
            return diffs[0], paired_items(self.arms[a][0], self.arms[b][0])
        return float(np.mean(diffs)), seed_interval(diffs)

    # ------------------------------------------------------------------ sections

    def header(self, seconds: float, quick: bool) -> list[str]:
        kind = ("95% intervals over test items (Wilson for 0/1 scores, percentile bootstrap otherwise; paired for "
                "differences). One training seed per arm: the intervals do not include seed-to-seed variation, "
                "and a run of the same command on another machine or thread count gives somewhat different "
                "numbers (floating-point summation order).") if self.seeds == 1 else (
                f"Mean over {self.seeds} training seeds per arm with a 95% t interval over seeds; differences "
                "between arms over the per-seed differences.")
        n_vqa = len(next(iter(self.arms.values()))[0]["scores"]["vqa"]["per_question"])
        n_img = next(iter(self.arms.values()))[0]["scores"]["captions"]["num_images"]
        return [f"# mmpeft demo ({'quick' if quick else 'full'})", "",
                f"Wall time {seconds / 60:.1f} min. Towers: SmolLM2-135M-Instruct + EfficientNet-Lite0 (ImageNet), "
                f"projector + LoRA in both towers. Test split: {n_vqa} VQA questions, {n_img} captioned images. "
                f"VQA accuracy in % (the official VQA scorer). {kind}", ""]

    def vqa_section(self) -> list[str]:
        base_vqa = self.baseline["vqa"]
        arms = list(self.arms)
        lines = ["## VQA accuracy by question type (test split)", "",
                 "| question type | majority baseline (answer) | " + " | ".join(arms) + " | "
                 + (f"{arms[1]} - {arms[0]} |" if len(arms) == 2 else ""),
                 "| --- | --- |" + " --- |" * (len(arms) + (len(arms) == 2))]
        for qtype, ids in self.by_type.items():
            base_value = base_vqa["per_question_type"][qtype]
            base_iv = score_interval([base_vqa["per_question"][q] / 100 for q in ids])
            cells = []
            for arm in arms:
                value, iv = self.figure(arm, lambda r, t=qtype: r["scores"]["vqa"]["per_question_type"][t],
                                        lambda r, ids=ids: [100 * x for x in score_interval(
                                            [r["scores"]["vqa"]["per_question"][q] / 100 for q in ids])])
                cells.append(_fmt(value, iv))
                gain, gain_iv = self.difference_to_baseline(arm, ids)
                self.checks.append((f"{arm}: '{qtype}' above its majority baseline ({_fmt(gain, gain_iv)} points)",
                                    gain_iv is not None and gain_iv[0] > 0))
            if len(arms) == 2:
                diff, diff_iv = self.difference(
                    arms[1], arms[0], lambda r, t=qtype: r["scores"]["vqa"]["per_question_type"][t],
                    lambda x, y, ids=ids: paired_vqa_difference(x["scores"]["vqa"], y["scores"]["vqa"], ids))
                cells.append(_fmt(diff, diff_iv))
            lines.append(f"| {qtype} | {_fmt(base_value, [100 * x for x in base_iv])} "
                         f"({self.baseline['majority_answers'][qtype]}) | " + " | ".join(cells) + " |")
        base_mean, base_mean_iv = _stratified_mean(base_vqa, self.by_type)
        cells = []
        for arm in arms:
            value, iv = self.figure(arm, lambda r: _stratified_mean(r["scores"]["vqa"], self.by_type)[0],
                                    lambda r: _stratified_mean(r["scores"]["vqa"], self.by_type)[1])
            cells.append(_fmt(value, iv))
            ratio = value / max(base_mean, 1e-9)
            self.checks.append((f"{arm}: mean over types {ratio:.2f}x the majority baseline's (target >= 1.8x; "
                                f"lower bound {iv[0] / max(base_mean, 1e-9):.2f}x)", iv[0] >= 1.8 * base_mean))
        lines.append(f"| **mean over types** | {_fmt(base_mean, base_mean_iv)} | " + " | ".join(cells)
                     + (" | |" if len(arms) == 2 else " |"))
        return lines + [""]

    def difference_to_baseline(self, arm: str, ids: list[str]) -> tuple[float, Interval]:
        base = self.baseline["vqa"]["per_question"]
        diffs = [float(np.mean([r["scores"]["vqa"]["per_question"][q] - base[q] for q in ids]))
                 for r in self.arms[arm]]
        if len(diffs) == 1:
            run = self.arms[arm][0]["scores"]["vqa"]["per_question"]
            return diffs[0], list(paired_difference_interval([run[q] for q in ids], [base[q] for q in ids]))
        return float(np.mean(diffs)), seed_interval(diffs)

    def caption_section(self) -> list[str]:
        const = self.baseline["captions"]
        const_iv = caption_intervals(const)
        arms = list(self.arms)
        tokenizer = next(iter(self.arms.values()))[0]["scores"]["captions"]["tokenizer"]
        intervals = ("CIDEr (pycocoevalcap's CIDEr-D) and ROUGE_L are means over images and get intervals over "
                     "images; Bleu_4 and METEOR are corpus statistics and get none." if self.seeds == 1 else
                     "Intervals over seeds for every metric; the constant caption's (CIDEr, ROUGE_L) over images.")
        lines = ["## Captions (test split)", "",
                 f"pycocoevalcap metrics after its PTB tokenisation (`{tokenizer}`). {intervals}", "",
                 "| metric | constant caption | " + " | ".join(arms) + " |", "| --- | --- |" + " --- |" * len(arms)]
        for metric, digits in (("CIDEr", 3), ("ROUGE_L", 3), ("Bleu_4", 3), ("METEOR", 3)):
            cells = []
            for arm in arms:
                value, iv = self.figure(arm, lambda r, m=metric: r["scores"]["captions"].get(m),
                                        lambda r, m=metric: self._caption_iv(r, m))
                cells.append(_fmt(value, iv, digits))
            base_iv = const_iv.get(metric)
            base_cell = _fmt(const.get(metric), base_iv if isinstance(base_iv, list) else None, digits)
            lines.append(f"| {metric} | {base_cell} | " + " | ".join(cells) + " |")
        for arm in arms:
            gain, gain_iv = self.difference_vs_constant(arm)
            self.checks.append((f"{arm}: CIDEr above the constant caption's by {_fmt(gain, gain_iv, 3)} (target: "
                                f"at least 2x the constant's {const['CIDEr']:.3f} above it, i.e. >= 3x)",
                                gain_iv is not None and gain_iv[0] >= 2 * const["CIDEr"]))
        return lines + ["", f"Constant caption: \"{self.baseline['constant_caption']}\".", ""]

    @staticmethod
    def _caption_iv(run: Run, metric: str) -> Interval:
        iv = caption_intervals(run["scores"]["captions"]).get(metric)
        return iv if isinstance(iv, list) else None

    def difference_vs_constant(self, arm: str) -> tuple[float, Interval]:
        const = self.baseline["captions"]
        diffs = [r["scores"]["captions"]["CIDEr"] - const["CIDEr"] for r in self.arms[arm]]
        if len(diffs) == 1:
            return diffs[0], paired_caption_difference(self.arms[arm][0]["scores"]["captions"], const, "CIDEr")
        return float(np.mean(diffs)), seed_interval(diffs)

    def text_section(self) -> list[str]:
        arms = list(self.arms)
        first = self.arms[arms[0]][0]["scores"]["text_probes"]
        lines = ["## Text skills: adapted vs base", "",
                 "Each probe on the adapted model and on its base (the same weights, adapters off), with the change "
                 "(adapted - base). Perplexity intervals resample the probe's windows; the others its items.", "",
                 "| probe | metric | base | " + " | ".join(f"{a}: change" for a in arms) + " |",
                 "| --- | --- | --- |" + " --- |" * len(arms)]
        for probe, result in first.items():
            for metric in result["delta"]:
                base_value = result["base"][metric]
                base_iv = result.get("interval_95", {}).get(metric, {}).get("base")
                cells = []
                for arm in arms:
                    value, iv = self.figure(arm, lambda r, p=probe, m=metric: r["scores"]["text_probes"][p]["delta"][m],
                                            lambda r, p=probe, m=metric: r["scores"]["text_probes"][p].get(
                                                "interval_95", {}).get(m, {}).get("delta"))
                    cells.append(_fmt(value, iv, 3))
                lines.append(f"| {probe} | {metric} | {_fmt(base_value, base_iv, 3)} | " + " | ".join(cells) + " |")
            if "rougeL_to_base" in result["adapted"]:
                cells = [_fmt(*self.figure(arm, lambda r, p=probe: r["scores"]["text_probes"][p]["adapted"][
                    "rougeL_to_base"], lambda r, p=probe: r["scores"]["text_probes"][p]["interval_95"].get(
                        "rougeL_to_base", {}).get("adapted")), 3) for arm in arms]
                lines.append(f"| {probe} | ROUGE-L of the answer to the base's answer (1 = the base's) | 1 | "
                             + " | ".join(cells) + " |")
        if {"plain", "kl"} <= set(self.arms):
            self._arm_checks()
        return lines + [""]

    def _arm_checks(self) -> None:
        """kl vs plain on the text skills the guard is meant to keep."""
        def prose_ppl(r: Run) -> float:
            return r["scores"]["text_probes"]["ppl_prose"]["adapted"]["perplexity"]

        def ppl_items(x: Run, y: Run) -> Interval:
            a, t = zip(*x["scores"]["text_probes"]["ppl_prose"]["adapted"]["windows"])
            b, _ = zip(*y["scores"]["text_probes"]["ppl_prose"]["adapted"]["windows"])
            return list(bootstrap_interval([a, b, t], lambda n, m, tok: math.exp(n.sum() / tok.sum())
                                           - math.exp(m.sum() / tok.sum())))

        diff, iv = self.difference("kl", "plain", prose_ppl, ppl_items)
        self.checks.append((f"kl keeps prose perplexity closer to the base than plain: kl - plain "
                            f"{_fmt(diff, iv, 3)}", iv is not None and iv[1] < 0))

        def closeness(r: Run) -> float:
            return r["scores"]["text_probes"]["chat"]["adapted"]["rougeL_to_base"]

        def closeness_items(x: Run, y: Run) -> Interval:
            from mmpeft.eval.probe_statistics import rouge_l_to_base

            def per_prompt(r: Run) -> list[float]:
                probe = r["scores"]["text_probes"]["chat"]
                return rouge_l_to_base(probe["adapted"], probe["base"])
            return list(paired_difference_interval(per_prompt(x), per_prompt(y)))

        diff, iv = self.difference("kl", "plain", closeness, closeness_items)
        self.checks.append((f"kl's chat answers stay closer to the base's than plain's (ROUGE-L, kl - plain "
                            f"{_fmt(diff, iv, 3)})", iv is not None and iv[0] > 0))

    def chat_examples(self) -> list[str]:
        lines = ["## Chat answers (first 4 prompts; seed 0 of each arm)", ""]
        first = next(iter(self.arms.values()))[0]["scores"]["text_probes"]["chat"]
        for i, item in enumerate(first["base"]["outputs"][:4]):
            lines.append(f"- base: {item['output']!r}")
            for arm, runs in self.arms.items():
                answer = runs[0]["scores"]["text_probes"]["chat"]["adapted"]["outputs"][i]["output"]
                lines.append(f"  - {arm}: {answer!r}")
        return lines + [""]

    def render(self, seconds: float, quick: bool) -> str:
        self.checks = []
        lines = self.header(seconds, quick) + self.vqa_section() + self.caption_section() + self.text_section()
        lines += self.chat_examples()
        lines += ["## Targets", "", "Met only where the interval supports it."
                  + (" One training seed: a met comparison between arms holds for these test items and this seed."
                     if self.seeds == 1 else ""), ""]
        lines += [f"- [{'x' if ok else ' '}] {text}" for text, ok in self.checks]
        lines += ["", "Plots: `vl_vs_forgetting.png` (VQA accuracy vs prose perplexity change, 95% intervals, the "
                  "majority baseline and the base LLM marked), `curves.png` (probes over training).", ""]
        return "\n".join(lines)

    # ------------------------------------------------------------------ plot

    def plot(self, out: Path) -> Path:
        """VQA accuracy (mean over types) against prose perplexity change, every run with its intervals; axes span
        the majority baseline and zero change (the base LLM)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        base_mean, base_iv = _stratified_mean(self.baseline["vqa"], self.by_type)
        ax.axhspan(base_iv[0], base_iv[1], color="grey", alpha=0.2)
        ax.axhline(base_mean, color="grey", lw=1, label="majority-answer baseline (95% interval)")
        ax.axvline(0, color="black", lw=0.8, ls=":", label="base LLM (no perplexity change)")
        xs, ys = [0.0], [base_mean, *base_iv]
        for i, (arm, runs) in enumerate(self.arms.items()):
            for seed, run in enumerate(runs):
                probe = run["scores"]["text_probes"]["ppl_prose"]
                base_ppl = probe["base"]["perplexity"]
                x = 100 * probe["delta"]["perplexity"] / base_ppl
                x_iv = [100 * v / base_ppl for v in probe["interval_95"]["perplexity"]["delta"]]
                y, y_iv = _stratified_mean(run["scores"]["vqa"], self.by_type)
                ax.errorbar(x, y, xerr=[[x - x_iv[0]], [x_iv[1] - x]], yerr=[[y - y_iv[0]], [y_iv[1] - y]],
                            fmt="o", color=f"C{i}", capsize=3, label=arm if seed == 0 else None)
                xs += x_iv
                ys += y_iv
        ax.set_xlim(min(xs) - 2, max(xs) + 2)
        ax.set_ylim(0, min(100, max(ys) + 10))
        ax.set_xlabel("prose perplexity change vs base LLM (%)   <- less forgetting")
        ax.set_ylabel("VQA accuracy, mean over question types (%)")
        ax.set_title(f"VL skill vs text forgetting ({self.seeds} seed{'s' * (self.seeds > 1)} per arm; 95% intervals)",
                     fontsize=10)
        ax.legend(fontsize=8, loc="best", framealpha=0.8)
        fig.tight_layout()
        path = out / "vl_vs_forgetting.png"
        save_figure_atomic(fig, path, dpi=120)
        plt.close(fig)
        return path

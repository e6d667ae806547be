"""The demo report on fabricated runs (no model): intervals everywhere, targets only where intervals support them."""

import json
import math

import pytest

from mmpeft.apps.demo_report import DemoReport, seed_interval
from mmpeft.eval.probe_statistics import probe_intervals, rouge_l_to_base
from mmpeft.eval.vqa import vqa_accuracy

TYPES = ("what color is the", "how many")
QUESTIONS = [(f"q{i}", TYPES[i % 2]) for i in range(40)]


def jsonish(obj):
    return json.loads(json.dumps(obj))


def vqa_scores(correct):
    refs = {q: {"answers": ["yes"] * 10, "question_type": t, "answer_type": "other"} for q, t in QUESTIONS}
    preds = {q: "yes" if correct(i) else "no" for i, (q, _) in enumerate(QUESTIONS)}
    return jsonish(vqa_accuracy(preds, refs).to_dict())


def captions(cider):
    return {"CIDEr": sum(cider) / len(cider), "ROUGE_L": 0.5, "Bleu_4": 0.2, "METEOR": None, "tokenizer": "ptb",
            "num_images": len(cider), "per_image": {str(i): {"CIDEr": c, "ROUGE_L": 0.5} for i, c in enumerate(cider)}}


def probes(nll_scale, answers):
    windows = [[10.0 * nll_scale + i % 3, 5] for i in range(12)]
    base_windows = [[10.0 + i % 3, 5] for i in range(12)]
    ppl = lambda w: math.exp(sum(n for n, _ in w) / sum(t for _, t in w))  # noqa: E731
    adapted = {"perplexity": ppl(windows), "windows": windows, "tokens": 60}
    base = {"perplexity": ppl(base_windows), "windows": base_windows, "tokens": 60}
    chat_base = {"mean_chars": 21.0, "outputs": [{"output": "the sky is blue today"}] * 6}
    chat = {"mean_chars": sum(map(len, answers)) / len(answers), "outputs": [{"output": a} for a in answers]}
    chat["rougeL_to_base"] = sum(rouge_l_to_base(chat, chat_base)) / 6
    return {
        "ppl_prose": {"kind": "perplexity", "adapted": adapted, "base": base,
                      "delta": {"perplexity": adapted["perplexity"] - base["perplexity"]},
                      "interval_95": probe_intervals(adapted, base)},
        "chat": {"kind": "chat_style", "adapted": chat, "base": chat_base,
                 "delta": {"mean_chars": chat["mean_chars"] - chat_base["mean_chars"]},
                 "interval_95": probe_intervals(chat, chat_base)},
    }


def run(correct, cider, nll_scale, answers):
    predictions = [{"task": "vqa", "eval": {"question_id": q, "question_type": t}} for q, t in QUESTIONS]
    return {"scores": {"vqa": vqa_scores(correct), "captions": captions(cider),
                       "text_probes": probes(nll_scale, answers)}, "predictions": predictions}


BASELINE = {"vqa": vqa_scores(lambda i: i % 4 == 0), "captions": captions([0.1] * 20),
            "majority_answers": dict.fromkeys(TYPES, "yes"), "constant_caption": "a thing"}


def test_one_seed_report_has_item_intervals_and_honest_targets(tmp_path):
    plain = run(lambda i: i % 5 != 0, [1.0 + 0.1 * (i % 3) for i in range(20)], 1.10, ["blue"] * 6)
    kl = run(lambda i: i % 5 != 0, [0.2 + 0.1 * (i % 3) for i in range(20)], 1.02, ["the sky is blue"] * 6)
    report = DemoReport({"plain": [plain], "kl": [kl]}, BASELINE)
    text = report.render(60.0, quick=False)
    assert "95% intervals over test items" in text and "One training seed" in text
    checks = dict(report.checks)
    assert checks["plain: 'how many' above its majority baseline (80.0 [65.0, 95.0] points)"]
    # 30 points above the baseline, but the paired interval reaches 0: not met
    assert not checks["plain: 'what color is the' above its majority baseline (30.0 [0.0, 60.0] points)"]
    # identical VQA answers in both arms: the kl - plain column is exactly zero with a zero-width interval
    assert "| what color is the | 50.0 [29.9, 70.1] (yes) | 80.0 [58.4, 91.9] | 80.0 [58.4, 91.9] | " \
           "0.0 [0.0, 0.0] |" in text
    assert "| **mean over types** | 25.0 [15.0, 35.0] | 80.0 [67.5, 92.5] |" in text
    assert "| Bleu_4 | 0.200 | 0.200 | 0.200 |" in text  # corpus statistics: no interval shown
    caption_checks = [ok for name, ok in report.checks if "CIDEr above the constant" in name]
    assert caption_checks == [True, False]  # kl's CIDEr (0.3) is not 3x the constant's (0.1) at its lower bound
    kept = [ok for name, ok in report.checks if name.startswith("kl keeps prose perplexity")]
    closer = [ok for name, ok in report.checks if name.startswith("kl's chat answers stay closer")]
    assert kept == [True] and closer == [True]
    assert report.plot(tmp_path).is_file()


def test_several_seeds_use_t_intervals_over_seeds():
    seeds = [run(lambda i, s=s: (i + s) % 5 != 0, [1.0 + 0.1 * s] * 20, 1.1 + 0.01 * s, ["blue"] * 6)
             for s in range(3)]
    report = DemoReport({"plain": seeds, "kl": seeds}, BASELINE)
    text = report.render(60.0, quick=False)
    assert "Mean over 3 training seeds per arm" in text
    cider = [1.0, 1.1, 1.2]
    low, high = seed_interval(cider)
    assert f"1.100 [{low:.3f}, {high:.3f}]" in text
    assert low == pytest.approx(1.1 - 4.302652729911275 * 0.1 / math.sqrt(3))
    # the same runs in both arms: every kl - plain difference is 0, so no comparison target is met
    assert not any(ok for name, ok in report.checks if name.startswith("kl "))
    assert seed_interval([1.0]) is None

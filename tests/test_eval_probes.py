import json
import math
import os

import pytest
import torch
from conftest import build_vlm

from mmpeft.adapters import AdapterSpec
from mmpeft.eval.text_probes import ExactMatchProbe, MultipleChoiceProbe, PerplexityProbe, compare

MC_ITEMS = [
    {"id": f"mc{i}", "query": q, "choices": c, "gold": g}
    for i, (q, c, g) in enumerate([
        ("The capital of France is", ["Paris", "Rome", "a big red circle", "two"], 0),
        ("What color is the sky?", ["blue", "green", "the quick brown fox", "yes"], 0),
        ("Two plus three is", ["five", "eleven", "square", "no"], 0),
        ("Question: how many objects are there?\nAnswer:", ["two", "three objects on the left", "red"], 1),
        ("The quick brown fox jumps over the lazy ", ["dog", "circle", "purple"], 0),
        ("Is there a green triangle?", ["no", "yes", "maybe", "top left"], 1),
    ])
]


def write_jsonl(path, items):
    path.write_text("\n".join(json.dumps(x) for x in items) + "\n")
    return path


@pytest.fixture
def probe_files(tmp_path):
    mc = write_jsonl(tmp_path / "mc.jsonl", MC_ITEMS)
    ppl = write_jsonl(tmp_path / "ppl.jsonl", [{"text": "The quick brown fox jumps over the lazy dog. " * 6},
                                                {"text": "What color is the circle? red. How many? two. " * 5}])
    em = write_jsonl(tmp_path / "em.jsonl", [{"id": "e1", "prompt": "What is 2 plus 3?", "answers": ["5", "five"]},
                                              {"id": "e2", "prompt": "Say yes.", "answers": ["yes"]}])
    return mc, ppl, em


def probes(files):
    mc, ppl, em = files
    return [MultipleChoiceProbe("mc", str(mc)), PerplexityProbe("ppl", str(ppl), window=32),
            ExactMatchProbe("em", str(em), max_new_tokens=4)]


def test_adapted_equals_base_at_initialisation(tiny, probe_files):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora"), soft_prompt_tokens=0)
    results = compare(vlm, probes(probe_files), progress=False)
    for name, r in results.items():
        assert all(v == 0 for v in r["delta"].values()), (name, r["delta"])
        adapted = dict(r["adapted"])
        if "outputs" in adapted:  # generation probes also report closeness to the base: complete here
            assert adapted.pop("rougeL_to_base") == 1.0
        assert adapted == r["base"]
        for metric, intervals in r["interval_95"].items():  # identical models: every paired difference is 0
            if "delta" in intervals:
                assert intervals["delta"] == [0.0, 0.0], (name, metric)
            assert intervals["adapted"][0] <= intervals["adapted"][1]
    assert results["ppl"]["adapted"]["tokens"] > 60 and results["mc"]["adapted"]["n"] == 6
    assert set(results["ppl"]["interval_95"]) == {"perplexity", "nll_per_token"}
    assert set(results["mc"]["interval_95"]) == {"acc", "acc_norm"}
    assert {"exact_match", "contains", "rougeL_to_base"} <= set(results["em"]["interval_95"])


def test_probes_move_after_a_perturbation(tiny, probe_files):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    with torch.no_grad():
        for n, p in vlm.llm.named_parameters():
            if "lora_B" in n:
                p.mul_(20)
    results = compare(vlm, probes(probe_files), progress=False)
    assert results["ppl"]["delta"]["perplexity"] != 0
    low, high = results["ppl"]["interval_95"]["perplexity"]["delta"]
    assert low <= results["ppl"]["delta"]["perplexity"] <= high and low < high
    low, high = results["ppl"]["interval_95"]["perplexity"]["adapted"]
    assert low <= results["ppl"]["adapted"]["perplexity"] <= high
    # the per-window record reproduces the corpus figure
    nll, tokens = map(sum, zip(*results["ppl"]["adapted"]["windows"]))
    assert math.isclose(math.exp(nll / tokens), results["ppl"]["adapted"]["perplexity"], rel_tol=1e-9)
    assert results["ppl"]["adapted"]["nll_per_token"] != results["ppl"]["base"]["nll_per_token"]
    base_cache = {}
    compare(vlm, probes(probe_files)[:1], base_cache=base_cache, progress=False)
    assert "mc" in base_cache


def test_lm_eval_bridge_equals_own_multiple_choice_probe(tiny, tmp_path):
    pytest.importorskip("lm_eval")
    from mmpeft.eval.lm_eval_bridge import lm_eval_compare

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = write_jsonl(tasks / "toy_mc.jsonl", MC_ITEMS)
    (tasks / "toy_mc.yaml").write_text(
        "task: toy_mc\ndataset_path: json\n"
        f"dataset_kwargs: {{data_files: {{test: {data}}}}}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{query}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{gold}}"\n'
        "metric_list: [{metric: acc}, {metric: acc_norm}]\n")
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    with torch.no_grad():
        for n, p in vlm.llm.named_parameters():
            if "lora_B" in n:
                p.mul_(30)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        bridge = lm_eval_compare(vlm, ["toy_mc"], include_path=str(tasks), batch_size=4)["toy_mc"]
    finally:
        os.chdir(cwd)
    own = compare(vlm, [MultipleChoiceProbe("toy_mc", str(data))], progress=False)["toy_mc"]
    assert bridge["adapted"] != bridge["base"], "the perturbation must make adapted and base differ"
    for column in ("adapted", "base"):
        assert bridge[column]["acc"] == own[column]["acc"], column
        assert bridge[column]["acc_norm"] == own[column]["acc_norm"], column


def test_probe_file_in_the_wrong_schema_names_file_line_and_id(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [MC_ITEMS[0], {"id": "x9", "question": "no query", "choices": []}])
    with pytest.raises(ValueError, match=r"bad.jsonl:2 \(id 'x9'\): field 'query' missing"):
        MultipleChoiceProbe("bad", str(bad))
    wrong_gold = write_jsonl(tmp_path / "gold.jsonl", [{**MC_ITEMS[0], "gold": 7}])
    with pytest.raises(ValueError, match="item 'mc0' has gold=7 outside its 4 choices"):
        MultipleChoiceProbe("gold", str(wrong_gold))
    with pytest.raises(FileNotFoundError, match="probe file"):
        PerplexityProbe("missing", str(tmp_path / "none.jsonl"))

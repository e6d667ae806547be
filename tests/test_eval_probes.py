import json
import math
import os

import pytest
import torch
from conftest import build_vlm
from peft.tuners.tuners_utils import BaseTunerLayer

from mmpeft.adapters import AdapterSpec
from mmpeft.checkpoint import load_pretrained, save_trainable
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.input_format import input_format_of
from mmpeft.eval.text_probes import ChatStyleProbe, ExactMatchProbe, MultipleChoiceProbe, PerplexityProbe, compare

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


# ---------------------------------------------------------------- generation probes prompt in the trained format

PROMPTS = {"What is 2 plus 3?": "em", "Say yes.": "em", "Tell me about circles.": "chat"}


def recorded_generation(vlm):
    """Wrap ``vlm.generate_ids``: returns the list of (prompt ids, adapters off?) it is called with."""
    calls, generate = [], vlm.generate_ids

    def record(prompts, **kwargs):
        off = any(m.disable_adapters for m in vlm.modules() if isinstance(m, BaseTunerLayer))
        calls.extend((list(p), off) for p in prompts)
        return generate(prompts, **kwargs)

    vlm.generate_ids = record
    return calls


@pytest.mark.parametrize("use_template, system_prompt, expected", [
    (None, "Answer in one word.", "<|system|>\nAnswer in one word.</s>\n<|user|>\n{}</s>\n<|assistant|>\n"),
    (False, "", "<s>\n\nUSER: {}\nASSISTANT:"),  # the fallback, with the empty system turn the run trained with
])
def test_generation_probes_prompt_in_the_saved_format_same_ids_for_base(tiny, tmp_path, probe_files, use_template,
                                                                        system_prompt, expected):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    tok = vlm.llm.tokenizer
    vlm.input_format = input_format_of(ChatRenderer(tok, vlm.llm.image_token, vlm.num_image_tokens,
                                                    system_prompt=system_prompt, use_chat_template=use_template))
    save_trainable(vlm, tmp_path / "ckpt")
    loaded = load_pretrained(tmp_path / "ckpt")
    # the saved template, not the tokenizer file's, renders the prompts
    loaded.llm.tokenizer.chat_template = "{{ 'a changed tokenizer template must not change probe prompts' }}"
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"id": "c1", "prompt": "Tell me about circles."}])
    calls = recorded_generation(loaded)
    results = compare(loaded, [ExactMatchProbe("em", str(probe_files[2]), max_new_tokens=3),
                               ChatStyleProbe("chat", str(chat), max_new_tokens=3)], progress=False)
    adapted = [ids for ids, off in calls if not off]
    base = [ids for ids, off in calls if off]
    assert len(adapted) == 3 and base == adapted, "adapters off must be the only difference between the passes"
    assert [tok.decode(ids) for ids in adapted] == [expected.format(p) for p in PROMPTS]
    assert set(results) == {"em", "chat"}


def test_model_without_saved_format_uses_the_tokenizer_default_and_plain_text_stays_plain(tiny, probe_files, caplog):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    assert vlm.input_format is None
    calls = recorded_generation(vlm)
    compare(vlm, [ExactMatchProbe("em", str(probe_files[2]), max_new_tokens=2),
                  ExactMatchProbe("plain", str(probe_files[2]), use_chat_template=False, max_new_tokens=2)],
            progress=False)
    assert "no saved input format" in caplog.text
    prompts = [p for p, kind in PROMPTS.items() if kind == "em"]
    default = [f"<|user|>\n{p}</s>\n<|assistant|>\n" for p in prompts]  # the tokenizer's template as it ships
    tok = vlm.llm.tokenizer
    plain = [tok(p)["input_ids"] for p in prompts]
    assert [ids for ids, _ in calls] == [tok(t, add_special_tokens=False)["input_ids"] for t in default] * 2 + plain * 2


def test_cached_base_is_reused_only_for_the_same_prompts(tiny, probe_files):
    """A base cache shared between runs (``mmpeft demo``, ``evaluate(base_cache=...)``) must not pair one run's
    answers with base answers to prompts in another format."""
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    renderer = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens, system_prompt="Be brief.")
    vlm.input_format = input_format_of(renderer)
    probe, cache = ExactMatchProbe("em", str(probe_files[2]), max_new_tokens=2), {}
    calls = recorded_generation(vlm)
    compare(vlm, [probe], base_cache=cache, progress=False)
    assert [off for _, off in calls] == [False, False, True, True]
    calls.clear()
    compare(vlm, [probe], base_cache=cache, progress=False)
    assert [off for _, off in calls] == [False, False], "same prompts: the cached base is reused"
    calls.clear()
    vlm.input_format = input_format_of(ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens,
                                                    system_prompt=""))
    results = compare(vlm, [probe], base_cache=cache, progress=False)["em"]
    assert [off for _, off in calls] == [False, False, True, True], "other prompts: the base runs again"
    assert [ids for ids, off in calls if off] == [ids for ids, off in calls if not off]
    assert results["base"]["prompts_sha256"] == results["adapted"]["prompts_sha256"] == cache["em"]["prompts_sha256"]


def test_generation_probe_refuses_an_image_marker(tmp_path):
    path = write_jsonl(tmp_path / "img.jsonl", [{"id": "q7", "prompt": "<image>\nWhat is this?", "answers": ["x"]}])
    with pytest.raises(ValueError, match=r"img.jsonl: item 'q7' has <image> in its prompt"):
        ExactMatchProbe("img", str(path))


def test_forgetting_probes_vqa_logs_missing_rows(tiny, tmp_path):
    """The bug this guards: the training-time VQA probe scored what it could read and logged nothing about the
    rows it skipped (a corrupt image, an over-long prompt) or lost (a cut shard)."""
    from types import SimpleNamespace

    from shard_damage import damage, image_sample, write_dir

    from mmpeft.callbacks.probes import ForgettingProbes

    def sample(i):
        prepared = image_sample(i, words=40 if i == 2 else 0)  # 000002: a prompt over max_length 128
        if i == 1:
            prepared.files = {k: v[:40] for k, v in prepared.files.items()}  # 000001: a corrupt image
        return prepared

    urls = write_dir(tmp_path / "vqa", 12, 4, sample)
    damage(urls[1], "cut_at_boundary", "000006")  # 000006, 000007: lost
    vlm = build_vlm(tiny)
    vlm.input_format = input_format_of(ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens,
                                                    max_length=128))
    logged = []
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.append((step, metrics)))
    trainer = SimpleNamespace(global_step=3, is_global_zero=True, loggers=[logger])
    ForgettingProbes([], vqa_shards=str(tmp_path / "vqa"), vqa_limit=None, max_new_tokens=2)._run(
        trainer, SimpleNamespace(vlm=vlm))
    [(step, metrics)] = logged
    assert step == 3 and metrics["probe/vqa/questions"] == 8 and metrics["probe/vqa/missing"] == 4
    assert metrics["probe/vqa/damaged_shards"] == 0 and 0 <= metrics["probe/vqa/overall"] <= 100


def test_a_probe_prompt_longer_than_max_length_names_the_probe_file_and_item(tiny, tmp_path):
    from mmpeft.data.input_format import renderer_for

    path = write_jsonl(tmp_path / "em.jsonl", [{"id": "short", "prompt": "Hi?", "answers": ["hi"]},
                                              {"id": "long", "prompt": "word " * 300, "answers": ["x"]}])
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora"), soft_prompt_tokens=0)
    renderer = renderer_for(vlm, max_length=64)
    with pytest.raises(ValueError, match=r"probe 'em': .*em.jsonl item 'long': .*max_length"):
        ExactMatchProbe("em", str(path)).prompt_ids(vlm, renderer)

import json
import shutil

import pytest
import torch
import yaml
from conftest import build_vlm
from data_fixtures import coco_fixture
from shard_damage import damage, image_sample, text_sample, write_dir
from test_cli import fit_args
from test_data_prep import script

from mmpeft.adapters import AdapterSpec
from mmpeft.apps.main import cli_main
from mmpeft.apps.tiny import save_tiny_towers
from mmpeft.checkpoint import export, load_pretrained, save_trainable
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.input_format import input_format_of, renderer_for
from mmpeft.data.integrity import PartialData
from mmpeft.eval.loop import evaluate
from mmpeft.eval.summary import summary
from mmpeft.eval.tasks import VisionDriftTask, VQATask
from mmpeft.eval.vision_probe import linear_cka, linear_probe_accuracy, vision_drift


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    return save_tiny_towers(tmp_path_factory.mktemp("tiny_eval"))


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert abs(linear_cka(x, x @ q * 3.0) - 1.0) < 1e-9, "invariant to rotation and scale"
    assert linear_cka(x, torch.randn(50, 8, generator=g)) < 0.5


def test_linear_probe_separates_separable_classes():
    g = torch.Generator().manual_seed(0)
    labels = [i % 3 for i in range(60)]
    feats = torch.randn(60, 4, generator=g) * 0.1 + torch.nn.functional.one_hot(torch.tensor(labels), 4).double() * 3
    assert linear_probe_accuracy(feats, labels) == 1.0


def test_vision_drift_zero_at_init_then_moves(tiny):
    vlm = build_vlm(tiny, vision="timm_vit", vision_spec=AdapterSpec("lora"))
    pixels = [torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    labels = ["a", "b", "c"] * 4
    drift = vision_drift(vlm, pixels, labels)
    assert drift["cka"] == pytest.approx(1.0, abs=1e-9) and drift["cosine_tokens"] == pytest.approx(1.0, abs=1e-6)
    assert drift["linear_probe"]["delta"] == 0.0
    with torch.no_grad():
        for n, p in vlm.vision.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    moved = vision_drift(vlm, pixels)
    assert moved["cosine_tokens"] < 0.999 and moved["cka"] < 1.0


def test_train_with_probe_curves_then_eval_and_report(towers, tmp_path):
    probes = tmp_path / "mc.jsonl"
    probes.write_text("\n".join(json.dumps({"id": f"q{i}", "query": f"What is {i} plus 1?", "choices": [str(i + 1),
                                            str(i + 5)], "gold": 0}) for i in range(5)) + "\n")
    ppl = tmp_path / "ppl.jsonl"
    ppl.write_text(json.dumps({"text": "What color is the picture? red. What is 2 plus 3? 5. " * 8}) + "\n")
    ann, images, _ = coco_fixture(tmp_path / "coco")
    caption_dir = tmp_path / "coco_shards"
    script("convert_coco_captions").main(["--annotations", str(ann), "--image-root", str(images),
                                          "--out", str(caption_dir)])
    runs = []
    for name, guard in (("plain", []), ("kl", ["--config", "configs/guard/kl_text.yaml"])):
        run = tmp_path / name
        cli_main(fit_args(
            towers, run, "--config", "configs/peft/lora_both.yaml", *guard, "--trainer.max_steps=4",
            "--trainer.callbacks+=mmpeft.callbacks.probes.ForgettingProbes", "--trainer.callbacks.every_n_steps=2",
            "--trainer.callbacks.probes+=mmpeft.eval.text_probes.PerplexityProbe",
            "--trainer.callbacks.probes.name=ppl", f"--trainer.callbacks.probes.path={ppl}",
            "--trainer.callbacks.probes.window=32",
            f"--trainer.callbacks.vqa_shards={towers / 'data' / 'val'}", "--trainer.callbacks.vqa_limit=8",
        ))
        header = (run / "metrics.csv").read_text().splitlines()[0]
        assert "probe/ppl/perplexity_delta_pct" in header and "probe/vqa/overall" in header
        runs.append(run)
        scores = cli_main(["eval", "--checkpoint", str(run / "checkpoints" / "last.ckpt"),
                           "--vqa", str(towers / "data" / "val"), "--captions", str(caption_dir),
                           "--mc", f"arith={probes}", "--ppl", f"ppl={ppl}", "--vision", str(towers / "data" / "val"),
                           "--max-new-tokens", "4", "--caption-tokenizer", "python" if name == "plain" else "ptb"])
        assert scores["step"] == 4 and scores["vqa"]["num_questions"] == 16
        assert 0 <= scores["vqa"]["overall"] <= 100 and scores["captions"]["CIDEr"] >= 0
        assert scores["captions"]["tokenizer"] == ("python" if name == "plain" else "ptb")
        assert set(scores["text_probes"]) == {"arith", "ppl"} and scores["vision"]["images"] == 16
        assert (run / "eval" / "last.predictions.jsonl").is_file()
        saved = json.loads((run / "checkpoints" / "last.ckpt" / "mmpeft_config.json").read_text())
        assert saved["input_format"]["max_length"] == 128, "the data config's format (configs/model/tiny.yaml)"
    result = cli_main(["report", *map(str, runs), "--out", str(tmp_path / "report")])
    names = {p.name for p in result["files"]}
    assert {"report.json", "report.md", "vl_vs_forgetting.png", "curves.png"} <= names
    table = (tmp_path / "report" / "report.md").read_text()
    assert "| plain | 4 |" in table and "| kl | 4 |" in table


def test_report_says_why_a_row_or_the_curves_are_missing(tmp_path, capsys):
    (tmp_path / "trained_only").mkdir()
    result = cli_main(["report", str(tmp_path / "trained_only"), "--out", str(tmp_path / "report")])
    assert {p.name for p in result["files"]} == {"report.json", "report.md"}
    printed = capsys.readouterr().out
    assert f"{tmp_path / 'trained_only'}: no eval/*.json yet (mmpeft eval --checkpoint" in printed
    assert "no curves.png: no run logged in-loop probes" in printed


def test_eval_refuses_vqa_records_without_answers(towers, tmp_path):
    from mmpeft.eval.tasks.vqa import score_vqa

    with pytest.raises(ValueError, match="VQA record 'x1' has no eval.answers"):
        score_vqa([{"id": "x1", "prediction": "red", "eval": {}}])


def _predictions(out):
    return [(p["id"], p["prediction"]) for p in map(json.loads, open(out.with_suffix(".predictions.jsonl")))]


def test_eval_predictions_identical_in_run_dir_copy_and_export(tiny, towers, tmp_path):
    """The bug this guards: eval of a moved or exported checkpoint rendered prompts without the trained system
    prompt (it read <run>/config.yaml), and scored worse."""
    system = "You name colours. Answer with one word."
    vlm = build_vlm(tiny, vision_spec=AdapterSpec("lora", init_weights=False),
                    llm_spec=AdapterSpec("lora", init_weights=False))
    vlm.input_format = input_format_of(ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens,
                                                    max_length=128, system_prompt=system))
    run_ckpt = save_trainable(vlm, tmp_path / "run" / "checkpoints" / "last.ckpt", extra={"global_step": 5})
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"data": {"system_prompt": system}}))
    copied = shutil.copytree(run_ckpt, tmp_path / "elsewhere" / "last.ckpt")
    exported = export(vlm, tmp_path / "export")
    outs = {}
    for name, directory in (("run", run_ckpt), ("copy", copied), ("export", exported)):
        outs[name] = tmp_path / "eval" / name
        cli_main(["eval", "--checkpoint", str(directory), "--vqa", str(towers / "data" / "val"),
                  "--max-new-tokens", "4", "--out", str(outs[name])])
        renderer = renderer_for(load_pretrained(directory))
        prompt = renderer.render_prompt([{"role": "user", "content": "<image>\nWhat color is the picture?"}])
        assert system in renderer.tokenizer.decode(prompt), f"{name}: the trained system prompt is in the prompt"
    reference = _predictions(outs["run"])
    assert len(reference) == 16
    assert _predictions(outs["copy"]) == reference and _predictions(outs["export"]) == reference
    # the comparison can fail: another system prompt changes what this model answers
    cli_main(["eval", "--checkpoint", str(copied), "--vqa", str(towers / "data" / "val"), "--max-new-tokens", "4",
              "--system-prompt", "Describe the picture at length.", "--out", str(tmp_path / "eval" / "other")])
    assert _predictions(tmp_path / "eval" / "other") != reference


def _vqa_shards_with_a_loss_and_a_skip(directory):
    """12 VQA samples in 3 shards (writer + manifest); sample 000001 has a broken image (skipped at eval), shard 1
    is cut at sample 000006 (2 rows lost; tarfile ends there without an error)."""
    def sample(i):
        prepared = image_sample(i)
        if i == 1:
            prepared.files = {k: v[:40] for k, v in prepared.files.items()}
        return prepared

    urls = write_dir(directory, 12, 4, sample)
    damage(urls[1], "cut_at_boundary", "000006")
    return urls


def test_eval_refuses_a_partial_set_unless_allowed_and_records_what_was_missing(tiny, tmp_path):
    urls = _vqa_shards_with_a_loss_and_a_skip(tmp_path / "vqa")
    vlm = build_vlm(tiny)
    renderer = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens, max_length=128)
    with pytest.raises(PartialData, match=r"(?s)refusing to score a partial set: a sample was skipped \(corrupt_image\)"
                                          r".*000001.*--allow-partial"):
        evaluate(vlm, [VQATask(str(tmp_path / "vqa"))], renderer=renderer, max_new_tokens=2)
    with pytest.raises(PartialData, match=rf"{urls[1]}: truncated_shard, 2 row\(s\) lost"):
        evaluate(vlm, [VQATask(urls[1:])], renderer=renderer, max_new_tokens=2)  # a list of shards: still checked
    tasks = [VQATask(str(tmp_path / "vqa"))]
    scores, predictions = evaluate(vlm, tasks, renderer=renderer, max_new_tokens=2, allow_partial=True)
    missing = scores["missing"]
    assert scores["vqa"]["num_questions"] == len(predictions) == 9 == 12 - missing["missing_rows"]
    assert missing["skipped"] == {"corrupt_image": 1} and missing["lost"] == {urls[1]: {"truncated_shard": 2}}
    assert missing["shards_checked"] == 3 and missing["unchecked_reads"] == 0 and missing["allow_partial"]
    assert f"data: 3 row(s) missing; skipped corrupt_image: 1; lost 2 rows ({urls[1]}: truncated_shard 2)" \
        in summary(scores, tasks)
    whole = tmp_path / "whole"
    write_dir(whole, 8, 4, image_sample)
    tasks = [VQATask(str(whole))]
    scores, _ = evaluate(vlm, tasks, renderer=renderer, max_new_tokens=2, limit=3)  # a partial set asked for
    assert scores["vqa"]["num_questions"] == 3 and scores["missing"]["missing_rows"] == 0
    assert scores["missing"]["limit"] == 3 and "--limit 3 per task (partial by request)" in summary(scores, tasks)


def test_eval_cli_allow_partial(tiny, tmp_path, capsys):
    _vqa_shards_with_a_loss_and_a_skip(tmp_path / "vqa")
    checkpoint = save_trainable(build_vlm(tiny), tmp_path / "model", extra={"global_step": 0})
    args = ["eval", "--checkpoint", str(checkpoint), "--vqa", str(tmp_path / "vqa"), "--max-new-tokens", "2",
            "--out", str(tmp_path / "scores")]
    with pytest.raises(SystemExit, match=r"(?s)mmpeft eval: refusing to score a partial set.*--allow-partial"):
        cli_main(args)
    assert not (tmp_path / "scores.json").exists()
    scores = cli_main([*args, "--allow-partial"])
    assert json.loads((tmp_path / "scores.json").read_text())["missing"]["missing_rows"] == 3
    assert scores["vqa"]["num_questions"] == 9 and "data: 3 row(s) missing" in capsys.readouterr().out


# ------------------------------------------------------------------ nothing skipped silently, ids unique, outputs


def _model_dir(tiny, directory, max_length=128):
    """A saved model whose input format bounds prompts at ``max_length`` tokens (as a run's data config does)."""
    vlm = build_vlm(tiny)
    vlm.input_format = input_format_of(ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens,
                                                    max_length=max_length))
    return save_trainable(vlm, directory, extra={"global_step": 0})


def _long_at(index, words=40):
    """Samples whose ``index``-th prompt is ~160 tokens longer than the others (~45 tokens with the tiny towers)."""
    return lambda i: image_sample(i, words=words if i == index else 0)


def test_overlong_prompt_is_a_counted_too_long_skip_naming_shard_and_key(tiny, tmp_path):
    """The bug this guards: render_prompt ignored max_length, so an over-long prompt went to generate."""
    urls = write_dir(tmp_path / "vqa", 6, 3, _long_at(4))
    vlm = build_vlm(tiny)
    renderer = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens, max_length=128)
    with pytest.raises(PartialData, match=rf"(?s)skipped \(too_long\): {urls[1]}:000004: prompt of \d+ tokens > "
                                          r"max_length 128.*--allow-partial"):
        evaluate(vlm, [VQATask(str(tmp_path / "vqa"))], renderer=renderer, max_new_tokens=2)
    scores, predictions = evaluate(vlm, [VQATask(str(tmp_path / "vqa"))], renderer=renderer, max_new_tokens=2,
                                   allow_partial=True)
    assert scores["missing"]["skipped"] == {"too_long": 1} and scores["missing"]["missing_rows"] == 1
    assert scores["vqa"]["num_questions"] == 5 and "colour-4" not in {p["id"] for p in predictions}
    assert {p["where"] for p in predictions} == {f"{urls[i // 3]}:{i:06d}" for i in (0, 1, 2, 3, 5)}


def test_eval_cli_max_length_bounds_prompts(tiny, tmp_path):
    """``--max-length`` overrides the saved max_length (128 here) both ways."""
    write_dir(tmp_path / "vqa", 4, 4, _long_at(2))
    model = _model_dir(tiny, tmp_path / "model")
    args = ["eval", "--checkpoint", str(model), "--vqa", str(tmp_path / "vqa"), "--max-new-tokens", "2"]
    with pytest.raises(SystemExit, match=r"(?s)refusing to score a partial set: a sample was skipped \(too_long\).*"
                                         r"000002: prompt of \d+ tokens > max_length 128"):
        cli_main([*args, "--out", str(tmp_path / "saved")])
    scores = cli_main([*args, "--max-length", "400", "--out", str(tmp_path / "raised")])
    assert scores["vqa"]["num_questions"] == 4 and scores["missing"]["missing_rows"] == 0
    with pytest.raises(SystemExit, match=r"no vqa sample left to score.*skipped too_long: 4"):
        cli_main([*args, "--max-length", "8", "--allow-partial", "--out", str(tmp_path / "lowered")])


def _drop_member(path, name):
    """Rewrite a tar without member ``name`` (a record listing an image its shard lacks); the sample stays."""
    import tarfile
    from pathlib import Path

    kept = tmp = Path(str(path) + ".rewrite")
    with tarfile.open(path) as src, tarfile.open(tmp, "w") as dst:
        for member in src.getmembers():
            if member.name != name:
                dst.addfile(member, src.extractfile(member))
    kept.replace(path)


def test_text_rows_and_missing_image_fields_are_counted_by_reason(tiny, tmp_path):
    """The bugs this guards: records without conversations (generation) or images (vision probe) were dropped
    uncounted, and an image field absent from the shard was reported as malformed_json."""
    urls = write_dir(tmp_path / "mixed", 8, 4, lambda i: text_sample(i) if i == 2 else image_sample(i))
    _drop_member(urls[1], "000005.img0.png")
    vlm = build_vlm(tiny, vision_spec=AdapterSpec("lora"))
    renderer = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens, max_length=128)
    with pytest.raises(PartialData, match=rf"\(no_prompt\): {urls[0]}:000002: a plain-text record"):
        evaluate(vlm, [VQATask(str(tmp_path / "mixed"))], renderer=renderer, max_new_tokens=2)
    with pytest.raises(PartialData, match=rf"\(no_image\): {urls[0]}:000002"):
        evaluate(vlm, [VisionDriftTask(str(tmp_path / "mixed"))], renderer=renderer)
    scores, _ = evaluate(vlm, [VQATask(str(tmp_path / "mixed")), VisionDriftTask(str(tmp_path / "mixed"))],
                         renderer=renderer, max_new_tokens=2, allow_partial=True)
    assert scores["missing"]["skipped"] == {"no_prompt": 1, "no_image": 1, "missing_image": 2}
    assert scores["vqa"]["num_questions"] == 6 and scores["vision"]["images"] == 6
    assert scores["missing"]["lost"] == {}, "the rows are in their shards: skipped, not lost"


def test_duplicate_question_or_image_ids_are_refused_naming_both_records():
    """The bug this guards: duplicates were merged silently (references overwritten, first caption kept)."""
    from mmpeft.eval.tasks.captions import score_captions
    from mmpeft.eval.tasks.vqa import score_vqa

    def row(rid, where, **fields):
        return {"id": rid, "where": where, "prediction": "red", "eval": fields}

    answers = ["red"] * 10
    with pytest.raises(ValueError, match=r"VQA records 'a' \(s0.tar:000001\) and 'b' \(s1.tar:000009\) have the same "
                                         r"question id 7"):
        score_vqa([row("a", "s0.tar:000001", answers=answers, question_id=7), row("c", "s0.tar:2", answers=answers),
                   row("b", "s1.tar:000009", answers=["blue"] * 10, question_id=7)])
    with pytest.raises(ValueError, match=r"records 'x' .* and '7' .* same question id '7'"):
        score_vqa([row("x", "s:1", answers=answers, question_id=7), row("7", "s:2", answers=answers)])
    refs = ["a red square", "a square"]
    with pytest.raises(ValueError, match=r"(?s)caption records 'coco-3-0' \(c.tar:000000\) and 'coco-3-1' "
                                         r"\(c.tar:000001\) are both of image 3.*one prediction per image.*"
                                         r"--captions-per-image all"):
        score_captions([row("coco-3-0", "c.tar:000000", captions=refs, image_id=3),
                        row("coco-3-1", "c.tar:000001", captions=refs, image_id=3)], tokenizer="python")


def test_eval_out_keeps_dotted_names_and_default_is_beside_the_model(tiny, tmp_path, monkeypatch):
    """The bugs this guards: ``--out eval/lr_0.5`` and ``eval/lr_0.1`` both wrote eval/lr_0.json
    (Path.with_suffix), and the default out of a model outside a run dir wrote into the model directory."""
    import os

    write_dir(tmp_path / "vqa", 2, 2, image_sample)
    model = _model_dir(tiny, tmp_path / "models" / "lr_0.5")
    before = sorted(p.relative_to(model) for p in model.rglob("*"))
    args = ["eval", "--checkpoint", str(model), "--vqa", str(tmp_path / "vqa"), "--max-new-tokens", "2"]
    for name in ("lr_0.5", "lr_0.1"):
        cli_main([*args, "--out", str(tmp_path / "eval" / name)])
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "lr_0.1.json", "lr_0.1.predictions.jsonl", "lr_0.5.json", "lr_0.5.predictions.jsonl"]
    cli_main(args)
    assert (tmp_path / "models" / "eval" / "lr_0.5.json").is_file(), "default: eval/<name> beside the model"
    assert (tmp_path / "models" / "eval" / "lr_0.5.predictions.jsonl").is_file()
    assert sorted(p.relative_to(model) for p in model.rglob("*")) == before, "nothing written inside the model"
    with pytest.raises(SystemExit, match="inside the model directory"):
        cli_main([*args, "--out", str(model / "scores")])
    # the scores file is replaced atomically: a write that dies before its rename leaves the old file whole
    scores_file = tmp_path / "eval" / "lr_0.5.json"
    old = scores_file.read_text()
    replace = os.replace

    def dies_on_scores(src, dst):
        if str(dst) == str(scores_file):
            raise OSError("disk full")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_on_scores)
    with pytest.raises(OSError, match="disk full"):
        cli_main([*args, "--max-new-tokens", "3", "--out", str(tmp_path / "eval" / "lr_0.5")])
    assert scores_file.read_text() == old and not list((tmp_path / "eval").glob("*.tmp"))

import json
import shutil

import pytest
import torch
import yaml
from conftest import build_vlm
from data_fixtures import coco_fixture
from shard_damage import damage, image_sample, write_dir
from test_cli import fit_args
from test_data_prep import script

from mmpeft.adapters import AdapterSpec
from mmpeft.checkpoint import export, load_pretrained, save_trainable
from mmpeft.cli import cli_main
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.input_format import input_format_of, renderer_for
from mmpeft.data.integrity import PartialData
from mmpeft.eval.vision_probe import linear_cka, linear_probe_accuracy, vision_drift
from mmpeft.tiny import save_tiny_towers


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


def test_eval_refuses_vqa_records_without_answers(towers, tmp_path):
    from mmpeft.eval.run import score_vqa

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
    from mmpeft.eval.run import evaluate, summary

    urls = _vqa_shards_with_a_loss_and_a_skip(tmp_path / "vqa")
    vlm = build_vlm(tiny)
    renderer = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens, max_length=128)
    with pytest.raises(PartialData, match=r"(?s)refusing to score a partial set: a sample was skipped \(corrupt_image\)"
                                          r".*000001.*--allow-partial"):
        evaluate(vlm, renderer, vqa=str(tmp_path / "vqa"), max_new_tokens=2)
    with pytest.raises(PartialData, match=rf"{urls[1]}: truncated_shard, 2 row\(s\) lost"):
        evaluate(vlm, renderer, vqa=urls[1:], max_new_tokens=2)  # a list of shards: still checked
    scores, predictions = evaluate(vlm, renderer, vqa=str(tmp_path / "vqa"), max_new_tokens=2, allow_partial=True)
    missing = scores["missing"]
    assert scores["vqa"]["num_questions"] == len(predictions) == 9 == 12 - missing["missing_rows"]
    assert missing["skipped"] == {"corrupt_image": 1} and missing["lost"] == {urls[1]: {"truncated_shard": 2}}
    assert missing["shards_checked"] == 3 and missing["unchecked_reads"] == 0 and missing["allow_partial"]
    assert f"data: 3 row(s) missing; skipped corrupt_image: 1; lost 2 rows ({urls[1]}: truncated_shard 2)" \
        in summary(scores)
    whole = tmp_path / "whole"
    write_dir(whole, 8, 4, image_sample)
    scores, _ = evaluate(vlm, renderer, vqa=str(whole), max_new_tokens=2, limit=3)  # a partial set asked for
    assert scores["vqa"]["num_questions"] == 3 and scores["missing"]["missing_rows"] == 0
    assert scores["missing"]["limit"] == 3 and "--limit 3 per task (partial by request)" in summary(scores)


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

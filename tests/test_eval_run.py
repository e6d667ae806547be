import json

import pytest
import torch
from conftest import build_vlm
from data_fixtures import coco_fixture
from test_cli import fit_args
from test_data_prep import script

from mmpeft.adapters import AdapterSpec
from mmpeft.cli import cli_main
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
                           "--max-new-tokens", "4"])
        assert scores["step"] == 4 and scores["vqa"]["num_questions"] == 16
        assert 0 <= scores["vqa"]["overall"] <= 100 and scores["captions"]["CIDEr-D"] >= 0
        assert set(scores["text_probes"]) == {"arith", "ppl"} and scores["vision"]["images"] == 16
        assert (run / "eval" / "last.predictions.jsonl").is_file()
    result = cli_main(["report", *map(str, runs), "--out", str(tmp_path / "report")])
    names = {p.name for p in result["files"]}
    assert {"report.json", "report.md", "vl_vs_forgetting.png", "curves.png"} <= names
    table = (tmp_path / "report" / "report.md").read_text()
    assert "| plain | 4 |" in table and "| kl | 4 |" in table


def test_eval_refuses_vqa_records_without_answers(towers, tmp_path):
    from mmpeft.eval.run import score_vqa

    with pytest.raises(ValueError, match="VQA record 'x1' has no eval.answers"):
        score_vqa([{"id": "x1", "prediction": "red", "eval": {}}])

"""Caption metrics equal pycocoevalcap run directly, the way the COCO caption evaluation runs it."""

import contextlib
import io

import pytest

from mmpeft.eval import captioning
from mmpeft.eval.captioning import caption_metrics, simple_ptb_tokenize

REFERENCES = {
    1: ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave in the ocean!",
        "Man on a surfboard, riding an ocean wave."],
    2: ["Two dogs playing with a frisbee in the park", "Dogs chase a red frisbee on the grass.",
        "A pair of dogs play in a park; one has a frisbee."],
    3: ["A plate of food with broccoli and rice", "Broccoli, rice and chicken on a white plate.",
        "A meal that isn't finished: rice, broccoli -- and chicken."],
    "img-4": ["A red double-decker bus on a city street.", "The bus is red... and it's on the street"],
}
PREDICTIONS = {1: "a man riding a wave on a surfboard", 2: "two dogs are playing with a frisbee",
               3: "a plate of rice and broccoli.", "img-4": "a red bus driving down a street"}


def reference_scores(gts_raw, res_raw):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with contextlib.redirect_stdout(io.StringIO()):
        tok = PTBTokenizer()
        gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in gts_raw.items()})
        res = tok.tokenize({k: [{"caption": c}] for k, c in res_raw.items()})
        bleu, _ = Bleu(4).compute_score(gts, res)
        return {"BLEU-1": bleu[0], "BLEU-2": bleu[1], "BLEU-3": bleu[2], "BLEU-4": bleu[3],
                "METEOR": Meteor().compute_score(gts, res)[0], "ROUGE-L": Rouge().compute_score(gts, res)[0],
                "CIDEr-D": Cider().compute_score(gts, res)[0]}


@pytest.mark.skipif(not captioning.java_available(), reason="PTBTokenizer/METEOR need java")
def test_metrics_equal_pycocoevalcap():
    ours = caption_metrics(PREDICTIONS, REFERENCES)
    ref = reference_scores(REFERENCES, PREDICTIONS)
    for name, value in ref.items():
        assert abs(ours[name] - value) < 1e-6, name
    assert ours["tokenizer"] == "ptb-java" and ours["CIDEr-D"] > 0 and set(ours["per_image_cider"]) == set(REFERENCES)


@pytest.mark.skipif(not captioning.java_available(), reason="compares against the Java PTBTokenizer")
def test_python_tokenizer_matches_ptbtokenizer_on_captions():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = [c for refs in REFERENCES.values() for c in refs] + list(PREDICTIONS.values()) + [
        "He's got 3.5 apples, don't you think?", "A (small) cat -- sleeping; on a mat...", "It's a dog's bed!"]
    with contextlib.redirect_stdout(io.StringIO()):
        java = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    for i, c in enumerate(captions):
        assert simple_ptb_tokenize(c) == java[i][0], c


def test_without_java_meteor_is_skipped(monkeypatch):
    monkeypatch.setattr(captioning, "java_available", lambda: False)
    out = caption_metrics(PREDICTIONS, REFERENCES)
    assert out["METEOR"] is None and out["tokenizer"] == "python" and out["CIDEr-D"] > 0


def test_bad_input_names_ids():
    with pytest.raises(ValueError, match=r"1 image\(s\) without a prediction \(e.g. \['img-4'\]\)"):
        caption_metrics({k: v for k, v in PREDICTIONS.items() if k != "img-4"}, REFERENCES)
    with pytest.raises(ValueError, match="empty prediction.*image 2"):
        caption_metrics({**PREDICTIONS, 2: "  "}, REFERENCES)
    with pytest.raises(ValueError, match="image 3 has no"):
        caption_metrics(PREDICTIONS, {**REFERENCES, 3: []})

"""Caption metrics equal pycocoevalcap's COCOEvalCap; the Python PTB tokenizer gives the Java one's tokens."""

import contextlib
import io
import shutil
from types import SimpleNamespace

import pytest
from caption_corpus import corpus, image_split

from mmpeft.eval import captioning, ptb_tokenizer
from mmpeft.eval.captioning import METRICS, caption_metrics
from mmpeft.eval.longest_match import Scanner
from mmpeft.eval.ptb_tokenizer import tokenize_lines

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="runs pycocoevalcap's Java jars")

REFERENCES = {
    1: ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave in the ocean!",
        "Man on a surfboard, riding an ocean wave."],
    2: ["Two dogs playing with a frisbee in the park", "Dogs chase a red frisbee on the grass.",
        "A pair of dogs play in a park; one has a frisbee."],
    3: ["A plate of food with broccoli and rice", "Broccoli, rice and chicken on a white plate.",
        "A meal that isn't finished: rice, broccoli -- and chicken."],
    "img-4": ["A red double-decker bus on a city street.", "The bus is red... and it's on the street",
              "A \"vintage\" bus (red) in the U.S. today!!!"],
}
PREDICTIONS = {1: "a man riding a wave on a surfboard", 2: "two dogs are playing with a frisbee",
               3: "a plate of rice and broccoli.", "img-4": "a red bus driving down a street in the U.S."}


def bleu_rouge_cider(gts, res):
    """pycocoevalcap's scorers that need no java, keyed as COCOEvalCap keys them."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    return {**{f"Bleu_{i + 1}": b for i, b in enumerate(bleu)}, "ROUGE_L": Rouge().compute_score(gts, res)[0],
            "CIDEr": Cider().compute_score(gts, res)[0]}


@pytest.mark.slow  # METEOR's jar loads its paraphrase table (~14 s on 2 cores); one JVM serves both sides
@needs_java
def test_metrics_equal_cocoevalcap(monkeypatch):
    """pycocoevalcap's own COCOEvalCap.evaluate (SPICE stubbed: it downloads CoreNLP models) vs ours."""
    import pycocoevalcap.eval as coco_eval
    import pycocoevalcap.meteor.meteor as meteor_module

    meteor = meteor_module.Meteor()
    monkeypatch.setattr(meteor_module, "Meteor", lambda: meteor)
    monkeypatch.setattr(coco_eval, "Meteor", lambda: meteor)
    monkeypatch.setattr(coco_eval, "Spice", lambda: SimpleNamespace(
        method=lambda: "SPICE", compute_score=lambda gts, res: (0.0, [0.0] * len(gts))))
    ids = list(REFERENCES)
    coco = SimpleNamespace(getImgIds=lambda: ids,
                           imgToAnns={k: [{"caption": c} for c in REFERENCES[k]] for k in ids})
    results = SimpleNamespace(imgToAnns={k: [{"caption": PREDICTIONS[k]}] for k in ids})
    reference = coco_eval.COCOEvalCap(coco, results)
    with contextlib.redirect_stdout(io.StringIO()):
        reference.evaluate()

    ours = caption_metrics(PREDICTIONS, REFERENCES)
    assert {m: ours[m] for m in METRICS} == {m: reference.eval[m] for m in METRICS}
    assert ours["per_image"] == {k: {m: reference.imgToEval[k][m] for m in METRICS} for k in ids}
    assert ours["tokenizer"] == "ptb" and ours["not_computed"] == {} and ours["num_images"] == 4
    assert 0 < ours["CIDEr"] and all(0 < ours[m] < 1 for m in METRICS if m != "CIDEr")


@needs_java
def test_python_tokenizer_agrees_with_java_on_corpus():
    """The 2,500-caption corpus in ONE PTBTokenizer call (pycocoevalcap's class) vs the Python tokenizer; then all
    seven metrics on a prediction/reference split of it, tokenised both ways."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = corpus()
    assert len(captions) >= 2000 and len(set(captions)) > 0.95 * len(captions)
    java_out = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    java = [java_out[i][0] for i in range(len(captions))]
    python = tokenize_lines(captions)
    same = sum(j == p for j, p in zip(java, python))
    differing = [(c, j, p) for c, j, p in zip(captions, java, python) if j != p]
    assert same / len(captions) >= 0.999, differing[:5]

    predictions, references = image_split(list(range(len(captions))))  # caption indices: tokens from one stream
    def split(lines):
        return ({k: [lines[i] for i in v] for k, v in references.items()},
                {k: [lines[i]] for k, i in predictions.items()})
    (java_gts, java_res), (py_gts, py_res) = split(java), split(python)
    java_scores, py_scores = bleu_rouge_cider(java_gts, java_res), bleu_rouge_cider(py_gts, py_res)
    if (java_gts, java_res) != (py_gts, py_res):  # METEOR is deterministic: identical tokens, identical score
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()
        java_scores["METEOR"] = meteor.compute_score(java_gts, java_res)[0]
        py_scores["METEOR"] = meteor.compute_score(py_gts, py_res)[0]
    for name, value in java_scores.items():
        assert abs(py_scores[name] - value) <= 1e-4, (name, py_scores[name], value)
    assert java_scores["CIDEr"] > 0.05 and java_scores["Bleu_1"] > 0.2  # a real, non-degenerate setup


# Each line: a caption and pycocoevalcap's PTBTokenizer output for it alone (from the jar, read by hand).
HAND_CHECKED = [
    ("Wow!!! A dog?! Really??", "wow !!! a dog ?! really ??"),  # only single ! ? are punctuation tokens
    ('A sign that says "STOP" on a pole.', "a sign that says stop on a pole"),  # " -> `` / '' (dropped)
    ("A man said 'hello' to the dog.", "a man said hello to the dog"),
    ("A café with crème brûlée on the table.", "a café with crème brûlée on the table"),
    ("A cafe\u0301 bar", "a cafe\u0301 bar"),  # a combining accent is part of the word
    ("Mr. Smith and Dr. Jones walk down St. Louis Ave. in the U.S. today.",
     "mr. smith and dr. jones walk down st. louis ave. in the u.s. today"),
    ("etc.", "etc."),
    ("Fish &amp; chips &quot;today&quot; &lt;3 AT&amp;T", "fish & chips today < 3 at&t"),
    ("A happy dog :) and a sad cat :( ;-)", "a happy dog :-rrb- and a sad cat :-lrb- -rrb-"),
    ("x_x ^_^ (^_^) o_O", "x_x ^_^ -lrb-^_^-rrb- o_o"),
    ("A well-known x-ray of a T-shirt -- and a - b --- c ----- d",
     "a well-known x-ray of a t-shirt and a b c ----- d"),  # 3-4 hyphens are "--" (dropped), 5 are kept
    ("1,000 people paid $5.99 for 3.5 kg at 10:30", "1,000 people paid $ 5.99 for 3.5 kg at 10:30"),
    ("1 1/2 cups ½ ¾ ⅕ 3/4", "1\u00a01/2 cups 1/2 3/4 ⅕ 3/4"),  # "1 1/2" is ONE token, joined by U+00A0
    ("He said “hi” and ‘bye’ — then – left", "he said hi and bye then left"),
    ("Wait... then … more .... and . . .", "wait then more and"),
    ("I don't think it's gonna work, we can't, they're 'bout to cannot",
     "i do n't think it 's gon na work we ca n't they 're bout to can not"),
    ("O'Brien's rock 'n' roll y'all o'clock", "o'brien 's rock 'n' roll y' all o'clock"),
    ("Visit www.example.com or http://example.com/a/b, mail joe@mail.org @joe #tbt",
     "visit www.example.com or http://example.com/a/b mail joe@mail.org @joe #tbt"),
    ("A dog (small) [sic] {x}", "a dog -lrb- small -rrb- -lsb- sic -rsb- -lcb- x -rcb-"),  # lower-cased: kept
    ("A dog 😀 on the 🍕 pizza", "a dog on the pizza"),  # untokenizable: deleted
    ("€10 £3 ¢50 ¥100", "$ 10 # 3 cents 50 ¥ 100"),
    ("A <b>bold</b> move<br/>", "a <b> bold </b> move <br/>"),
    ("The dog's bone isn't here; it's gone: really.", "the dog 's bone is n't here it 's gone really"),
    ("ΟΔΟΣ ΟΔΟΣ3X4", "οδος οδοσ3x4"),  # Java's final-sigma rule, not Python's str.lower
]


@pytest.mark.parametrize(("caption", "expected"), HAND_CHECKED, ids=[c[:24] for c, _ in HAND_CHECKED])
def test_python_tokenizer_hand_checked(caption, expected):
    assert tokenize_lines([caption]) == [expected]


def test_python_tokenizer_reads_captions_as_one_stream():
    # the lexer looks past the line end: an acronym before a capitalised sentence start also ends a sentence
    assert tokenize_lines(["A plan B.", "The end"]) == ["a plan b", "the end"]
    assert tokenize_lines(["A plan B.", "the end"]) == ["a plan b.", "the end"]
    assert ptb_tokenizer.tokenize({7: ["A plan B."], 8: ["The end", "x"]}) == {7: ["a plan b"], 8: ["the end", "x"]}
    assert tokenize_lines([]) == [] and tokenize_lines(["", "..."]) == ["", ""]


def test_line_breaks_inside_a_caption_do_not_shift_captions():
    captions = ["a\rb", "c\u2028d", "e\r\nf\x0bg", "h"]
    assert tokenize_lines(captions) == ["a b", "c d", "e f g", "h"]
    if shutil.which("java"):
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        assert captioning.java_ptb_tokenize(captions) == ["a b", "c d", "e f g", "h"]
        # pycocoevalcap itself moves "b" onto the next image: the quirk we do not copy
        assert PTBTokenizer().tokenize({1: [{"caption": "a\rb"}], 2: [{"caption": "c"}]}) == {1: ["a"], 2: ["b"]}


def test_python_tokenizer_scores_without_java(monkeypatch):
    monkeypatch.setattr(captioning, "java_available", lambda: False)
    out = caption_metrics(PREDICTIONS, REFERENCES, tokenizer="python")
    gts = ptb_tokenizer.tokenize(REFERENCES)
    res = ptb_tokenizer.tokenize({k: [p] for k, p in PREDICTIONS.items()})
    expected = bleu_rouge_cider(gts, res)
    assert {m: out[m] for m in expected} == expected
    assert out["METEOR"] is None and "java not found" in out["not_computed"]["METEOR"]
    assert out["tokenizer"] == "python" and list(out["per_image"]) == list(REFERENCES)
    assert all(list(v) == list(METRICS) and v["METEOR"] is None for v in out["per_image"].values())
    assert out["per_image"]["img-4"]["CIDEr"] > 0
    with pytest.raises(RuntimeError, match="meteor=True.*java"):
        caption_metrics(PREDICTIONS, REFERENCES, tokenizer="python", meteor=True)
    with pytest.raises(RuntimeError, match=r"tokenizer='ptb'.*java.*not on PATH.*tokenizer='python'"):
        caption_metrics(PREDICTIONS, REFERENCES)


@needs_java
def test_meteor_failure_is_an_error_not_a_hang(monkeypatch):
    # pycocoevalcap's Meteor keeps its lock when the jar dies, and its __del__ waits for that lock forever
    import pycocoevalcap.meteor.meteor as meteor_module

    monkeypatch.setattr(meteor_module, "METEOR_JAR", "no-such-meteor.jar")
    with pytest.raises(RuntimeError, match="METEOR .*failed.*no-such-meteor.jar"):
        caption_metrics(PREDICTIONS, REFERENCES, tokenizer="python", meteor=True)


def test_meteor_skipped_on_request():
    out = caption_metrics(PREDICTIONS, REFERENCES, tokenizer="python", meteor=False)
    assert out["METEOR"] is None and out["not_computed"] == {"METEOR": "skipped: meteor=False"}


def test_bad_input_names_ids():
    with pytest.raises(ValueError, match=r"tokenizer='java'.*'ptb', 'python'"):
        caption_metrics(PREDICTIONS, REFERENCES, tokenizer="java")
    with pytest.raises(ValueError, match=r"1 image\(s\) without a prediction \(e.g. \['img-4'\]\)"):
        caption_metrics({k: v for k, v in PREDICTIONS.items() if k != "img-4"}, REFERENCES)
    with pytest.raises(ValueError, match="empty prediction.*image 2"):
        caption_metrics({**PREDICTIONS, 2: "  "}, REFERENCES)
    with pytest.raises(ValueError, match="image 3 has no"):
        caption_metrics(PREDICTIONS, {**REFERENCES, 3: []})
    with pytest.raises(ValueError, match="image 3 must be a list of captions"):
        caption_metrics(PREDICTIONS, {**REFERENCES, 3: "a plate of food"})


def test_scanner_takes_the_longest_match_then_the_first_rule():
    scanner = Scanner(["ab", "[a-c]+b", "a+", "[a-z]+", "x[^y]"], caseless=True)
    assert scanner.longest("ab!", 0) == (2, 0)  # "ab" and "[a-c]+b" tie: the first rule
    assert scanner.longest("aab", 0) == (3, 1)  # longer beats earlier
    assert scanner.longest("AB", 0) == (2, 0)  # caseless literal
    assert Scanner(["[a-c]+"], caseless=True).longest("Ab", 0) is None  # ... but classes keep their case
    assert scanner.longest("x\U0001F600", 0) == (2, 4) and scanner.longest("!", 0) is None

"""TextVQA, GQA and ScienceQA-IMG: scorers on cases derived from their reference code, converters from the public
formats, and the three tasks run end to end through ``mmpeft eval --config``.

Every expected value below was read off the reference (and checked by running it on these inputs):
lmms-eval 75571cf ``EvalAIAnswerProcessor`` / ``textvqa_process_results`` / ``exact_match_hf_evaluate`` /
``sqa_process_results``, LLaVA c121f04 ``eval_science_qa.py`` and ``convert_gqa_for_eval.py``, GQA ``eval.py``.
"""

import json

import pytest
import yaml
from conftest import build_vlm
from data_fixtures import save_image, write_corrupt_jpeg
from test_data_prep import read_shards, script

from mmpeft.apps.main import cli_main
from mmpeft.checkpoint import save_trainable
from mmpeft.eval import vqa
from mmpeft.eval.benchmarks import gqa, scienceqa, textvqa
from mmpeft.eval.tasks import GQATask, ScienceQATask, TextVQATask

# ------------------------------------------------------------------ TextVQA: EvalAI processor

# (input, EvalAIAnswerProcessor output, vqaEval.py's full normalisation of the same input)
EVALAI = [
    ("Yes", "yes", "yes"),
    ("Two dogs.", "2 dogs", "2 dogs"),
    ("the cat", "cat", "cat"),
    ("yes?", "yes", "yes"),
    ("  New\nYork\t", "new york", "new york"),
    ("dont", "don't", "don't"),
    ("e.g.", "eg", "eg"),
    ("a;b; c", "ab c", "ab c"),           # ';' next to a space somewhere: every ';' deleted
    ("x/-y-z", "x y z", "x y z"),         # decided on the input text, per mark
    ("3.5", "3.5", "3.5"),
    ("100%", "100%", "100%"),             # '%' is not one of the marks
    # the differences: word_tokenize deletes commas first, so digit,digit never deletes every mark ...
    ("1,000 x-ray", "1000 x ray", "1000 xray"),
    ("it's 2,5", "it 's 25", "it's 25"),  # ... and splits 's off
    ("what's", "what 's", "what's"),
    ("whats", "what's", "what's"),
    ("let's go", "let 's go", "let's go"),
    ("a.\u0663", "a.\u0663", "a\u0663"),  # Unicode \d keeps a period before an Arabic-Indic digit
]


@pytest.mark.parametrize("text, evalai, vqa_eval", EVALAI)
def test_evalai_normalisation_and_where_it_differs_from_vqa_eval(text, evalai, vqa_eval):
    assert textvqa.evalai_normalize(text) == evalai
    assert vqa.normalize_answer(text) == vqa_eval


def test_evalai_deletes_at_most_32_periods():
    text = "x" + ".a" * 40
    assert textvqa.evalai_normalize(text) == "x" + "a" * 32 + ".a" * 8


@pytest.mark.parametrize("prediction, answers, expected, vqa_eval", [
    ("Yes", ["yes"] * 10, 1.0, 0.0),                 # always normalised: no unanimity shortcut
    ("Two", ["2"] * 10, 1.0, 0.0),
    ("red", ["red"] * 2 + ["blue"] * 8, 0.6, 0.6),   # leave-one-out: (2 * 1/3 + 8 * 2/3) / 10
    ("whats", ["what's"] * 10, 0.0, 0.0),            # "what 's" never meets "what's"
    ("1,000", ["1000"] * 3 + ["one thousand"] * 7, 0.9, 0.9),
    ("x", ["x", "y", "x", "y"], 0.5, 0.5),
])
def test_textvqa_question_accuracy(prediction, answers, expected, vqa_eval):
    assert textvqa.question_accuracy(prediction, answers) == pytest.approx(expected)
    assert vqa.question_accuracy(prediction, answers) == pytest.approx(vqa_eval)


def test_textvqa_accuracy_is_a_fraction_and_refuses_bad_input():
    scores = textvqa.textvqa_accuracy({1: "Yes", 2: "no"}, {1: ["yes"] * 10, 2: ["yes"] * 10})
    assert scores["exact_match"] == 0.5 and scores["per_question"] == {"1": 1.0, "2": 0.0}
    with pytest.raises(ValueError, match="question 1: answers must be a non-empty list"):
        textvqa.textvqa_accuracy({1: "a"}, {1: []})
    with pytest.raises(ValueError, match="prediction and reference ids differ"):
        textvqa.textvqa_accuracy({1: "a"}, {2: ["a"]})


# ------------------------------------------------------------------ GQA

@pytest.mark.parametrize("prediction, gold, lmms_eval, official", [
    ("Yes.", "yes", True, True),
    (" yes \n", "yes", True, True),       # lmms-eval strips the generation; LLaVA strips the decode
    ("Left", "left", True, True),
    ("t-shirt", "tshirt", True, False),   # string.punctuation goes in lmms-eval; only trailing '.' in LLaVA's
    ("don't", "dont", True, False),
    ("yes!", "yes", True, False),
    ("a cat", "cat", False, False),       # no articles, no number words, inner spaces kept
    ("2", "two", False, False),
    ("two  dogs", "two dogs", False, False),
    ("yes", " yes", False, False),        # the gold is not stripped
    ("Yes", "Yes", True, False),          # official: prediction lower-cased, gold as the file gives it
])
def test_gqa_normalisations(prediction, gold, lmms_eval, official):
    assert gqa.gqa_match(prediction, gold, "lmms_eval") is lmms_eval
    assert gqa.gqa_match(prediction, gold, "official") is official


def test_gqa_accuracy_units_and_breakdowns():
    refs = {"1": {"answer": "yes", "structural_type": "verify", "semantic_type": "rel"},
            "2": {"answer": "red", "structural_type": "query", "semantic_type": "attr"},
            "3": {"answer": "cat", "structural_type": "query", "semantic_type": "cat"},
            "4": {"answer": "no", "structural_type": "logical", "semantic_type": "obj"}}
    preds = {"1": "Yes", "2": "red.", "3": "dog", "4": "No!"}
    lmms = gqa.gqa_accuracy(preds, refs)
    assert lmms["exact_match"] == 0.75 and lmms["binary"] == 1.0 and lmms["open"] == 0.5
    official = gqa.gqa_accuracy(preds, refs, "official")
    assert official["accuracy"] == 50.0 and official["binary"] == 50.0 and official["open"] == 50.0
    assert official["per_structural_type"] == {"logical": 0.0, "query": 50.0, "verify": 100.0}
    assert gqa.gqa_accuracy({"1": "yes"}, {"1": {"answer": "yes"}})["binary"] is None  # eval.py would print 0


def test_gqa_official_matches_what_eval_py_printed_after_llavas_conversion():
    """LLaVA's convert_gqa_for_eval.py then eval.py --tier testdev_balanced on these eight printed Binary 50.00%,
    Open 50.00%, Accuracy 50.00%; compare 100, logical 0, query 50, verify 50."""
    cases = [("Yes.", "yes", "verify"), ("t-shirt", "tshirt", "query"), ("Left", "left", "query"),
             ("yes!", "yes", "logical"), ("Yes", "Yes", "verify"), ("no", "no", "compare"), ("red.", "red", "query"),
             ("a cat", "cat", "query")]
    refs = {str(i): {"answer": gold, "structural_type": st, "semantic_type": "attr"}
            for i, (_, gold, st) in enumerate(cases)}
    preds = {str(i): c[0] for i, c in enumerate(cases)}
    scores = gqa.gqa_accuracy(preds, refs, "official")
    assert (scores["accuracy"], scores["binary"], scores["open"]) == (50.0, 50.0, 50.0)
    assert scores["per_structural_type"] == {"compare": 100.0, "logical": 0.0, "query": 50.0, "verify": 50.0}
    with pytest.raises(ValueError, match="normalization='exact'"):
        gqa.gqa_accuracy(preds, refs, "exact")


# ------------------------------------------------------------------ ScienceQA

@pytest.mark.parametrize("prediction, answer, choices, lmms_eval, llava", [
    ("A", 0, 4, True, True),
    ("a", 0, 4, True, False),
    (" A ", 0, 4, True, True),
    ("A.", 0, 4, True, False),                 # LLaVA wants ". " after the letter
    ("A. 25 feet", 0, 4, True, True),
    ("a.", 0, 4, False, False),
    ("(A)", 0, 4, False, False),
    ("A)", 0, 4, False, False),
    ("A 25 feet", 0, 4, False, False),
    ("The answer is A.", 0, 4, False, True),
    ("The answer is A", 0, 4, False, False),   # the regex's '.' needs a character after the letter
    ("The answer is AB", 0, 4, False, True),   # ... any character
    ("The answer is A. The answer is B.", 0, 4, False, False),  # two matches: FAILED
    ("The answer is (A).", 0, 4, False, False),
    ("D", 3, 4, True, True),
    ("E", 3, 4, False, False),
    ("C", 1, 3, False, False),
    ("", 0, 2, False, False),
])
def test_scienceqa_letter_extraction(prediction, answer, choices, lmms_eval, llava):
    assert scienceqa.sqa_correct(prediction, answer, choices, "lmms_eval") is lmms_eval
    assert scienceqa.sqa_correct(prediction, answer, choices, "llava") is llava


def test_scienceqa_llava_parse_failures_and_letters_past_the_choices():
    assert scienceqa.llava_parse("Answer: A") == "FAILED"
    assert scienceqa.llava_choice_index("E", 4) == -1 and scienceqa.llava_choice_index("E", 5) == 4


def test_scienceqa_accuracy_units_breakdowns_and_refusals():
    refs = {"1": {"answer": 0, "choices": ["x", "y"], "subject": "natural science", "grade": "grade3", "hint": ""},
            "2": {"answer": 1, "choices": ["x", "y"], "subject": "social science", "grade": "grade8", "hint": "h"}}
    lmms = scienceqa.sqa_accuracy({"1": "A.", "2": "A"}, refs)
    assert lmms["exact_match"] == 0.5 and lmms["per_grade_band"] == {"grade_1_6": 1.0, "grade_7_12": 0.0}
    assert lmms["has_text"] == 0.0 and lmms["no_text"] == 1.0
    llava = scienceqa.sqa_accuracy({"1": "A.", "2": "B"}, refs, "llava")
    assert llava["accuracy"] == 50.0 and llava["per_subject"] == {"natural science": 0.0, "social science": 100.0}
    with pytest.raises(ValueError, match="'answer' must index its 2 choices, not 2"):
        scienceqa.sqa_accuracy({"1": "A"}, {"1": {"answer": 2, "choices": ["x", "y"]}})


def test_benchmark_tasks_refuse_missing_fields_and_repeated_questions():
    row = {"id": "gqa-1", "where": "s.tar:1", "prediction": "yes", "source": "gqa",
           "eval": {"answer": "yes", "question_id": "1"}}
    assert GQATask("unused").score([row])["exact_match"] == 1.0
    with pytest.raises(ValueError, match=r"'gqa-1' \(s.tar:1\) and 'gqa-1' \(s.tar:1\) have the same question id"):
        GQATask("unused").score([row, row])
    with pytest.raises(ValueError, match=r"ScienceQA record 'gqa-1' \(s.tar:1\) has no eval.choices; convert the set "
                                         "with data_prep/convert_scienceqa.py"):
        ScienceQATask("unused").score([row])
    with pytest.raises(ValueError, match="normalization='EM'; choose one of"):
        GQATask("unused", normalization="EM")


# ------------------------------------------------------------------ converters -> shards -> mmpeft eval --config

def textvqa_fixture(root):
    images = root / "train_images"
    for name, colour in (("aa01", "red"), ("bb02", "green"), ("cc03", "blue")):
        save_image(images / f"{name}.jpg", colour)
    write_corrupt_jpeg(images / "dd04.jpg")
    data = [{"question_id": 1, "image_id": "aa01", "question": "what Colour is the SIGN?",
             "answers": ["red"] * 6 + ["Red"] * 4},
            {"question_id": 2, "image_id": "bb02", "question": "what brand is it?", "answers": ["green"] * 10},
            {"question_id": 3, "image_id": "cc03", "question": "test-split question", "answers": []},
            {"question_id": 4, "image_id": "dd04", "question": "broken image?", "answers": ["x"] * 10},
            {"question_id": 1, "image_id": "cc03", "question": "repeated id", "answers": ["x"]},
            {"question_id": 5, "image_id": "../etc", "question": "escapes?", "answers": ["x"]}]
    path = root / "TextVQA_0.5.1_val.json"
    path.write_text(json.dumps({"dataset_name": "textvqa", "data": data}))
    ocr = root / "TextVQA_Rosetta_OCR_v0.2_val.json"
    ocr.write_text(json.dumps({"data": [{"image_id": "aa01", "ocr_tokens": ["STOP", "sign"]},
                                        {"image_id": "bb02", "ocr_tokens": []}]}))
    return path, images, ocr


def gqa_fixture(root):
    for name, colour in (("n1", "red"), ("n2", "blue")):
        save_image(root / "images" / f"{name}.jpg", colour)
    questions = {
        "201": {"imageId": "n1", "question": "Is the sky red?", "answer": "yes", "isBalanced": True,
                "types": {"structural": "verify", "semantic": "attr", "detailed": "x"}},
        "202": {"imageId": "n2", "question": "What color is it?", "answer": "blue", "isBalanced": True,
                "types": {"structural": "query", "semantic": "attr", "detailed": "x"}},
        "203": {"imageId": "n2", "question": "Unbalanced?", "answer": "no", "isBalanced": False, "types": {}},
        "204": {"imageId": "n1", "question": 7, "answer": "no", "isBalanced": True, "types": {}},
        "205": {"imageId": "n9", "question": "No image?", "answer": "no", "isBalanced": True, "types": {}},
    }
    path = root / "testdev_balanced_questions.json"
    path.write_text(json.dumps(questions))
    return path, root / "images"


def scienceqa_fixture(root):
    problems = {
        "11": {"question": "Which colour is shown?", "choices": ["red", "blue", "green"], "answer": 0,
               "hint": "Look at the picture.", "image": "image.png", "subject": "natural science",
               "grade": "grade2", "split": "test"},
        "12": {"question": "Which is a mammal?", "choices": ["cat", "fish"], "answer": 0, "hint": "",
               "image": None, "subject": "natural science", "grade": "grade4", "split": "test"},
        "13": {"question": "Pick one.", "choices": ["blue", "red"], "answer": 1, "hint": "", "image": "image.png",
               "subject": "social science", "grade": "grade9", "split": "test"},
        "14": {"question": "Bad answer", "choices": ["a"], "answer": 3, "hint": "", "image": "image.png"},
        "15": {"question": "Train only", "choices": ["a", "b"], "answer": 0, "hint": "", "image": "image.png"},
    }
    save_image(root / "images" / "test" / "11" / "image.png", "red")
    save_image(root / "images" / "test" / "13" / "image.png", "blue")
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"train": ["15"], "test": ["11", "12", "13", "14", "99"]}))
    return root / "problems.json", root / "pid_splits.json", root / "images"


def _user_turn(out, key):
    return json.loads(read_shards(out)[key]["json"])["conversations"][0]["content"]


def test_textvqa_converter_prompt_ocr_variant_and_counted_skips(tmp_path):
    path, images, ocr = textvqa_fixture(tmp_path)
    out = tmp_path / "plain"
    manifest = script("convert_textvqa").main(["--questions", str(path), "--image-root", str(images),
                                               "--out", str(out)])
    assert manifest["num_samples"] == 2
    assert manifest["skipped"] == {"no_answers": 1, "corrupt_image": 1, "malformed_json": 1, "bad_key": 1}
    record = json.loads(read_shards(out)["000000001"]["json"])
    # question.capitalize() lower-cases the rest, as lmms-eval's textvqa_doc_to_text does
    assert record["conversations"][0]["content"] == ("<image>\nWhat colour is the sign?\nAnswer the question using "
                                                     "a single word or phrase.")
    assert record["conversations"][1]["content"] == "red"
    assert record["eval"] == {"answers": ["red"] * 6 + ["Red"] * 4, "question_id": 1, "image_id": "aa01"}
    with_ocr = tmp_path / "ocr"
    script("convert_textvqa").main(["--questions", str(path), "--image-root", str(images), "--ocr", "--ocr-file",
                                    str(ocr), "--out", str(with_ocr)])
    assert _user_turn(with_ocr, "000000001") == ("<image>\nWhat colour is the sign?\nReference OCR token: STOP, sign"
                                                 "\nAnswer the question using a single word or phrase.")
    assert _user_turn(with_ocr, "000000002").startswith("<image>\nWhat brand is it?\nReference OCR token: \nAnswer")
    with pytest.raises(SystemExit, match="--ocr-file is read only with --ocr"):
        script("convert_textvqa").main(["--questions", str(path), "--image-root", str(images), "--ocr-file",
                                        str(ocr), "--out", str(tmp_path / "x")])


def test_gqa_converter_keeps_balanced_questions_and_counts_the_rest(tmp_path):
    path, images = gqa_fixture(tmp_path)
    out = tmp_path / "gqa"
    manifest = script("convert_gqa").main(["--questions", str(path), "--image-root", str(images), "--out", str(out)])
    assert manifest["num_samples"] == 2 and manifest["skipped"] == {"malformed_json": 1, "missing_image": 1}
    assert manifest["fingerprint"]["options"]["selection"] == {"kept": 3, "not_balanced": 1}
    record = json.loads(read_shards(out)["202"]["json"])
    assert record["conversations"][0]["content"] == ("<image>\nWhat color is it?\nAnswer the question using a single "
                                                     "word or phrase.")
    assert record["eval"] == {"answer": "blue", "question_id": "202", "image_id": "n2", "structural_type": "query",
                              "semantic_type": "attr"}


def test_scienceqa_converter_keeps_image_problems_with_lmms_eval_prompt(tmp_path):
    problems, splits, images = scienceqa_fixture(tmp_path)
    out = tmp_path / "sqa"
    manifest = script("convert_scienceqa").main(["--problems", str(problems), "--pid-splits", str(splits),
                                                 "--image-root", str(images), "--out", str(out)])
    assert manifest["num_samples"] == 2 and manifest["skipped"] == {"malformed_json": 2}  # bad answer, pid 99
    assert manifest["fingerprint"]["options"]["selection"] == {"kept": 2, "no_image": 1}
    records = {k: json.loads(v["json"]) for k, v in read_shards(out).items()}
    assert records["11"]["conversations"][0]["content"] == (
        "<image>\nContext: Look at the picture.\nWhich colour is shown?\nA. red\nB. blue\nC. green\n"
        "Answer with the option's letter from the given choices directly.")
    assert records["13"]["conversations"][0]["content"].startswith("<image>\nPick one.\nA. blue\nB. red\nAnswer")
    assert records["13"]["conversations"][1]["content"] == "B"
    assert records["13"]["eval"] == {"answer": 1, "choices": ["blue", "red"], "question_id": "13", "hint": "",
                                     "subject": "social science", "grade": "grade9"}
    with pytest.raises(SystemExit, match=r"no list of pids for --split 'dev' \(splits there: \['test', 'train'\]\)"):
        script("convert_scienceqa").main(["--problems", str(problems), "--pid-splits", str(splits), "--image-root",
                                          str(images), "--split", "dev", "--out", str(tmp_path / "dev")])


def test_three_benchmarks_from_one_eval_yaml(tiny, tmp_path):
    path, images, _ = textvqa_fixture(tmp_path / "textvqa")
    script("convert_textvqa").main(["--questions", str(path), "--image-root", str(images),
                                    "--out", str(tmp_path / "shards" / "textvqa_val")])
    path, images = gqa_fixture(tmp_path / "gqa")
    script("convert_gqa").main(["--questions", str(path), "--image-root", str(images),
                                "--out", str(tmp_path / "shards" / "gqa_testdev_balanced")])
    problems, splits, images = scienceqa_fixture(tmp_path / "sqa")
    script("convert_scienceqa").main(["--problems", str(problems), "--pid-splits", str(splits), "--image-root",
                                      str(images), "--out", str(tmp_path / "shards" / "scienceqa_img_test")])
    shards = tmp_path / "shards"
    config = tmp_path / "benchmarks.yaml"
    config.write_text(yaml.safe_dump({"tasks": [
        {"class_path": "mmpeft.eval.tasks.TextVQATask", "init_args": {"shards": str(shards / "textvqa_val")}},
        {"class_path": "mmpeft.eval.tasks.GQATask",
         "init_args": {"shards": str(shards / "gqa_testdev_balanced"), "max_new_tokens": 3}},
        {"class_path": "mmpeft.eval.tasks.GQATask", "init_args": {
            "shards": str(shards / "gqa_testdev_balanced"), "name": "gqa_official", "normalization": "official",
            "max_new_tokens": 3}},
        {"class_path": "mmpeft.eval.tasks.ScienceQATask",
         "init_args": {"shards": str(shards / "scienceqa_img_test"), "max_new_tokens": 3}},
    ]}))
    checkpoint = save_trainable(build_vlm(tiny), tmp_path / "model", extra={"global_step": 0})
    scores = cli_main(["eval", "--checkpoint", str(checkpoint), "--config", str(config), "--max-new-tokens", "3",
                       "--max-length", "512", "--out", str(tmp_path / "scores")])
    assert scores["textvqa"]["num_questions"] == 2 and 0 <= scores["textvqa"]["exact_match"] <= 1
    assert scores["gqa"]["num_questions"] == 2 and scores["gqa"]["normalization"] == "lmms_eval"
    assert "accuracy" in scores["gqa_official"] and scores["scienceqa_img"]["num_questions"] == 2
    low, high = scores["scienceqa_img"]["interval_95"]["exact_match"]
    assert 0 <= low <= scores["scienceqa_img"]["exact_match"] <= high <= 1
    rows = [json.loads(line) for line in (tmp_path / "scores.predictions.jsonl").read_text().splitlines()]
    by_task: dict = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    # the saved predictions rescore to the reported figures (nothing lost between generation and scoring)
    assert TextVQATask("unused").score(by_task["textvqa"])["exact_match"] == scores["textvqa"]["exact_match"]
    assert GQATask("unused").score(by_task["gqa"])["exact_match"] == scores["gqa"]["exact_match"]
    assert ScienceQATask("unused").score(by_task["scienceqa_img"])["exact_match"] == \
        scores["scienceqa_img"]["exact_match"]


def test_packaged_benchmarks_yaml_builds_the_three_tasks():
    from mmpeft.eval.config import load_eval_config

    tasks = load_eval_config(["eval/benchmarks.yaml"]).tasks  # other benchmarks' tasks may sit beside these
    named = {type(t).__name__: t for t in tasks}
    assert {"TextVQATask", "GQATask", "ScienceQATask"} <= set(named)
    with pytest.raises(FileNotFoundError, match="shard spec 'shards/textvqa_val' gives no readable shards"):
        named["TextVQATask"].check()  # relative to the working directory, where the converters wrote them
    assert named["GQATask"].shards == "shards/gqa_testdev_balanced" and named["GQATask"].max_new_tokens == 16
    assert named["ScienceQATask"].extraction == "lmms_eval"

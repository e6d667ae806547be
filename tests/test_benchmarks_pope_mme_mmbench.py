"""POPE, MME and MMBench: scorers on cases derived from their reference code, converters from the public formats,
and the three tasks run end to end through ``mmpeft eval --config``.

Expected values were read off the references and checked by running them on these inputs: POPE ``evaluate.py``
(AoiDragon/POPE 08d957b), lmms-eval 75571cf ``pope/utils.py`` / ``mme/utils.py``, MME ``calculation.py``
(BradyFU/Awesome-Multimodal-Large-Language-Models, Evaluation dd29509), VLMEvalKit e8e78f0 ``can_infer``.
"""

import base64
import io
import json

import pytest
import yaml
from conftest import build_vlm
from data_fixtures import save_image
from PIL import Image
from test_data_prep import read_shards, script

from mmpeft.apps.main import cli_main
from mmpeft.checkpoint import save_trainable
from mmpeft.eval.benchmarks import mmbench, mme, pope
from mmpeft.eval.tasks import MMBenchTask, MMETask, POPETask

# ------------------------------------------------------------------ POPE


@pytest.mark.parametrize("text, official, lmms_eval", [
    ("Yes", "yes", "yes"),
    ("No", "no", "no"),
    ("No.", "no", "no."),                    # lmms-eval compares the whole text: "no." is neither
    ("NO", "yes", "no"),                     # evaluate.py's words are case-sensitive: only No / not / no
    ("Not sure", "yes", "not sure"),         # "Not" is not "not"
    ("There is no dog in the image.", "no", "there is no dog in the image."),
    ("Yes, there is no doubt", "no", "yes, there is no doubt"),  # commas deleted, then "no" is a word
    ("Yes. No.", "yes", "yes. no."),         # first sentence only
    ("no\nthere", "yes", "no\nthere"),       # split on single spaces: "no\nthere" is one word
    ("Nope", "yes", "nope"),
    ("", "yes", ""),
    (" yes ", "yes", "yes"),
])
def test_pope_answer_parsing(text, official, lmms_eval):
    assert pope.official_label(text) == official
    assert pope.lmms_eval_label(text) == lmms_eval


POPE_PREDS = {1: "Yes", 2: "No", 3: "Yes.", 4: "yes", 5: "no", 6: "There is no cat."}
POPE_REFS = {1: {"answer": "yes", "category": "random"}, 2: {"answer": "yes", "category": "random"},
             3: {"answer": "yes", "category": "random"}, 4: {"answer": "no", "category": "adversarial"},
             5: {"answer": "no", "category": "adversarial"}, 6: {"answer": "no", "category": "adversarial"}}


def test_pope_lmms_eval_metrics_and_ground_truth_yes_ratio():
    s = pope.pope_scores(POPE_PREDS, POPE_REFS, "lmms_eval")
    # correct: 1, 2? no (gold yes), 3 "yes." neither, 4 wrong, 5 right, 6 neither -> 2 of 6
    assert s["accuracy"] == pytest.approx(2 / 6)
    assert (s["TP"], s["FP"], s["TN"], s["FN"]) == (1, 1, 1, 1)  # "yes." and the sentence count nowhere
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5
    assert s["yes_ratio"] == 0.5  # share of GOLD yes: 3 of 6, whatever the model said
    assert s["per_split"]["adversarial"]["yes_ratio"] == 0.0 and s["per_split"]["random"]["yes_ratio"] == 1.0
    assert s["per_split"]["adversarial"]["precision"] == 0.0  # TP + FP = 1 -> 0 / 1; zero denominators give 0
    assert s["per_question"] == {"1": 1.0, "2": 0.0, "3": 0.0, "4": 0.0, "5": 1.0, "6": 0.0}


def test_pope_official_metrics_and_predicted_yes_ratio():
    s = pope.pope_scores(POPE_PREDS, POPE_REFS, "official")
    # labels: yes, no, yes, yes, no, no  vs gold yes, yes, yes, no, no, no
    assert (s["TP"], s["FP"], s["TN"], s["FN"]) == (2, 1, 2, 1)
    assert s["accuracy"] == pytest.approx(4 / 6) and s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3) and s["f1"] == pytest.approx(2 / 3)
    assert s["yes_ratio"] == 0.5  # predicted yes: 3 of 6
    assert s["per_split"]["random"] == pytest.approx({"accuracy": 2 / 3, "precision": 1.0, "recall": 2 / 3,
                                                      "f1": 0.8, "yes_ratio": 2 / 3, "TP": 2, "FP": 0, "TN": 0,
                                                      "FN": 1, "num_questions": 3})
    with pytest.raises(ValueError, match="gold answer 'maybe' is not yes/no"):
        pope.pope_scores({1: "yes"}, {1: {"answer": "maybe"}})
    with pytest.raises(ValueError, match="parsing='llava'"):
        POPETask("unused", parsing="llava")


# ------------------------------------------------------------------ MME


@pytest.mark.parametrize("text, lmms_eval, official", [
    ("Yes", "yes", "yes"),
    ("No.", "no", "no"),
    ("y", "yes", "other"),          # one character: lmms-eval (Otter) maps y / n, calculation.py does not
    ("n.", "no", "other"),
    ("x", "other", "other"),
    ("Nope", "no", "no"),           # the first four characters decide
    ("know", "no", "no"),
    ("no, yes", "no", "no"),
    ("I think yes", "other", "other"),
    (" yes", "yes", "yes"),
    ("  yes", "yes", "other"),      # calculation.py does not strip: the window holds "  ye"
    ("", "other", "other"),
])
def test_mme_answer_parsing(text, lmms_eval, official):
    assert mme.lmms_eval_label(text) == lmms_eval
    assert mme.official_label(text) == official


def test_mme_scores_are_acc_plus_acc_plus_per_pair_summed_per_category():
    refs = {"e1": {"answer": "Yes", "category": "existence", "image_id": "a"},
            "e2": {"answer": "No", "category": "existence", "image_id": "a"},
            "e3": {"answer": "Yes", "category": "existence", "image_id": "b"},
            "e4": {"answer": "No", "category": "existence", "image_id": "b"},
            "c1": {"answer": "Yes", "category": "OCR", "image_id": "c"},
            "c2": {"answer": "No", "category": "OCR", "image_id": "c"},
            "r1": {"answer": "Yes", "category": "code_reasoning", "image_id": "d"},
            "r2": {"answer": "No", "category": "code_reasoning", "image_id": "d"}}
    preds = {"e1": "Yes", "e2": "No", "e3": "Yes", "e4": "Yes", "c1": "y", "c2": "n", "r1": "no", "r2": "yes"}
    s = mme.mme_scores(preds, refs, "lmms_eval")
    assert s["per_category"]["existence"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0, "num_images": 2,
                                              "other_answers": 0}
    assert s["per_category"]["OCR"]["score"] == 200.0 and s["per_category"]["code_reasoning"]["score"] == 0.0
    assert (s["perception"], s["cognition"], s["total"]) == (325.0, 0.0, 325.0)
    official = mme.mme_scores(preds, refs, "official")  # "y" / "n" are other there: OCR scores 0
    assert official["per_category"]["OCR"] == {"acc": 0.0, "acc_plus": 0.0, "score": 0.0, "num_images": 1,
                                               "other_answers": 2}
    assert official["perception"] == 125.0
    with pytest.raises(ValueError, match="have 1 question"):
        mme.mme_scores({"e1": "Yes"}, {"e1": refs["e1"]})
    with pytest.raises(ValueError, match="category 'colour' is none of MME's subtasks"):
        mme.mme_scores({"x": "Yes"}, {"x": {"answer": "Yes", "category": "colour", "image_id": "a"}})


# ------------------------------------------------------------------ MMBench

OPTIONS = {"A": "cat", "B": "dog", "C": "bird", "D": "fish"}


@pytest.mark.parametrize("answer, expected", [  # each checked against VLMEvalKit's can_infer
    ("A", "A"), ("B. dog", "B"), ("(C)", "C"), ("Answer: [B]", "B"), ("The answer is D.", "D"),
    ("The correct answer is **c**", "C"),             # the verbose regex ignores case
    ("It is a dog", "B"),                             # by option text
    ("the fish", "D"),
    ("B is right because of many things here", None),  # the letter is not among the last four tokens
    ("I think A is the answer but B", None),          # two letters
    ("cat and dog", None),                            # two option texts
    ("a", None), ("E", None), ("The answer is E.", None), ("", None),
    ("Sorry, I can't help with images of people yet.", "Z"), ("None of them: Z.", "Z"),
    ("It is a bird, not a dog, clearly a very small bird indeed", None),  # too long for text matching
])
def test_mmbench_can_infer(answer, expected):
    assert mmbench.can_infer(answer, OPTIONS) == expected


def _row(index, answer, category="cat1"):
    return {"index": index, "answer": answer, "options": OPTIONS, "category": category, "l2_category": "L2",
            "split": "dev"}


def test_mmbench_circular_any_rotation_wrong_fails_and_unreadable_counts_a_judge():
    refs = {"0": _row(0, "A"), "1000000": _row(1000000, "B"), "2000000": _row(2000000, "C"),
            "1": _row(1, "A", "cat2"), "1000001": _row(1000001, "D", "cat2"),
            "2": _row(2, "B", "cat2"), "1000002": _row(1000002, "C", "cat2"),
            "3": _row(3, "C", "cat2"), "1000003": _row(1000003, "D", "cat2")}
    preds = {"0": "A", "1000000": "B. dog", "2000000": "C",      # every rotation right: hit
             "1": "A", "1000001": "hmm",                        # one unreadable: a judge would decide; 0 here
             "2": "D", "1000002": "hmm",                        # a wrong rotation fails before any judge
             "3": "C", "1000003": "B"}                          # base right, a rotation wrong: fails
    s = mmbench.mmbench_scores(preds, refs)
    assert s["per_question"] == {"0": 1.0, "1": 0.0, "2": 0.0, "3": 0.0}
    assert s["accuracy"] == 0.25 and s["num_questions"] == 4 and s["num_rows"] == 9
    assert s["judge_needed"] == 1 and s["judge"] is None
    assert s["per_category"] == {"cat1": 1.0, "cat2": 0.0} and s["per_l2_category"] == {"L2": 0.25}
    with pytest.raises(ValueError, match="without the base row"):
        mmbench.mmbench_scores({"1000000": "B"}, {"1000000": _row(1000000, "B")})
    with pytest.raises(ValueError, match="answer 'E' is not one of its options"):
        mmbench.mmbench_scores({"0": "A"}, {"0": _row(0, "E")})


# ------------------------------------------------------------------ converters -> shards -> mmpeft eval --config

def pope_fixture(root):
    for name, colour in (("COCO_val2014_000000000001.jpg", "red"), ("COCO_val2014_000000000002.jpg", "blue")):
        save_image(root / "val2014" / name, colour)
    lines = {
        "adversarial": [{"question_id": 1, "image": "COCO_val2014_000000000001.jpg",
                         "text": " Is there a dog in the image?", "label": "yes"},
                        {"question_id": 2, "image": "COCO_val2014_000000000002.jpg",
                         "text": "Is there a cat in the image?", "label": "no"},
                        {"question_id": 3, "image": "COCO_val2014_000000000009.jpg", "text": "Gone?", "label": "no"}],
        "random": [{"question_id": 1, "image": "COCO_val2014_000000000002.jpg",
                    "text": "Is there a car in the image?", "label": "no"},
                   {"question_id": 1, "image": "COCO_val2014_000000000002.jpg", "text": "Again?", "label": "no"},
                   {"question_id": 4, "image": "COCO_val2014_000000000001.jpg", "text": "Bad?", "label": "maybe"}],
    }
    paths = []
    for split, rows in lines.items():
        path = root / f"coco_pope_{split}.json"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
        paths.append(path)
    return paths, root / "val2014"


def mme_fixture(root):
    mme_root = root / "MME_Benchmark_release_version"
    save_image(mme_root / "existence" / "000000006040.jpg", "red")
    (mme_root / "existence" / "000000006040.txt").write_text(
        "Is there a train in this image? Please answer yes or no.\tYes\n"
        "Is there a bed in this image? Please answer yes or no.\tNo\n")
    save_image(mme_root / "existence" / "000000006041.jpg", "blue")
    (mme_root / "existence" / "000000006041.txt").write_text("Only one line? Please answer yes or no.\tYes\n")
    save_image(mme_root / "artwork" / "images" / "10002.jpg", "green")
    (mme_root / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (mme_root / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this artwork created by Lucas? Please answer yes or no.\tYes\r\n"
        "Is this artwork created by Bosch? Please answer yes or no.\tNo\r\n")
    (mme_root / "artwork" / "questions_answers_YN" / "10003.txt").write_text("Q1?\tYes\nQ2?\tNo\n")  # no image
    return mme_root


def _png_base64(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def mmbench_fixture(root):
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "split", "image"]
    rows = [
        [0, "What colour is it?", "Look closely.", "red", "blue", "", "", "A", "color", "perception", "dev",
         _png_base64("red")],
        [1000000, "What colour is it?", "Look closely.", "blue", "red", "", "", "B", "color", "perception", "dev",
         "0"],
        [1, "Which shape?", "nan", "square", "circle", "None", "", "B", "shape", "perception", "dev",
         _png_base64("blue")],
        [2, "Test split?", "", "x", "y", "", "", "", "shape", "perception", "test", _png_base64("green")],
        [3, "Bad answer?", "", "x", "y", "", "", "D", "shape", "perception", "dev", _png_base64("green")],
    ]
    root.mkdir(parents=True, exist_ok=True)
    path = root / "MMBench_DEV_EN.tsv"
    path.write_text("\n".join("\t".join(str(v) for v in row) for row in [header] + rows) + "\n")
    return path


def test_pope_converter_prompt_splits_and_counted_skips(tmp_path):
    paths, images = pope_fixture(tmp_path)
    out = tmp_path / "pope"
    manifest = script("convert_pope").main(["--questions", *map(str, paths), "--image-root", str(images),
                                            "--out", str(out)])
    assert manifest["num_samples"] == 3
    # two invalid JSON lines, a repeated id, a label "maybe"; one missing image
    assert manifest["skipped"] == {"malformed_json": 4, "missing_image": 1}
    record = json.loads(read_shards(out)["pope-adversarial-1"]["json"])
    assert record["conversations"][0]["content"] == ("<image>\nIs there a dog in the image?\nAnswer the question "
                                                     "using a single word or phrase.")
    assert record["conversations"][1]["content"] == "yes"
    assert record["eval"] == {"answer": "yes", "category": "adversarial", "question_id": "adversarial-1",
                              "image_id": "COCO_val2014_000000000001.jpg"}
    with pytest.raises(SystemExit, match="no split in the file name"):
        bad = tmp_path / "questions.json"
        bad.write_text("")
        script("convert_pope").main(["--questions", str(bad), "--image-root", str(images),
                                     "--out", str(tmp_path / "x")])


def test_mme_converter_both_layouts_pairs_and_counted_skips(tmp_path):
    mme_root = mme_fixture(tmp_path)
    out = tmp_path / "mme"
    with pytest.raises(SystemExit, match="no folder 'count'"):
        script("convert_mme").main(["--mme-root", str(mme_root), "--out", str(out)])
    manifest = script("convert_mme").main(["--mme-root", str(mme_root), "--subtasks", "existence", "artwork",
                                           "--out", str(out)])
    assert manifest["num_samples"] == 4 and manifest["skipped"] == {"malformed_json": 2, "missing_image": 2}
    records = {k: json.loads(v["json"]) for k, v in read_shards(out).items()}
    first = records["mme-existence-000000006040-1"]
    assert first["conversations"][0]["content"] == ("<image>\nIs there a train in this image?\nAnswer the question "
                                                    "using a single word or phrase.")
    assert first["eval"] == {"answer": "Yes", "category": "existence", "image_id": "existence/000000006040.jpg",
                             "question_id": "existence/000000006040/1"}
    assert records["mme-artwork-10002-2"]["eval"]["answer"] == "No"  # \r\n lines read as the release writes them


def test_mmbench_converter_prompt_rotations_and_counted_skips(tmp_path):
    path = mmbench_fixture(tmp_path)
    out = tmp_path / "mmbench"
    manifest = script("convert_mmbench").main(["--tsv", str(path), "--out", str(out)])
    assert manifest["num_samples"] == 3 and manifest["skipped"] == {"no_answers": 1, "malformed_json": 1}
    records = {k: json.loads(v["json"]) for k, v in read_shards(out).items()}
    assert records["mmbench-0"]["conversations"][0]["content"] == (
        "<image>\nLook closely. What colour is it? There are several options:\nA. red\nB. blue\n\n"
        "Answer with the option's letter from the given choices directly.")
    # a "nan" hint is no hint; "None" is a missing value to pandas, as VLMEvalKit reads the TSV
    assert records["mmbench-1"]["conversations"][0]["content"].startswith(
        "<image>\nWhich shape? There are several options:\nA. square\nB. circle\n\nAnswer")
    assert records["mmbench-1"]["eval"]["options"] == {"A": "square", "B": "circle"}
    rotation = records["mmbench-1000000"]
    assert rotation["eval"] == {"index": 1000000, "answer": "B", "options": {"A": "blue", "B": "red"},
                                "question_id": "1000000", "category": "color", "l2_category": "perception",
                                "split": "dev"}
    assert read_shards(out)["mmbench-1000000"]["img0.png"] == read_shards(out)["mmbench-0"]["img0.png"]


def test_three_benchmarks_from_one_eval_yaml(tiny, tmp_path):
    shards = tmp_path / "shards"
    paths, images = pope_fixture(tmp_path / "pope")
    script("convert_pope").main(["--questions", *map(str, paths), "--image-root", str(images),
                                 "--out", str(shards / "pope")])
    script("convert_mme").main(["--mme-root", str(mme_fixture(tmp_path / "mme")), "--subtasks", "existence",
                                "artwork", "--out", str(shards / "mme")])
    script("convert_mmbench").main(["--tsv", str(mmbench_fixture(tmp_path / "mmb")), "--out",
                                    str(shards / "mmbench_dev_en")])
    config = tmp_path / "benchmarks.yaml"
    config.write_text(yaml.safe_dump({"tasks": [
        {"class_path": "mmpeft.eval.tasks.POPETask", "init_args": {"shards": str(shards / "pope"),
                                                                   "max_new_tokens": 3}},
        {"class_path": "mmpeft.eval.tasks.POPETask", "init_args": {
            "shards": str(shards / "pope"), "name": "pope_official", "parsing": "official", "max_new_tokens": 3}},
        {"class_path": "mmpeft.eval.tasks.MMETask", "init_args": {"shards": str(shards / "mme"),
                                                                  "max_new_tokens": 3}},
        {"class_path": "mmpeft.eval.tasks.MMBenchTask", "init_args": {"shards": str(shards / "mmbench_dev_en")}},
    ]}))
    checkpoint = save_trainable(build_vlm(tiny), tmp_path / "model", extra={"global_step": 0})
    scores = cli_main(["eval", "--checkpoint", str(checkpoint), "--config", str(config), "--max-new-tokens", "3",
                       "--max-length", "512", "--out", str(tmp_path / "scores")])
    assert scores["pope"]["num_questions"] == 3 and set(scores["pope"]["per_split"]) == {"adversarial", "random"}
    assert scores["pope"]["yes_ratio"] == pytest.approx(1 / 3)  # lmms-eval: gold yes, whatever was generated
    assert scores["pope_official"]["parsing"] == "official"
    assert scores["mme"]["num_questions"] == 4 and set(scores["mme"]["per_category"]) == {"existence", "artwork"}
    assert 0 <= scores["mme"]["perception"] <= 400 and scores["mme"]["cognition"] == 0
    assert scores["mmbench"]["num_questions"] == 2 and scores["mmbench"]["num_rows"] == 3
    rows = [json.loads(line) for line in (tmp_path / "scores.predictions.jsonl").read_text().splitlines()]
    by_task: dict = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    # the saved predictions rescore to the reported figures
    assert POPETask("unused").score(by_task["pope"])["accuracy"] == scores["pope"]["accuracy"]
    assert MMETask("unused").score(by_task["mme"])["perception"] == scores["mme"]["perception"]
    assert MMBenchTask("unused").score(by_task["mmbench"])["accuracy"] == scores["mmbench"]["accuracy"]


def test_packaged_benchmarks_yaml_builds_pope_mme_mmbench():
    from mmpeft.eval.config import load_eval_config

    named = {type(t).__name__: t for t in load_eval_config(["eval/benchmarks.yaml"]).tasks}
    assert {"POPETask", "MMETask", "MMBenchTask"} <= set(named)
    assert named["POPETask"].shards == "shards/pope" and named["POPETask"].max_new_tokens == 128
    assert named["MMETask"].max_new_tokens == 16 and named["MMBenchTask"].shards == "shards/mmbench_dev_en"
    with pytest.raises(FileNotFoundError, match="shard spec 'shards/mme' gives no readable shards"):
        named["MMETask"].check()

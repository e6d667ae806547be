import json
import random
import tarfile

from mmpeft.data.synthetic import (
    COLUMNS,
    QUESTION_TYPES,
    Obj,
    draw_scene,
    question,
    render,
    scene_samples,
    write_benchmark,
)


def test_generator_is_deterministic_by_seed(tmp_path):
    a = write_benchmark(str(tmp_path / "a"), seed=3, train_scenes=12, eval_scenes=6, eval_per_type=4,
                        samples_per_shard=16)
    b = write_benchmark(str(tmp_path / "b"), seed=3, train_scenes=12, eval_scenes=6, eval_per_type=4,
                        samples_per_shard=16)
    assert a == b
    for split in ("train", "test_vqa", "test_captions"):
        for shard in sorted((tmp_path / "a" / split).glob("*.tar")):
            assert shard.read_bytes() == (tmp_path / "b" / split / shard.name).read_bytes()
    write_benchmark(str(tmp_path / "c"), seed=4, train_scenes=12, eval_scenes=6, eval_per_type=4)
    assert (tmp_path / "c" / "train" / "shard-000000.tar").read_bytes() != \
        (tmp_path / "a" / "train" / "shard-000000.tar").read_bytes()


def answer_from_scene(objects: list[Obj], question_text: str) -> str:
    """An independent reading of the scene to check the generator's answers."""
    q = question_text.split("\n")[1]
    if q.startswith("What color is the "):
        shape = q.removeprefix("What color is the ").rstrip("?")
        return next(o.colour for o in objects if o.shape == shape)
    if q.startswith("What shape is the "):
        colour = q.removeprefix("What shape is the ").removesuffix(" object?")
        return next(o.shape for o in objects if o.colour == colour)
    if q.startswith("How many"):
        return str(len(objects))
    if q.startswith("Is there a "):
        colour, shape = q.removeprefix("Is there a ").rstrip("?").split()
        return "yes" if any(o.colour == colour and o.shape == shape for o in objects) else "no"
    colour, shape = q.removeprefix("Is the ").split(" on the")[0].split()
    return COLUMNS[next(o.col for o in objects if o.colour == colour and o.shape == shape)]


def test_answers_are_consistent_with_the_drawn_scene():
    seen = set()
    for index in range(150):
        objects = draw_scene(0, "test", index)
        for sample in scene_samples(0, "test", index, questions_per_scene=5):
            if sample["kind"] != "vqa":
                assert all(o.colour in sample["turns"][1]["content"] for o in objects)
                continue
            qtype = sample["eval"]["question_type"]
            seen.add(qtype)
            answer = sample["turns"][1]["content"]
            assert answer == answer_from_scene(objects, sample["turns"][0]["content"]), sample["turns"]
            assert sample["eval"]["answers"] == [answer] * 10
    assert seen == set(QUESTION_TYPES)


def test_rendered_pixels_show_the_objects():
    obj = Obj("square", "red", "large", 0, 0)
    image = render([obj], size=224)
    assert image.getpixel((37, 37)) == (220, 40, 40) and image.getpixel((190, 190)) == (235, 235, 235)
    q, a = question([obj], "is there a", random.Random(1))
    assert (a == "yes") == (q == "Is there a red square?")


def test_shards_hold_the_schema(tmp_path):
    write_benchmark(str(tmp_path), seed=0, train_scenes=4, eval_scenes=3, eval_per_type=2)
    with tarfile.open(next((tmp_path / "test_vqa").glob("*.tar"))) as tar:
        record = json.loads(tar.extractfile(next(n for n in tar.getnames() if n.endswith(".json"))).read())
    assert record["images"] == ["img0.png"] and record["eval"]["question_type"] in QUESTION_TYPES
    baselines = json.loads((tmp_path / "baselines.json").read_text())
    assert set(baselines["majority_answer"]) <= set(QUESTION_TYPES) and baselines["constant_caption"]

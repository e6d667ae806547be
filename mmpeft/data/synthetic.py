"""A procedurally drawn vision-language benchmark: shape scenes with captions and typed VQA questions.

Each scene (224x224 by default) holds 1-3 objects in distinct cells of a 3x3 grid; an object has a shape (circle,
square, triangle), a colour (6), a size (small, large). Every scene gets three reference captions and questions of
five types, each with 10 annotator answers in the VQAv2 form:

====================  ===========================================  ==============  ============
question_type         question                                     answer          answer_type
====================  ===========================================  ==============  ============
what color is the     What color is the {shape}? (shape unique)    a colour        other
what shape is the     What shape is the {colour} object? (unique)  a shape         other
how many              How many objects are there?                  1, 2 or 3       number
is there a            Is there a {colour} {shape}?                 yes / no        yes/no
where is the          Is the {colour} {shape} on the left, in      left, center,   other
                      the center or on the right?                  right
====================  ===========================================  ==============  ============

"Is there" negatives name a colour absent from the scene (half the questions), so the answer is decidable from
colour presence. Everything is a function of (seed, split, index): the same seed draws the same benchmark.
"""

from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image, ImageDraw

from mmpeft.atomic import write_json_atomic

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
           "purple": (140, 60, 180), "orange": (240, 140, 30)}
SIZES = ("small", "large")
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
QUESTION_TYPES = ("what color is the", "what shape is the", "how many", "is there a", "where is the")
ANSWER_TYPES = {"what color is the": "other", "what shape is the": "other", "how many": "number",
                "is there a": "yes/no", "where is the": "other"}
SPLIT_OFFSETS = {"train": 0, "val": 1_000_000, "test": 2_000_000}


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    row: int
    col: int

    @property
    def position(self) -> str:
        return f"{ROWS[self.row]} {COLUMNS[self.col]}" if (self.row, self.col) != (1, 1) else "center"

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


def draw_scene(seed: int, split: str, index: int) -> list[Obj]:
    rng = random.Random(f"{seed}-{split}-{index}")
    cells = rng.sample(range(9), rng.randint(1, 3))
    return [Obj(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(SIZES), c // 3, c % 3) for c in cells]


def render(objects: list[Obj], size: int = 224, seed: int = 0) -> Image.Image:
    """The scene as an RGB image: light-grey background, objects jittered inside their grid cells."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    cell = size / 3
    for o in objects:
        radius = cell * (0.18 if o.size == "small" else 0.36) * rng.uniform(0.9, 1.1)
        cx = (o.col + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        cy = (o.row + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - radius), (cx - radius, cy + radius * 0.85), (cx + radius, cy + radius * 0.85)],
                         fill=fill)
    return image


def captions(objects: list[Obj]) -> list[str]:
    """Three reference captions of a scene."""
    located = [f"{o.phrase()} at the {o.position}" if o.position != "center" else f"{o.phrase()} in the center"
               for o in objects]
    plain = [o.phrase() for o in objects]
    count = {1: "one shape", 2: "two shapes", 3: "three shapes"}[len(objects)]
    short = [f"a {o.colour} {o.shape}" for o in objects]
    return [_join(located), f"there is {_join(plain)}", f"{count}: {_join(short)}"]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def question(objects: list[Obj], qtype: str, rng: random.Random) -> tuple[str, str] | None:
    """A ``(question, answer)`` of ``qtype`` about the scene, or None when the scene cannot ask it unambiguously."""
    shapes = [o.shape for o in objects]
    colours = [o.colour for o in objects]
    if qtype == "what color is the":
        unique = [o for o in objects if shapes.count(o.shape) == 1]
        if not unique:
            return None
        o = rng.choice(unique)
        return f"What color is the {o.shape}?", o.colour
    if qtype == "what shape is the":
        unique = [o for o in objects if colours.count(o.colour) == 1]
        if not unique:
            return None
        o = rng.choice(unique)
        return f"What shape is the {o.colour} object?", o.shape
    if qtype == "how many":
        return "How many objects are there?", str(len(objects))
    if qtype == "is there a":
        if rng.random() < 0.5:
            o = rng.choice(objects)
            return f"Is there a {o.colour} {o.shape}?", "yes"
        absent = [c for c in COLOURS if c not in colours]
        return f"Is there a {rng.choice(absent)} {rng.choice(SHAPES)}?", "no"
    if qtype == "where is the":
        unique = [o for o in objects if sum(p.colour == o.colour and p.shape == o.shape for p in objects) == 1]
        if not unique:
            return None
        o = rng.choice(unique)
        return f"Is the {o.colour} {o.shape} on the left, in the center or on the right?", COLUMNS[o.col]
    raise ValueError(f"unknown question type {qtype!r}; valid: {QUESTION_TYPES}")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def scene_samples(seed: int, split: str, index: int, questions_per_scene: int, image_size: int = 224,
                  with_caption: bool = True, qtypes: tuple[str, ...] = QUESTION_TYPES) -> list[dict[str, Any]]:
    """The samples of one scene: ``{"key", "kind", "record fields", "image"}`` dicts (image as PNG bytes)."""
    objects = draw_scene(seed, split, index)
    image = png_bytes(render(objects, image_size, seed=random.Random(f"{seed}-{split}-{index}-render").getrandbits(32)))
    rng = random.Random(f"{seed}-{split}-{index}-questions")
    image_id = SPLIT_OFFSETS[split] + index
    scene = [asdict(o) for o in objects]
    refs = captions(objects)
    out = []
    if with_caption:
        out.append({"kind": "caption", "image_id": image_id, "image": image, "turns": [
            {"role": "user", "content": "<image>\nDescribe the image briefly."},
            {"role": "assistant", "content": refs[rng.randrange(len(refs))]}],
            "eval": {"captions": refs, "image_id": image_id, "scene": scene}})
    types = list(qtypes)
    rng.shuffle(types)
    for qtype in types:
        if len(out) - with_caption >= questions_per_scene:
            break
        qa = question(objects, qtype, rng)
        if qa is None:
            continue
        q, a = qa
        qid = image_id * 10 + QUESTION_TYPES.index(qtype)
        out.append({"kind": "vqa", "image_id": image_id, "image": image, "turns": [
            {"role": "user", "content": f"<image>\n{q}\nAnswer with one word."},
            {"role": "assistant", "content": a}],
            "eval": {"answers": [a] * 10, "question_id": qid, "question_type": qtype,
                     "answer_type": ANSWER_TYPES[qtype], "image_id": image_id, "scene": scene}})
    return out


def _prepare(sample: dict[str, Any]):
    from mmpeft.data.schema import image_field, make_record
    from mmpeft.data.shards import PreparedSample

    field = image_field(0, "png")
    key = f"{sample['image_id']:08d}_{sample['kind']}{sample['eval'].get('question_id', 0) % 10}"
    record = make_record(f"shapes-{key}", f"shapes_{sample['kind']}", conversations=sample["turns"],
                         images=[field], eval_fields=sample["eval"])
    return PreparedSample(key=key, record=record, files={field: sample["image"]})


def write_benchmark(out: str, seed: int = 0, train_scenes: int = 2000, eval_scenes: int = 150,
                    questions_per_scene: int = 2, eval_per_type: int = 100, image_size: int = 224,
                    samples_per_shard: int = 500) -> dict[str, Any]:
    """Write train / val / test shards and ``baselines.json`` into ``out`` (see module docstring).

    ``train/`` mixes one caption and ``questions_per_scene`` questions per scene; ``{val,test}_vqa/`` hold up to
    ``eval_per_type`` questions of every type; ``{val,test}_captions/`` one caption sample per scene.
    """
    from collections import Counter
    from pathlib import Path

    from mmpeft.data.shards import write_shards

    root = Path(out)
    train = [s for i in range(train_scenes) for s in scene_samples(seed, "train", i, questions_per_scene, image_size)]
    manifests = {"train": write_shards(train, _prepare, root / "train", samples_per_shard=samples_per_shard,
                                       description="synthetic train")}
    for split in ("val", "test"):
        samples = [scene_samples(seed, split, i, len(QUESTION_TYPES), image_size) for i in range(eval_scenes)]
        per_type: Counter[str] = Counter()
        vqa = []
        for s in (s for scene in samples for s in scene if s["kind"] == "vqa"):
            if per_type[s["eval"]["question_type"]] < eval_per_type:
                per_type[s["eval"]["question_type"]] += 1
                vqa.append(s)
        caps = [scene[0] for scene in samples]
        manifests[f"{split}_vqa"] = write_shards(vqa, _prepare, root / f"{split}_vqa",
                                                 samples_per_shard=samples_per_shard, description=f"{split} VQA")
        manifests[f"{split}_captions"] = write_shards(caps, _prepare, root / f"{split}_captions",
                                                      samples_per_shard=samples_per_shard,
                                                      description=f"{split} captions")
    answers: dict[str, Counter[str]] = {t: Counter() for t in QUESTION_TYPES}
    shape_words: Counter[str] = Counter()
    for s in train:
        if s["kind"] == "vqa":
            answers[s["eval"]["question_type"]][s["turns"][1]["content"]] += 1
        else:
            shape_words.update((o["size"], o["colour"], o["shape"]) for o in s["eval"]["scene"])
    size, colour, shape = shape_words.most_common(1)[0][0]
    baselines = {
        "majority_answer": {t: {"answer": c.most_common(1)[0][0],
                                "train_frequency": c.most_common(1)[0][1] / sum(c.values())}
                            for t, c in answers.items() if c},
        "constant_caption": f"a {size} {colour} {shape} in the center",
        "seed": seed,
    }
    # written last and atomically: the demo takes its presence as "benchmark complete"
    write_json_atomic(root / "baselines.json", baselines)
    return {"manifests": {k: {"num_samples": m["num_samples"]} for k, m in manifests.items()}, **baselines}

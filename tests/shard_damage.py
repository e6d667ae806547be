"""Real damaged shards for the integrity tests: written by the project's writer (with its manifest), then cut or
overwritten at a chosen sample, the way a killed copy or a bad disk leaves them."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image

from mmpeft.data.schema import image_field, make_record
from mmpeft.data.shards import PreparedSample, shard_urls, write_shards

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 230, 40)}

# how -> (lost reason, whether webdataset's reader raises on it; the other cases end the shard quietly)
DAMAGE = {
    "cut_in_data": ("truncated_shard", True),
    "cut_at_boundary": ("truncated_shard", False),
    "cut_in_header": ("truncated_shard", False),
    "garbage_header": ("corrupt_shard", False),
    "zero_header": ("corrupt_shard", False),
}


def image_sample(i: int, words: int = 0) -> PreparedSample:
    """A colour-naming sample (``words`` > 0: padded with that many extra words, to make it over-long)."""
    colour = list(COLOURS)[i % 4]
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), COLOURS[colour]).save(buf, format="PNG")
    question = "<image>\nWhat color is the picture?" + " word" * words
    record = make_record(f"colour-{i}", "colours", images=[image_field(0, "png")], conversations=[
        {"role": "user", "content": question}, {"role": "assistant", "content": colour}],
        eval_fields={"answers": [colour] * 10})
    return PreparedSample(key=f"{i:06d}", record=record, files={image_field(0, "png"): buf.getvalue()})


def text_sample(i: int, words: int = 4) -> PreparedSample:
    return PreparedSample(key=f"{i:06d}", record=make_record(f"text-{i}", "replay", text=" ".join(["word"] * words)))


def write_dir(directory: Path, n: int, per_shard: int, sample=image_sample) -> list[str]:
    """Shards + manifest through ``write_shards``; returns the shard paths (manifest order)."""
    write_shards(range(n), sample, directory, samples_per_shard=per_shard, workers=1)
    return shard_urls(directory)


def first_member(path: str | Path, key: str) -> tarfile.TarInfo:
    """The first tar member of sample ``key`` (its ``offset`` is where its header blocks start, PAX included)."""
    with tarfile.open(path) as tar:
        return next(m for m in tar.getmembers() if m.name.split(".", 1)[0] == key)


def damage(path: str | Path, how: str, key: str) -> None:
    """Damage the shard at sample ``key``: one of ``DAMAGE`` (cut the file, or overwrite a header block)."""
    member = first_member(path, key)
    data = bytearray(Path(path).read_bytes())
    if how == "cut_in_data":
        data = data[: member.offset_data + 3]
    elif how == "cut_at_boundary":
        data = data[: member.offset]
    elif how == "cut_in_header":
        data = data[: member.offset + 100]
    elif how == "garbage_header":
        data[member.offset : member.offset + 512] = b"\xff" * 512
    elif how == "zero_header":
        data[member.offset : member.offset + 512] = bytes(512)
    else:
        raise ValueError(how)
    Path(path).write_bytes(bytes(data))

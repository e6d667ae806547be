#!/usr/bin/env python
"""Text-only JSONL -> mmpeft replay shards (same schema as image data, no images).

Each line is ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}]}`` (chat; assistant turns are
learned) or ``{"text": "..."}`` (plain text; every token is learned), with an optional ``"id"``.

    python data_prep/convert_text.py --jsonl replay.jsonl --source replay_chat --out shards/replay
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmpeft.data.schema import SampleError, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args


def make_prepare(path: Path, source: str):
    def prepare(item: tuple[int, str]) -> PreparedSample:
        line_no, line = item
        where = f"{path.name}:{line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise SampleError("malformed_json", f"not valid JSON ({e})", where) from e
        if not isinstance(obj, dict) or ("messages" in obj) == ("text" in obj):
            raise SampleError("malformed_json", "each line needs exactly one of 'messages' and 'text'", where)
        sample_id = str(obj.get("id", f"{path.stem}-{line_no}"))
        record = make_record(sample_id, source, conversations=obj.get("messages"), text=obj.get("text"))
        if record["conversations"] is not None:
            record["conversations"] = [{"role": t["role"], "content": t["content"]} for t in record["conversations"]]
        return PreparedSample(key=f"{line_no:09d}", record=record)

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jsonl", required=True, type=Path, help="input JSONL file")
    parser.add_argument("--source", default="text", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    with open(args.jsonl, encoding="utf-8") as f:
        items = [(i, line) for i, line in enumerate(f, start=1) if line.strip()]
    return write_shards_from_args(args, items, make_prepare(args.jsonl, args.source),
                                  description=f"text {args.jsonl.name}")


if __name__ == "__main__":
    main()

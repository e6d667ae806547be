#!/usr/bin/env python
"""Text-only JSONL -> mmpeft replay shards (same schema as image data, no images).

Each line is ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}]}`` (chat; assistant turns are
learned) or ``{"text": "..."}`` (plain text; every token is learned), with an optional ``"id"`` (a string or a
number: stored as ``str(id)``, the original value kept in ``eval.source_id``; without one, ``{file stem}-{line}``).

    python data_prep/convert_text.py --jsonl replay.jsonl --source replay_chat --out shards/replay

Lines are independent records, so a bad line is one counted skip naming ``file:line`` (and the column, for JSON
that does not parse or is not UTF-8), never the run: ``malformed_json``, ``empty_text``, ``no_assistant_turn``,
``bad_turn_order`` (turns must be [system] user, assistant, user, ...). Blank lines are not records.
A rerun resumes only an output made with the same options and input bytes (see ``--overwrite``).
"""

from __future__ import annotations

import argparse
import reprlib
from pathlib import Path

from mmpeft.data.schema import SampleError, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args
from mmpeft.data.source_files import parse_json_line, read_json_lines


def make_prepare(path: Path, source: str):
    def prepare(item: tuple[int, bytes]) -> PreparedSample:
        line_no, line = item
        where = f"{path.name}:{line_no}"
        obj = parse_json_line(line, path, line_no)
        if not isinstance(obj, dict) or ("messages" in obj) == ("text" in obj):
            raise SampleError("malformed_json", "each line needs an object with exactly one of 'messages' and 'text'",
                              where)
        eval_fields = {}
        sample_id = f"{path.stem}-{line_no}"
        if "id" in obj:
            value = obj["id"]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
                raise SampleError("malformed_json", f"'id' must be a non-empty string or a number, not "
                                  f"{reprlib.repr(value)}", where)
            sample_id, eval_fields = str(value), {"source_id": value}
        record = make_record(sample_id, source, conversations=obj.get("messages"), text=obj.get("text"),
                             eval_fields=eval_fields, where=where)
        if record["conversations"] is not None:  # validated: keep only the schema's keys of each turn
            record["conversations"] = [{"role": t["role"], "content": t["content"]} for t in record["conversations"]]
        return PreparedSample(key=f"{line_no:09d}", record=record)

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jsonl", required=True, type=Path, help="input JSONL file")
    parser.add_argument("--source", default="text", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    items = read_json_lines(args.jsonl)
    return write_shards_from_args(args, items, make_prepare(args.jsonl, args.source),
                                  description=f"text {args.jsonl.name}", converter="convert_text",
                                  options={"source": args.source}, inputs={"jsonl": args.jsonl})


if __name__ == "__main__":
    main()

"""Random access to the records of a non-shard source: JSON lists, JSON Lines, and ``datasets`` tables.

A ``RecordTable`` has a length, ``raw(i)`` (the record as stored, a dict; a JSON Lines line that does not parse
raises ``SampleError('malformed_json')``) and ``where(i)`` (``file[index]``, ``file:line`` or ``name[row i]``, for
skip messages). Tables load in the process that builds the loader, before DataLoader workers start (forked
workers share them; ``datasets`` tables are memory-mapped Arrow files). A whole file that cannot be read is a
ValueError naming it.
"""

from __future__ import annotations

from bisect import bisect_right
from pathlib import Path
from typing import Any

from mmpeft.data.source_files import load_json_file, parse_json_line, read_json_lines
from mmpeft.data.sources import HF_DIR_FILES, SourceSpec

HF_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json"}


class JsonListTable:
    """A JSON file holding a list of records (LLaVA's and ShareGPT's files)."""

    def __init__(self, path: str):
        self.path = Path(path)
        try:
            data = load_json_file(self.path, "a JSON list of records")
        except SystemExit as e:  # the converters' whole-file error; here a run-time ValueError
            raise ValueError(str(e)) from None
        if not isinstance(data, list):
            raise ValueError(f"{self.path}: expected a JSON list of records, got {type(data).__name__} (a JSON Lines "
                             "file should be named .jsonl)")
        self.records = data

    def __len__(self) -> int:
        return len(self.records)

    def raw(self, i: int) -> Any:
        return self.records[i]

    def where(self, i: int) -> str:
        return f"{self.path.name}[{i}]"


class JsonLinesTable:
    """A JSON Lines file: one record per non-blank line, decoded when read (a bad line is one counted skip)."""

    def __init__(self, path: str):
        self.path = Path(path)
        try:
            self.lines = read_json_lines(self.path)
        except SystemExit as e:
            raise ValueError(str(e)) from None

    def __len__(self) -> int:
        return len(self.lines)

    def raw(self, i: int) -> Any:
        line_no, line = self.lines[i]
        return parse_json_line(line, self.path, line_no)

    def where(self, i: int) -> str:
        return f"{self.path.name}:{self.lines[i][0]}"


class HFTable:
    """A ``datasets.Dataset``: a ``save_to_disk`` directory, or parquet / arrow / json(l) files through
    ``datasets.load_dataset(<builder>, data_files=...)`` (which caches the converted table in ``datasets``' cache).
    Rows are read as Arrow stores them, so image columns are ``{"bytes", "path"}`` and images go through mmpeft's
    own decoding like every other source."""

    def __init__(self, paths: list[str], split: str, label: str):
        import datasets  # lazily: only hf sources need it

        self.label = label
        first = Path(paths[0])
        try:
            if first.is_dir() and any((first / f).exists() for f in HF_DIR_FILES):
                if len(paths) > 1:
                    raise ValueError(f"{label}: give one save_to_disk directory per source")
                ds = datasets.load_from_disk(str(first))
                if isinstance(ds, datasets.DatasetDict):
                    if split not in ds:
                        raise ValueError(f"{label}: {first} has splits {sorted(ds)}, not {split!r}: set split")
                    ds = ds[split]
            else:
                builders = {HF_BUILDERS.get(Path(p).suffix) for p in paths}
                if len(builders) != 1 or None in builders:
                    raise ValueError(f"{label}: files must all be .parquet, .arrow or .json/.jsonl (got {paths})")
                ds = datasets.load_dataset(builders.pop(), data_files=[str(p) for p in paths], split=split)
        except (OSError, datasets.exceptions.DatasetGenerationError) as e:
            raise ValueError(f"{label}: datasets cannot read {paths}: {e}") from e
        # Arrow rows as stored: image features stay {"bytes", "path"} (no decoding, and no cast, which would write
        # a cache file into the user's dataset directory)
        self.dataset = ds.with_format("arrow")
        self.columns = list(ds.column_names)

    def __len__(self) -> int:
        return len(self.dataset)

    def raw(self, i: int) -> Any:
        return self.dataset[i].to_pylist()[0]

    def where(self, i: int) -> str:
        return f"{self.label}[row {i}]"


class ChainedTable:
    """Several tables read as one (a source with a list of JSON files)."""

    def __init__(self, tables: list[Any]):
        self.tables = tables
        self.starts = [0]
        for table in tables:
            self.starts.append(self.starts[-1] + len(table))

    def __len__(self) -> int:
        return self.starts[-1]

    def _locate(self, i: int) -> tuple[Any, int]:
        t = bisect_right(self.starts, i) - 1
        return self.tables[t], i - self.starts[t]

    def raw(self, i: int) -> Any:
        table, j = self._locate(i)
        return table.raw(j)

    def where(self, i: int) -> str:
        table, j = self._locate(i)
        return table.where(j)


def open_table(spec: SourceSpec) -> Any:
    """The records of a non-shard source."""
    if spec.format == "hf" or any(Path(p).suffix in (".parquet", ".arrow") or Path(p).is_dir() for p in spec.paths):
        return HFTable(list(spec.paths), spec.split, f"data.sources {spec.name} ({spec.paths[0]})")
    tables = [JsonLinesTable(p) if Path(p).suffix == ".jsonl" else JsonListTable(p) for p in spec.paths]
    return tables[0] if len(tables) == 1 else ChainedTable(tables)


def hf_layout(columns: list[str], mapping: dict[str, str]) -> str | None:
    """The layout an ``hf`` row reads in, from its columns (after the ``columns`` mapping): ``messages`` with a
    ``messages`` or ``text`` column, ``sharegpt`` with ``conversations``; None when neither is there."""
    present = set(columns) | {field for field, column in mapping.items() if column in columns}
    if present & {"messages", "text"}:
        return "messages"
    if "conversations" in present:
        return "sharegpt"
    return None

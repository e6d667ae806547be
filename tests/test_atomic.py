"""mmpeft.atomic: a write replaces the whole file or leaves the old one; no temp file outlives a failed write."""

import json
import os
import stat

import pytest

from mmpeft import atomic
from mmpeft.data import shards


def temps(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_writes_replace_the_file_and_leave_no_temp(tmp_path):
    path = tmp_path / "scores.json"
    atomic.write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"b": 1, "a": [1, 2]}
    assert path.read_text() == json.dumps({"b": 1, "a": [1, 2]}, indent=2), "json.dumps defaults: key order kept"
    atomic.write_text_atomic(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode()
    atomic.write_bytes_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and temps(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    path.write_text("old report")

    def half_then_die(f):
        f.write(b"half a new rep")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic.write_atomic(path, half_then_die)
    with pytest.raises(TypeError):
        atomic.write_json_atomic(path, {"x": object()})  # not serialisable: nothing is written
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(OSError, match="rename failed"):
        atomic.write_text_atomic(path, "new report")
    assert path.read_text() == "old report" and temps(tmp_path) == []


def test_permissions_are_those_of_a_plain_write(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(atomic.write_text_atomic(tmp_path / "a.txt", "x").stat().st_mode) == \
        stat.S_IMODE(plain.stat().st_mode), "not tempfile's 0o600"


def test_figure_is_saved_in_the_format_of_its_suffix(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    atomic.save_figure_atomic(fig, tmp_path / "curve.png", dpi=50)
    atomic.save_figure_atomic(fig, tmp_path / "curve.svg")
    plt.close(fig)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "curve.svg").read_bytes()[:500] and temps(tmp_path) == []
    with pytest.raises(ValueError, match="suffix"):
        atomic.save_figure_atomic(fig, tmp_path / "curve")


def test_shards_write_json_atomic_delegates_with_its_format_and_overwrite_removes_stray_temps(tmp_path):
    data = {"shards": [{"name": "s", "samples": 2}], "b": 1, "a": {"z": 1, "y": 2}}
    shards.write_json_atomic(tmp_path / "manifest.json", data)
    assert (tmp_path / "manifest.json").read_text() == json.dumps(data, indent=2, sort_keys=True)
    assert temps(tmp_path) == []
    # what a killed write leaves behind, in both namings, is the writer's own and goes with --overwrite
    stray = [atomic.temp_path(tmp_path / "manifest.json"), atomic.temp_path(tmp_path / "shard-000000.stats.json"),
             tmp_path / "fingerprint.json.tmp", tmp_path / "shard-000001.stats.json.tmp",
             atomic.temp_path(tmp_path / "shard-000002.tar"), tmp_path / "shard-000003.tar.tmp"]
    for p in stray:
        p.write_text("partial")
    (tmp_path / "notes.json.0123456789abcdef.tmp").write_text("someone else's")
    removed = shards.remove_outputs(tmp_path)
    assert removed[0].name == "manifest.json" and sorted(removed[1:]) == sorted(stray)
    assert temps(tmp_path) == ["notes.json.0123456789abcdef.tmp"]


@pytest.fixture
def synced(monkeypatch):
    """What ``os.fsync`` is called on, in order: a file's size in bytes, or ``"dir"`` for a directory."""
    calls = []
    fsync = os.fsync

    def record(fd):
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else os.fstat(fd).st_size)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    return calls


def test_the_data_and_the_rename_are_fsynced(tmp_path, synced):
    atomic.write_text_atomic(tmp_path / "x.json", "12345")
    assert synced == [5, "dir"], "the file's bytes before the rename, then its directory"


def test_atomic_path_replaces_the_file_a_named_writer_made(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    path = tmp_path / "fisher.safetensors"
    with atomic.atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith("fisher.safetensors.") and tmp.suffix == ".tmp"
        save_file({"w": torch.ones(2)}, tmp)
        assert not path.exists(), "nothing at the target before the block ends"
    assert load_file(path)["w"].tolist() == [1.0, 1.0] and temps(tmp_path) == []


def test_atomic_path_keeps_the_old_file_when_the_writer_fails_or_writes_nothing(tmp_path):
    path = tmp_path / "shard-000000.tar"
    path.write_bytes(b"old shard")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(path) as tmp:
            tmp.write_bytes(b"half a sh")
            raise KeyboardInterrupt
    with pytest.raises(FileNotFoundError, match="nothing was written to .*shard-000000.tar"):
        with atomic.atomic_path(path):
            pass
    assert path.read_bytes() == b"old shard" and temps(tmp_path) == []


def test_atomic_path_fsyncs_the_file_then_the_directory(tmp_path, synced):
    with atomic.atomic_path(tmp_path / "x.bin") as tmp:
        with open(tmp, "wb") as f:
            f.write(b"123")
    assert synced == [3, "dir"]

import logging
import shutil

import pytest
from shard_damage import DAMAGE, damage, text_sample, write_dir
from webdataset.tariterators import tarfile_samples

from mmpeft.data.integrity import ShardReader, manifest_counts, scan_tar


def read(url: str, expected: int | None):
    reader = ShardReader(url)
    keys = [s["__key__"] for s in reader]
    return keys, reader.outcome(expected)


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damaged_shard_loses_rows_by_reason_against_its_manifest(tmp_path, how):
    (url,) = write_dir(tmp_path / "d", 6, 6, text_sample)
    damage(url, how, "000003")
    reason, raises = DAMAGE[how]
    if not raises:  # the bug this guards against: webdataset's reader ends these shards without a word
        assert [s["__key__"] for s in tarfile_samples([{"url": url}])] == ["000000", "000001", "000002"]
    keys, outcome = read(url, manifest_counts([url])[url])
    assert keys == ["000000", "000001", "000002"]
    assert (outcome.expected, outcome.samples, outcome.lost, outcome.reason) == (6, 3, 3, reason)
    assert url in outcome.message() and reason in outcome.message()


def test_whole_and_missing_and_stale_shards(tmp_path):
    urls = write_dir(tmp_path / "d", 8, 4, text_sample)
    keys, outcome = read(urls[0], 4)
    assert len(keys) == 4 and outcome.reason is None and outcome.lost == 0 and scan_tar(urls[0]) is None
    assert read(urls[0], 6)[1].reason == "short_shard", "a whole tar with fewer samples than listed: stale manifest"
    shutil.move(urls[1], tmp_path / "elsewhere.tar")
    keys, outcome = read(urls[1], 4)
    assert keys == [] and (outcome.reason, outcome.lost) == ("missing_shard", 4)


def test_shards_without_a_manifest_are_unchecked_but_damage_is_still_named(tmp_path, caplog):
    urls = write_dir(tmp_path / "d", 12, 4, text_sample)
    loose = tmp_path / "loose"
    loose.mkdir()
    copies = [str(shutil.copy(u, loose)) for u in urls]
    assert manifest_counts(urls) == dict.fromkeys(urls, 4), "a glob of a converter's directory is still checked"
    with caplog.at_level(logging.WARNING, logger="mmpeft.data.integrity"):
        assert manifest_counts(copies) == dict.fromkeys(copies)
        manifest_counts(copies)
    assert caplog.text.count("have no manifest count") == 1, "warned once, not per read"
    damage(copies[0], "cut_at_boundary", "000002")
    keys, outcome = read(copies[0], None)
    assert len(keys) == 2 and outcome.lost is None and outcome.reason == "truncated_shard"
    assert "unknown number of rows" in outcome.message()
    assert read(copies[1], None)[1].reason is None

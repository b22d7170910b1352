"""The unit writer publishes atomically; mmp-verify finds what is wrong."""
import json

import pyarrow as pa
import pytest

from shards.layout import CRAWL, UnitFiles, completed_units, is_valid_video_id
from shards.codec import load_npy
from shards.reader import iter_samples, read_rows
from shards.verify import main as verify_main, verify_dir
from shards.writer import UnitWriter

SCHEMA = pa.schema([("video_id", pa.string()), ("status", pa.string())])


def write_unit(directory, index, ids, failed=()):
    files = UnitFiles(directory, "crawl", index)
    with UnitWriter(files, SCHEMA, CRAWL) as w:
        for vid in ids:
            w.write_sample(vid, {"info.json": {"id": vid}, "en.vtt": b"WEBVTT\n"})
            w.add_row({"video_id": vid, "status": "ok"})
        for vid in failed:
            w.add_row({"video_id": vid, "status": "unavailable"})
    return files


def test_unit_roundtrip_and_stats(tmp_path):
    files = write_unit(tmp_path, 3, ["aaaaaaaaaaa", "bbbbbbbbbbb"], failed=["ccccccccccc"])
    stats = json.loads(files.stats.read_text())
    assert stats["rows"] == 3 and stats["samples"] == 2 and stats["failures"] == 1
    assert stats["counts"] == {"status/ok": 2, "status/unavailable": 1}
    samples = list(iter_samples(files.tar))
    assert [s["__key__"] for s in samples] == ["aaaaaaaaaaa", "bbbbbbbbbbb"]
    assert json.loads(samples[0]["info.json"]) == {"id": "aaaaaaaaaaa"}
    assert len(read_rows(files.parquet)) == 3
    assert [u.index for u in completed_units(tmp_path, "crawl")] == [3]
    assert verify_dir(tmp_path).ok


def test_a_failing_unit_publishes_nothing(tmp_path):
    files = UnitFiles(tmp_path, "crawl", 0)
    with pytest.raises(RuntimeError):
        with UnitWriter(files, SCHEMA, CRAWL) as w:
            w.write_sample("aaaaaaaaaaa", {"info.json": {}})
            raise RuntimeError("bug")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_bad_members(tmp_path):
    with pytest.raises(ValueError, match="unpickled"):
        with UnitWriter(UnitFiles(tmp_path, "crawl", 0), SCHEMA) as w:
            w.write_sample("aaaaaaaaaaa", {"x.pickle": b"\x80"})
    with pytest.raises(ValueError, match="missing member"):
        with UnitWriter(UnitFiles(tmp_path, "crawl", 1), SCHEMA, CRAWL) as w:
            w.write_sample("aaaaaaaaaaa", {"en.vtt": b"WEBVTT"})
    with pytest.raises(ValueError, match="key"):
        with UnitWriter(UnitFiles(tmp_path, "crawl", 2), SCHEMA) as w:
            w.write_sample("a.b", {"info.json": {}})
    assert list(tmp_path.iterdir()) == []


def test_verify_finds_damage(tmp_path, capsys):
    good = write_unit(tmp_path, 0, ["aaaaaaaaaaa"])
    bad = write_unit(tmp_path, 1, ["bbbbbbbbbbb"])
    data = bytearray(bad.tar.read_bytes())
    data[600] ^= 0xFF
    bad.tar.write_bytes(bytes(data))
    gone = write_unit(tmp_path, 2, ["ccccccccccc"])
    gone.parquet.unlink()
    half = write_unit(tmp_path, 3, ["ddddddddddd"])
    half.stats.unlink()  # as if killed before the marker
    (tmp_path / ".crawl-000004.tar.tmp-1234").write_bytes(b"partial")
    report = verify_dir(tmp_path)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "crawl-000001: crawl-000001.tar sha256 differs" in text
    assert "crawl-000002: crawl-000002.parquet is missing" in text
    assert any("crawl-000003: no stats file" in n for n in report.incomplete)
    assert any("leftover temporary" in n for n in report.incomplete)
    assert verify_main([str(tmp_path)]) == 1
    assert "PROBLEM" in capsys.readouterr().out
    assert verify_main([str(tmp_path / "nothing")]) == 1


def test_verify_checks_rows_against_samples(tmp_path):
    files = write_unit(tmp_path, 0, ["aaaaaaaaaaa"])
    stats = json.loads(files.stats.read_text())
    stats["samples"] = 5
    files.stats.write_text(json.dumps(stats))
    assert any("stats say samples=5" in p for p in verify_dir(tmp_path).problems)


def test_npy_never_unpickles():
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        load_npy(buf.getvalue())


def test_video_id_rule():
    assert is_valid_video_id("-abc_DEF123")
    for bad in ("../x", ";rm -rf /", "abcdefghij", "abcdefghijkl", "abc defghij", "", None):
        assert not is_valid_video_id(bad)

"""Units record what they were built from: a changed upstream unit is redone, exactly it, and a
dataset copied elsewhere resumes (identities by content, not by path or mtime)."""
import json
import shutil

from pipeline.subtitles.stage import main as align_main
from shards.layout import UnitFiles
from tests.pipeline.subtitles.test_align_stage import IDS, write_crawl_unit, info  # noqa: F401


def _align(crawl, out):
    return align_main(["--crawl", str(crawl), "--out", str(out), "--langs", "en", "--workers", "1",
                       "--no-progress"])


def _crawl_unit(crawl, index, vids):
    from tests.pipeline.subtitles.test_subtitles import manual_vtt

    vtt = manual_vtt([(0.0, 4.0, "hello and welcome"), (4.0, 9.0, "today we cook")]).encode()
    write_crawl_unit(crawl, index, [(v, "ok", {"info.json": info(v, {"en": ("manual", "en")}), "en.vtt": vtt})
                                    for v in vids])


def test_a_rewritten_upstream_unit_is_redone_and_a_copy_resumes(tmp_path, capsys):
    crawl, out = tmp_path / "data" / "crawl", tmp_path / "data" / "aligned"
    _crawl_unit(crawl, 0, [IDS["A"]])
    _crawl_unit(crawl, 1, [IDS["B"]])
    assert _align(crawl, out) == 0
    first = {i: json.loads(UnitFiles(out, "aligned", i).stats.read_text()) for i in (0, 1)}
    assert first[0]["built_from"]["crawl"]  # the crawl unit's stats sha256
    # the crawl unit 1 is rewritten (as mmp-crawl --retry-failed does), with the same mtime as before
    stat = UnitFiles(crawl, "crawl", 1).stats.stat()
    _crawl_unit(crawl, 1, [IDS["B"], IDS["C"]])
    import os

    os.utime(UnitFiles(crawl, "crawl", 1).stats, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    capsys.readouterr()
    assert _align(crawl, out) == 0
    printed = capsys.readouterr()
    assert "1 finished units are redone" in printed.err
    after = {i: json.loads(UnitFiles(out, "aligned", i).stats.read_text()) for i in (0, 1)}
    assert after[0] == first[0] and after[1]["rows"] == 2  # exactly the changed unit
    # the whole dataset copied without its mtimes (cp -r): nothing is redone, nothing refused
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "data", copy, copy_function=shutil.copyfile)
    assert _align(copy / "crawl", copy / "aligned") == 0
    printed = capsys.readouterr()
    assert "0 units written, 2 already complete" in printed.out and "redone" not in printed.err


def test_extraction_redoes_the_units_whose_aligned_unit_changed(tmp_path, capsys):
    import pytest

    pytest.importorskip("torch")
    from tests.features.test_decode import cfr, make_video
    from tests.features.test_extract import run, write_aligned

    src = tmp_path / "videos"
    src.mkdir()
    for vid in ("vidLine0001", "vidLine0002"):
        make_video(src / f"{vid}.mkv", cfr(0.5))
    aligned, out = tmp_path / "aligned", tmp_path / "mmp"
    write_aligned(aligned, [[("vidLine0001", 0.5)], [("vidLine0002", 0.5)]])
    assert run(aligned, src, out, "--backbones", "r21d", "--random-weights") == 0
    before = [UnitFiles(out, "mmp", i).stats.read_text() for i in (0, 1)]
    stats = UnitFiles(aligned, "aligned", 1).stats  # aligned unit 1 rewritten (mmp-align redid it)
    stats.write_text(json.dumps({**json.loads(stats.read_text()), "finished": 0.5}))
    capsys.readouterr()
    assert run(aligned, src, out, "--backbones", "r21d", "--random-weights") == 0
    assert "1 finished units are redone" in capsys.readouterr().err
    after = [UnitFiles(out, "mmp", i).stats.read_text() for i in (0, 1)]
    assert after[0] == before[0] and after[1] != before[1]


# ---------------------------------------------------------------- content identities

def _rewrite_same_size(path, data: bytes, keep_mtime: bool = True):
    import os
    import time

    st = path.stat()
    time.sleep(0.05)  # past the file times' coarse tick, as any later edit is (RECENT_NS covers the rest)
    path.write_bytes(data)
    assert path.stat().st_size == st.st_size
    if keep_mtime:  # as `cp -p` or a restore would leave it
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_npy_rewritten_at_the_same_size_changes_its_directory_identity(tmp_path):
    import numpy as np

    from pipeline.runtime.lineage import directory_identity, inputs_identity

    feats = tmp_path / "feats"
    feats.mkdir()
    np.save(feats / "vidAAAAAAA1.npy", np.zeros((4, 8), np.float32))
    np.save(feats / "vidAAAAAAA2.npy", np.ones((4, 8), np.float32))
    before, before_inputs = directory_identity(feats), inputs_identity([feats])
    path = feats / "vidAAAAAAA1.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    _rewrite_same_size(path, bytes(data))
    assert directory_identity(feats) != before and inputs_identity([feats]) != before_inputs


def test_an_edit_anywhere_in_a_large_file_changes_its_hash(tmp_path):
    from pipeline.runtime.lineage import content_hash

    path = tmp_path / "caption.json"
    with open(path, "wb") as f:  # 80 MiB, sparse: nothing written but the edit below
        f.truncate(80 << 20)
    before = content_hash(path)
    with open(path, "r+b") as f:
        f.seek((80 << 20) // 31)  # between two of the blocks a sampling hash would read
        f.write(b"x")
    assert content_hash(path) != before


def test_the_digest_cache_spares_rereads_and_still_sees_every_rewrite(tmp_path, monkeypatch):
    from pipeline.runtime import lineage
    from pipeline.runtime.lineage import DigestCache, content_hash, inputs_identity

    path = tmp_path / "how2_en.json"
    path.write_bytes(b'{"vidAAAAAAA1": {"text": ["a"], "start": [0], "end": [1]}}')
    with DigestCache(tmp_path / "fresh.sqlite") as cache:  # a file changed a moment ago is not kept
        content_hash(path, cache)
        content_hash(path, cache)
        assert cache.hits == 0
    monkeypatch.setattr(lineage, "RECENT_NS", -10**12)  # as if the files were written long ago
    with DigestCache(tmp_path / "work" / "digests.sqlite") as cache:
        first = content_hash(path, cache)
        assert content_hash(path, cache) == first and cache.hits == 1
    with DigestCache(tmp_path / "work" / "digests.sqlite") as cache:  # kept across runs
        assert content_hash(path, cache) == first and cache.hits == 1
        _rewrite_same_size(path, path.read_bytes().replace(b'"a"', b'"b"'))  # same size, same mtime
        assert content_hash(path, cache) != first
        assert content_hash(path, cache) == content_hash(path)  # the cache never holds a stale digest
        assert inputs_identity([path], cache) == inputs_identity([path])


def test_an_import_rerun_over_a_release_file_rewritten_at_the_same_size_and_mtime_is_refused(tmp_path, capsys,
                                                                                             monkeypatch):
    from pipeline.release import importer
    from pipeline.runtime import lineage
    from tests.pipeline.release.test_import import args, write_release

    monkeypatch.setattr(lineage, "RECENT_NS", -10**12)  # the cache keeps even a file written a moment ago
    caps = write_release(tmp_path / "release", langs=["en"])
    out = tmp_path / "aligned"
    argv = ["multi-ht100m", "--captions", str(caps), "--langs", "en", "--out", str(out), *args()]
    assert importer.main(argv) == 0
    assert (out / ".lineage" / "digests.sqlite").is_file()
    assert importer.main(argv) == 0  # unchanged: resumes
    path = caps / "how2_en.json"
    _rewrite_same_size(path, path.read_bytes().replace(b"pancakes", b"pancaker"))
    capsys.readouterr()
    assert importer.main(argv) == 2
    assert "different inputs (by content)" in capsys.readouterr().err

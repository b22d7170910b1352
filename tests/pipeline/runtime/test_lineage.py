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

"""mmp-verify against damage that keeps a unit's files self-consistent: stats of the wrong
shape, a tar cut or rebuilt at a member boundary with its stats rewritten to match,
rows that disagree with the members, unsafe members; and stage plans over damaged stats."""
from __future__ import annotations

import io
import json
import logging
import tarfile

import pytest

from pipeline.subtitles.stage import AlignConfig, AlignStage
from shards.rows import crawl_schema
from shards.layout import CRAWL, DamagedUnit, UnitFiles, read_stats
from shards.verify import main as verify_main, verify_dir
from shards.writer import UnitWriter, sha256_file

IDS = ["AAAAAAAAAAA", "BBBBBBBBBBB", "CCCCCCCCCCC"]
VTT = b"WEBVTT\n\n00:00.000 --> 00:02.000\nhello\n"


def crawl_unit(directory, index=0, ids=IDS, failed=("DDDDDDDDDDD",)):
    """A crawl unit whose rows record each sample's tracks and their sizes, as mmp-crawl writes them."""
    files = UnitFiles(directory, "crawl", index)
    with UnitWriter(files, crawl_schema(["en", "de"]), CRAWL) as w:
        for vid in ids:
            de = VTT + vid.encode()
            w.write_sample(vid, {"info.json": {"id": vid}, "en.vtt": VTT, "de.vtt": de})
            w.add_row({"video_id": vid, "status": "ok", "en_status": "ok", "en_bytes": len(VTT),
                       "de_status": "ok", "de_bytes": len(de)})
        for vid in failed:
            w.add_row({"video_id": vid, "status": "unavailable", "error": "private"})
    return files


def restamp(files: UnitFiles, **fields) -> None:
    """Rewrite the stats file so its recorded tar size and sha256 (and ``fields``) match the tar."""
    stats = json.loads(files.stats.read_text())
    stats["files"]["tar"].update(size=files.tar.stat().st_size, sha256=sha256_file(files.tar))
    stats.update(fields)
    files.stats.write_text(json.dumps(stats))


def rebuild_tar(files: UnitFiles, keep) -> None:
    """Re-tar the unit's members for which ``keep(name, data)`` is true (a whole, well-formed tar)."""
    with tarfile.open(files.tar) as tar:
        members = [(i, tar.extractfile(i).read()) for i in tar.getmembers()]
    with tarfile.open(files.tar, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            kept = keep(info.name, data)
            if kept is False:
                continue
            data = data if kept is True else kept
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def problems(directory) -> str:
    return "\n".join(verify_dir(directory).problems)


def test_a_whole_unit_verifies(tmp_path):
    crawl_unit(tmp_path)
    assert verify_dir(tmp_path).ok


# ---------------------------------------------------------------------------- stats of the wrong shape


@pytest.mark.parametrize("text,says", [
    ("[1, 2, 3]", "holds a JSON list, not an object"),
    ('"done"', "holds a JSON str"),
    ('{"rows": "4", "samples": 3, "failures": 1}', "'rows' is '4'"),
    ('{"rows": 4, "samples": -3, "failures": 1}', "'samples' is -3"),
    ('{"rows": 4, "samples": 3, "failures": true}', "'failures' is True"),
    ('{"rows": 100000000000, "samples": 3, "failures": 1}', "'rows' is 100000000000"),
    ('{"rows": 4, "samples": 3, "failures": 1, "files": []}', "'files' is not an object"),
    ('{"rows": 4, "samples": 3, "failures": 1, "files": {"tar": {"size": "big"}}}', "'files.tar.size'"),
    ('{"rows": 4, "samples": 3, "failures": 1, "layout": ["crawl"]}', "'layout'"),
    ('{"rows": 4, "samples": 3, "failures": 1, "counts": 7}', "'counts' is not an object"),
    ("[" * 100_000, "unreadable"),
])
def test_stats_of_the_wrong_shape_is_a_reported_damaged_unit(tmp_path, capsys, text, says):
    files = crawl_unit(tmp_path)
    crawl_unit(tmp_path, 1)
    files.stats.write_text(text)
    with pytest.raises(DamagedUnit, match="crawl-000000: stats file crawl-000000.stats.json"):
        read_stats(files)
    report = verify_dir(tmp_path)
    assert report.units == 1  # the other unit is still checked
    assert len(report.problems) == 1 and says in report.problems[0]
    assert verify_main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM: crawl-000000: stats file" in out and "Traceback" not in out


def test_read_stats_gives_the_checked_fields(tmp_path):
    stats = read_stats(crawl_unit(tmp_path))
    assert (stats["rows"], stats["samples"], stats["failures"], stats["layout"]) == (4, 3, 1, "crawl")


def test_align_plan_reports_a_damaged_crawl_unit_and_goes_on(tmp_path, caplog):
    crawl = tmp_path / "crawl"
    damaged, whole = crawl_unit(crawl, 0), crawl_unit(crawl, 1)
    damaged.stats.write_text('[{"rows": 4}]')
    stage = AlignStage(AlignConfig(crawl=str(crawl), out=str(tmp_path / "aligned"), langs=["en", "de"]))
    with caplog.at_level(logging.WARNING, logger="mmp.align"):
        units = stage.plan()
    assert [(u.index, len(u.items)) for u in units] == [(0, 0), (1, 4)]
    assert "crawl-000000: stats file crawl-000000.stats.json holds a JSON list" in caplog.text
    assert read_stats(whole)["rows"] == 4


# ---------------------------------------------------------------------------- rows against members


def test_a_tar_cut_at_a_member_boundary_with_restamped_stats_is_found(tmp_path):
    files = crawl_unit(tmp_path)
    with tarfile.open(files.tar) as tar:
        last = tar.getmembers()[-1]
    assert last.name == "CCCCCCCCCCC.info.json"
    files.tar.write_bytes(files.tar.read_bytes()[:last.offset])  # CCCCCCCCCCC's info.json and the end marker gone
    restamp(files)
    text = problems(tmp_path)
    assert "crawl-000000: tar unreadable" in text and "end-of-archive" in text


def test_a_rebuilt_tar_missing_a_track_the_row_records_is_found(tmp_path):
    files = crawl_unit(tmp_path)
    rebuild_tar(files, lambda name, data: name != "BBBBBBBBBBB.de.vtt")
    restamp(files)
    text = problems(tmp_path)
    assert "sample BBBBBBBBBBB: the row records member 'de.vtt', the tar lacks it" in text


def test_a_member_whose_size_differs_from_the_row_is_found(tmp_path):
    files = crawl_unit(tmp_path)
    rebuild_tar(files, lambda name, data: data[:-3] if name == "AAAAAAAAAAA.en.vtt" else True)
    restamp(files)
    assert "sample AAAAAAAAAAA: member 'en.vtt' holds" in problems(tmp_path)


def test_a_track_stored_as_srt_is_the_track_the_row_records(tmp_path):
    files = UnitFiles(tmp_path, "crawl", 0)
    srt = b"1\n00:00:00,000 --> 00:00:02,000\nhallo\n"
    with UnitWriter(files, crawl_schema(["en", "de"]), CRAWL) as w:  # de fetched with --translated-format srt
        w.write_sample(IDS[0], {"info.json": {"id": IDS[0]}, "en.vtt": VTT, "de.srt": srt})
        w.add_row({"video_id": IDS[0], "status": "ok", "en_status": "ok", "en_bytes": len(VTT),
                   "de_status": "ok", "de_bytes": len(srt)})
    assert verify_dir(tmp_path).ok, problems(tmp_path)
    rebuild_tar(files, lambda name, data: data[:-3] if name.endswith(".de.srt") else True)
    restamp(files)
    want = f"sample {IDS[0]}: member 'de.srt' holds {len(srt) - 3} bytes, the row records {len(srt)}"
    assert want in problems(tmp_path)


def test_two_formats_of_one_track_are_found(tmp_path):
    files = UnitFiles(tmp_path, "crawl", 0)
    with UnitWriter(files, crawl_schema(["en"]), CRAWL) as w:
        w.write_sample(IDS[0], {"info.json": {"id": IDS[0]}, "en.vtt": VTT,
                                "en.srt": b"1\n00:00:00,000 --> 00:00:02,000\nx\n"})
        w.add_row({"video_id": IDS[0], "status": "ok", "en_status": "ok", "en_bytes": len(VTT)})
    want = f"sample {IDS[0]}: language 'en' has 2 track members (en.vtt, en.srt); a crawl stores one"
    assert want in problems(tmp_path)


def test_an_ok_row_without_its_sample_is_found(tmp_path):
    files = crawl_unit(tmp_path)
    rebuild_tar(files, lambda name, data: not name.startswith("CCCCCCCCCCC."))
    restamp(files, samples=2, failures=2)  # even stats that agree with the tar
    assert "row CCCCCCCCCCC has status ok but the tar holds no sample" in problems(tmp_path)


def test_a_sample_without_a_row_is_found(tmp_path):
    files = crawl_unit(tmp_path)
    with tarfile.open(files.tar) as tar:
        members = [(i, tar.extractfile(i).read()) for i in tar.getmembers()]
    with tarfile.open(files.tar, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
        extra = tarfile.TarInfo("EEEEEEEEEEE.info.json")
        extra.size = 2
        tar.addfile(extra, io.BytesIO(b"{}"))
    restamp(files, samples=4)
    assert "1 samples without a parquet row, e.g. EEEEEEEEEEE" in problems(tmp_path)


@pytest.mark.parametrize("kind,name,says", [
    (tarfile.SYMTYPE, "BBBBBBBBBBB.en.vtt", "a symbolic link"),
    (tarfile.LNKTYPE, "BBBBBBBBBBB.en.vtt", "a hard link"),
    (tarfile.REGTYPE, "../BBBBBBBBBBB.en.vtt", "a name with '..'"),
    (tarfile.REGTYPE, "/BBBBBBBBBBB.en.vtt", "an absolute name"),
])
def test_unsafe_members_are_flagged(tmp_path, kind, name, says):
    files = crawl_unit(tmp_path)
    with tarfile.open(files.tar) as tar:
        members = [(i, tar.extractfile(i).read()) for i in tar.getmembers()]
    with tarfile.open(files.tar, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            if info.name == "BBBBBBBBBBB.en.vtt":  # in its place, the unsafe member
                info = tarfile.TarInfo(name)
                info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
                info.linkname = {tarfile.SYMTYPE: "/etc/passwd", tarfile.LNKTYPE: "AAAAAAAAAAA.en.vtt"}.get(kind, "")
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    restamp(files)
    assert f"sample BBBBBBBBBBB: member {name!r} is {says}; readers refuse it" in problems(tmp_path)


# ---------------------------------------------------------------------------- an unreadable parquet


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not parquet" * 20,
                                    lambda b: b[:100] + bytes(200) + b[300:]])
def test_a_damaged_parquet_is_a_problem_and_a_bug_is_not(tmp_path, monkeypatch, damage):
    from shards import verify

    files = crawl_unit(tmp_path)
    files.parquet.write_bytes(damage(files.parquet.read_bytes()))
    stats = json.loads(files.stats.read_text())
    stats["files"]["parquet"].update(size=files.parquet.stat().st_size, sha256=sha256_file(files.parquet))
    files.stats.write_text(json.dumps(stats))
    assert "crawl-000000: parquet unreadable" in problems(tmp_path)

    def bug(path):
        raise AttributeError("'NoneType' object has no attribute 'read'")

    monkeypatch.setattr(verify, "read_rows", bug)
    with pytest.raises(AttributeError):  # a bug of the reader is not a damaged file
        verify_dir(tmp_path)

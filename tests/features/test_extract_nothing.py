"""mmp-extract-features says so, with the fix, when a run produces no feature at all."""
import pytest

pytest.importorskip("torch")

from features.extract import nothing_usable  # noqa: E402
from shards.layout import CRAWL, UnitFiles  # noqa: E402
from shards.writer import UnitWriter  # noqa: E402
from shards.rows import crawl_schema as schema_for  # noqa: E402
from tests.features.test_extract import run, write_aligned  # noqa: E402


def test_a_crawl_without_videos_gives_no_features_and_says_why(tmp_path, capsys):
    """The README's chain without --download-video: every video is no_video, exit 1, one hint."""
    crawl = tmp_path / "crawl"
    with UnitWriter(UnitFiles(crawl, "crawl", 0), schema_for(["en"]), CRAWL) as writer:
        for vid in ("vidNoFile01", "vidNoFile02"):
            writer.write_sample(vid, {"info.json": {"id": vid}})
            writer.add_row({"video_id": vid, "status": "ok"})
    aligned = tmp_path / "aligned"
    write_aligned(aligned, [[("vidNoFile01", 2.0), ("vidNoFile02", 3.0)]])
    capsys.readouterr()
    assert run(aligned, crawl, tmp_path / "mmp", "--backbones", "r21d", "--random-weights") == 1
    err = capsys.readouterr().err
    assert "none of the 2 videos has a video file" in err and "--download-video" in err


def test_what_counts_as_nothing_usable():
    assert nothing_usable({"status/ok": 1, "status/no_video": 5}, "V") is None
    assert nothing_usable({}, "V") is None  # nothing to do is not a failure
    assert "failed (decode_error 2, no_video 1)" in nothing_usable({"status/no_video": 1, "status/decode_error": 2}, "V")

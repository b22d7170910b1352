"""mmp-crawl end to end against the local stand-in for YouTube."""
import json
from collections import Counter

import pytest

from pipeline.crawl import stage as crawl
from demo.sample import INVALID_INPUTS, MISSING_VIDEO
from shards.verify import verify_dir

from tests.conftest import read_all_rows, read_all_samples


def by_id(rows):
    return {r["video_id"]: r for r in rows}


def test_sample_crawl_statuses_tracks_and_one_request_per_track(sample, tmp_path):
    out = tmp_path / "data"
    assert crawl.main(sample.crawl_args(out, "--unit-size", "3")) == 0
    crawl_dir = out / "crawl"
    report = verify_dir(crawl_dir)
    assert report.ok, report.problems
    rows = by_id(read_all_rows(crawl_dir))
    # every input line once: 6 sample videos + the missing one + 2 invalid; the duplicate line is dropped
    assert len(rows) == 9
    assert rows["smplPancak1"]["status"] == "ok"
    assert rows["smplBikeFx2"]["status"] == "ok"
    assert rows["smplMixed03"]["status"] == "partial" and "cs" in rows["smplMixed03"]["error"]
    assert rows["smplNoSubs4"]["status"] == "no_subtitles"
    assert rows["-smplDash05"]["status"] == "ok"  # an id starting with '-' is an id, not an option
    assert rows[MISSING_VIDEO]["status"] == "unavailable"
    for bad in INVALID_INPUTS:
        assert rows[bad]["status"] == "invalid_id"
    assert rows["smplPancak1"]["category_1"] == "Food and Entertaining"

    samples = read_all_samples(crawl_dir)
    assert set(samples) == {"smplPancak1", "smplBikeFx2", "smplMixed03", "smplNoSubs4", "-smplDash05", "smplPancak6"}
    info = json.loads(samples["smplBikeFx2"]["info.json"])
    kinds = {lang: t["kind"] for lang, t in info["tracks"].items()}
    assert kinds["de"] == "manual" and kinds["en"] == "asr"
    assert info["tracks"]["fr"]["key"] == "fr-de" and info["tracks"]["fr"]["source_lang"] == "de"
    assert info["tracks"]["zh"]["key"] == "zh-Hans-de"
    assert info["input_meta"]["task_id"] == "10001"
    assert samples["smplPancak1"]["en.vtt"].startswith(b"WEBVTT")
    assert json.loads(samples["-smplDash05"]["info.json"])["tracks"]["en"]["key"] == "en"  # legacy dict: no -orig

    # One request per track fetched, never a file twice (en and en-orig are one track), nothing unasked.
    subs_requests = [r["path"] for r in sample.server.requests if r["path"].startswith("/subs/")]
    assert len(subs_requests) == len(set(subs_requests))
    assert all(p.endswith(".vtt") for p in subs_requests)
    fetched_tracks = sum(r["n_tracks"] or 0 for r in rows.values())
    assert len(subs_requests) == fetched_tracks == 9 + 9 + 7 + 9 + 9
    assert not any(p.startswith("/hls/") for p in subs_requests)
    stats_requests = sum(json.loads(p.read_text())["counts"].get("requests", 0) for p in crawl_dir.glob("*.stats.json"))
    assert stats_requests == len(sample.server.requests)


def test_rerun_skips_completed_units(sample, tmp_path):
    out = tmp_path / "data"
    assert crawl.main(sample.crawl_args(out, "--unit-size", "4")) == 0
    stats = {p.name: p.read_bytes() for p in (out / "crawl").glob("*.stats.json")}
    before = len(sample.server.requests)
    assert crawl.main(sample.crawl_args(out, "--unit-size", "4")) == 0
    assert len(sample.server.requests) == before
    assert {p.name: p.read_bytes() for p in (out / "crawl").glob("*.stats.json")} == stats


def test_resume_with_other_input_is_refused(sample, tmp_path, capsys):
    out = tmp_path / "data"
    assert crawl.main(sample.crawl_args(out, "--unit-size", "4")) == 0
    assert crawl.main(sample.crawl_args(out, "--unit-size", "2")) == 2
    assert "different unit_size" in capsys.readouterr().err


def test_download_video_puts_the_file_in_the_sample(sample_with_videos, tmp_path):
    out = tmp_path / "data"
    assert crawl.main(sample_with_videos.crawl_args(out, "--download-video", "--langs", "en,de")) == 0
    rows = by_id(read_all_rows(out / "crawl"))
    samples = read_all_samples(out / "crawl")
    assert rows["smplPancak1"]["video_ext"] == "mp4" and rows["smplPancak1"]["video_bytes"] > 1000
    assert samples["smplPancak1"]["mp4"][4:8] == b"ftyp"
    assert sum(1 for r in sample_with_videos.server.requests if r["path"].startswith("/videos/")) == 6
    assert verify_dir(out / "crawl").ok


def test_bad_inputs_are_clear_errors(sample, tmp_path, capsys):
    assert crawl.main(["--videos", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert crawl.main(["--videos", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert crawl.main(sample.crawl_args(tmp_path / "o", "--langs", "en;rm")) == 2
    assert "--langs" in capsys.readouterr().err
    assert crawl.main(sample.crawl_args(tmp_path / "o", "--cookies", str(tmp_path / "missing.txt"))) == 2
    with pytest.raises(SystemExit):
        crawl.main(["--help"])
    assert "--max-requests-per-second" in capsys.readouterr().out


def test_rank_slices_together_equal_one_run(sample, tmp_path):
    whole, sliced = tmp_path / "whole", tmp_path / "sliced"
    assert crawl.main(sample.crawl_args(whole, "--unit-size", "2", "--langs", "en,de")) == 0
    for rank in (0, 1):
        assert crawl.main(sample.crawl_args(sliced, "--unit-size", "2", "--langs", "en,de",
                                            "--rank", str(rank), "--world-size", "2")) == 0
        names = sorted(p.name for p in (sliced / "crawl").glob("*.stats.json"))
        assert all(int(n[6:12]) % 2 == 0 for n in names) if rank == 0 else len(names) == 5

    def strip(rows):
        return sorted((r["video_id"], r["status"], r["n_tracks"], r["en_kind"], r["de_kind"]) for r in rows)

    assert strip(read_all_rows(whole / "crawl")) == strip(read_all_rows(sliced / "crawl"))
    assert set(read_all_samples(whole / "crawl")) == set(read_all_samples(sliced / "crawl"))
    assert crawl.main(sample.crawl_args(sliced, "--unit-size", "2", "--rank", "2", "--world-size", "2")) == 2


def test_two_workers_give_the_same_rows(sample, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert crawl.main(sample.crawl_args(one, "--unit-size", "2", "--langs", "en")) == 0
    args = sample.crawl_args(two, "--unit-size", "2", "--langs", "en")
    args[args.index("--workers") + 1] = "2"
    assert crawl.main(args) == 0
    key = lambda rows: sorted((r["video_id"], r["status"], r["en_kind"], r["en_bytes"]) for r in rows)
    assert key(read_all_rows(one / "crawl")) == key(read_all_rows(two / "crawl"))

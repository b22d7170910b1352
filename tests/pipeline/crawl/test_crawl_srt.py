"""``mmp-crawl --translated-format srt``: machine translations fetched as SubRip, stored as ``<lang>.srt``,
read by mmp-align and mmp-verify, and aligned to the cues of the same tracks fetched as WebVTT."""
import json

import pytest

from pipeline.crawl import errors
from pipeline.crawl import stage as crawl
from pipeline.crawl.track_fetch import srt_problem, track_problem
from pipeline.subtitles.stage import main as align_main
from shards.verify import verify_dir
from tests.conftest import read_all_rows, read_all_samples
from tests.pipeline.subtitles.test_srt import vtt_to_srt

# Each video's translated tracks as the crawl chooses them: (language, key in the dict).
TRANSLATED = {"smplPancak1": [("de", "de"), ("fr", "fr"), ("zh", "zh-Hans")],
              "smplBikeFx2": [("fr", "fr-de"), ("zh", "zh-Hans-de")]}  # from its manual de; HLS entries first
LANGS = "en,de,fr,zh"


def offer_srt(sample, video_id: str, keys, body=None) -> None:
    """Serve ``key``.srt beside each ``key``.vtt (the same cues, or ``body``) and list it among the
    track's formats, as yt-dlp lists ``srt`` for YouTube's tracks."""
    path = sample.info / f"{video_id}.info.json"
    info = json.loads(path.read_text())
    for key in keys:
        subs = sample.files / "subs" / video_id
        srt = body if body is not None else vtt_to_srt((subs / f"{key}.vtt").read_text(encoding="utf-8")).encode()
        (subs / f"{key}.srt").write_bytes(srt)
        info["automatic_captions"][key].append(
            {"ext": "srt", "url": f"{sample.server.base_url}/subs/{video_id}/{key}.srt", "name": key})
    path.write_text(json.dumps(info))


def crawl_args(sample, tmp_path, out, videos, *extra):
    listing = tmp_path / "videos.txt"
    listing.write_text("\n".join(videos) + "\n")
    args = sample.crawl_args(out, "--langs", LANGS, *extra)
    args[args.index("--videos") + 1] = str(listing)
    return args


def align(data) -> dict:
    assert align_main(["--crawl", str(data / "crawl"), "--out", str(data / "aligned"), "--workers", "1",
                       "--no-progress"]) == 0
    assert verify_dir(data / "aligned").ok
    return {k: json.loads(s["subs.json"]) for k, s in read_all_samples(data / "aligned").items()}


def test_translations_as_srt_are_stored_as_srt_and_align_to_the_vtt_cues(sample, tmp_path):
    for vid, tracks in TRANSLATED.items():
        offer_srt(sample, vid, [key for _, key in tracks])
    as_vtt, as_srt = tmp_path / "vtt", tmp_path / "srt"
    assert crawl.main(crawl_args(sample, tmp_path, as_vtt, TRANSLATED)) == 0
    before = len(sample.server.requests)
    assert crawl.main(crawl_args(sample, tmp_path, as_srt, TRANSLATED, "--translated-format", "srt")) == 0

    srt_paths = sorted(r["path"] for r in sample.server.requests[before:] if r["path"].endswith(".srt"))
    assert srt_paths == sorted(f"/subs/{vid}/{key}.srt" for vid, tracks in TRANSLATED.items() for _, key in tracks)
    config = json.loads((as_srt / "crawl" / "config.json").read_text())["config"]
    assert config["translated_format"] == "srt"
    assert json.loads((as_vtt / "crawl" / "config.json").read_text())["config"]["translated_format"] == "vtt"

    rows = {r["video_id"]: r for r in read_all_rows(as_srt / "crawl")}
    samples = read_all_samples(as_srt / "crawl")
    for vid, tracks in TRANSLATED.items():
        assert rows[vid]["status"] == "ok", rows[vid]["error"]
        info = json.loads(samples[vid]["info.json"])
        for lang, key in tracks:
            served = (sample.files / "subs" / vid / f"{key}.srt").read_bytes()
            assert samples[vid][f"{lang}.srt"] == served and f"{lang}.vtt" not in samples[vid]
            assert rows[vid][f"{lang}_bytes"] == len(served) and rows[vid][f"{lang}_kind"] == "translated"
            assert info["tracks"][lang]["ext"] == "srt"
        own = "en" if vid == "smplPancak1" else "de"  # the ASR track, the manual one: WebVTT still
        assert samples[vid][f"{own}.vtt"].startswith(b"WEBVTT") and info["tracks"][own]["ext"] == "vtt"
    assert verify_dir(as_srt / "crawl").ok, verify_dir(as_srt / "crawl").problems

    from_vtt, from_srt = align(as_vtt), align(as_srt)
    assert set(from_srt) == set(TRANSLATED)
    for vid, tracks in TRANSLATED.items():
        assert set(from_srt[vid]["tracks"]) == set(from_vtt[vid]["tracks"]) == set(LANGS.split(","))
        for lang, _ in tracks:
            assert from_srt[vid]["tracks"][lang]["cues"] == from_vtt[vid]["tracks"][lang]["cues"]
            assert from_srt[vid]["tracks"][lang]["report"]["parser"] == "webvtt_srt"
        assert from_srt[vid]["segments"] == from_vtt[vid]["segments"]


def test_a_webvtt_answer_is_kept_as_webvtt_and_a_page_fails_its_track(sample, tmp_path):
    vid = "smplPancak1"
    webvtt = (sample.files / "subs" / vid / "de.vtt").read_bytes()
    offer_srt(sample, vid, ["de"], body=webvtt)  # YouTube answering fmt=srt with WebVTT
    offer_srt(sample, vid, ["fr"])
    sample.server.fault(f"/subs/{vid}/fr.srt", "html", sticky=True)  # a consent page, every time
    data = tmp_path / "data"
    assert crawl.main(crawl_args(sample, tmp_path, data, [vid], "--translated-format", "srt")) == 0
    row = read_all_rows(data / "crawl")[0]
    assert (row["en_status"], row["de_status"], row["fr_status"]) == ("ok", "ok", "bad_response")
    assert row["fr_error"].startswith("an HTML page where SRT was expected")
    members = read_all_samples(data / "crawl")[vid]
    assert members["de.vtt"] == webvtt and not {"de.srt", "fr.srt", "fr.vtt"} & set(members)
    track = json.loads(members["info.json"])["tracks"]["de"]
    assert track["ext"] == "vtt" and track["warning"] == "asked for as srt, served as WebVTT"
    assert row["status"] == "partial" and verify_dir(data / "crawl").ok


SRT = b"1\n00:00:00,500 --> 00:00:04,450\nHallo\n\n2\n00:00:04,500 --> 00:00:08,450\nWelt\n"


@pytest.mark.parametrize("body,status", [
    (SRT, None),
    (b"\xef\xbb\xbf\r\n" + SRT.replace(b"\n", b"\r\n"), None),
    (b"1\n00:00:00.500 --> 00:00:04.450\nHallo\n", None),  # a dot for the comma: the reader takes it
    (b"WEBVTT\n\n00:00:00.500 --> 00:00:04.450\nHallo\n", None),  # the track in the other format: kept
    (b"00:00:00,500 --> 00:00:04,450\nHallo\n", errors.ERROR),  # no cue number
    (b"1\nHallo\n", errors.ERROR),
    (b"<!DOCTYPE html><html><body>Before you continue to YouTube</body></html>", errors.BAD_RESPONSE),
    (b"<html>Our systems have detected unusual traffic from your computer network.</html>", errors.BOT_CHECK),
    (b"", errors.BAD_RESPONSE),
    (b"  \n", errors.BAD_RESPONSE),
])
def test_srt_problem(body, status):
    problem = srt_problem(body)
    assert (problem.status if problem else None) == status
    if problem is not None:
        assert "WebVTT was expected" not in problem.message


def test_track_problem_checks_the_format_asked_for():
    assert track_problem(SRT, "srt") is None and track_problem(SRT, "vtt").status == errors.ERROR
    webvtt = b"WEBVTT\n\n00:00:00.500 --> 00:00:04.450\nHallo\n"
    assert track_problem(webvtt, "vtt") is None and track_problem(webvtt, "srt") is None
    assert track_problem(b"", "srt", needs_po_token=True).status == errors.PO_TOKEN_REQUIRED


def test_the_flag_takes_vtt_or_srt(sample, tmp_path, capsys):
    assert crawl.main(sample.crawl_args(tmp_path / "o", "--translated-format", "json3")) == 2
    assert "--translated-format" in capsys.readouterr().err

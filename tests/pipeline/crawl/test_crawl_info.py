"""Old info dicts: what youtube-dl wrote is read in yt-dlp's types (``pipeline.crawl.info``), so a 2013 dict is
crawled like a new one, and what still cannot be read is a missing value or its video's clear failure."""
import json

import pytest

from demo.sample import load_texts, plain_vtt, rolling_asr_vtt
from pipeline.crawl import stage as crawl
from pipeline.crawl.info import normalize_info
from pipeline.crawl.video import info_problem
from shards.verify import verify_dir
from tests.conftest import read_all_rows, read_all_samples

OLD = "oldYtdl2013"


def youtube_dl_dict(base: str, video_id: str = OLD, **changes) -> dict:
    """A dict of a 2010 upload as youtube-dl wrote it, in the shape of the December 2013 one whose provenance
    ``tests/data/infojson/PROVENANCE.tsv`` gives (vidbot): its keys and their types, our own values. The
    duration is text, as youtube-dl copied YouTube's ``length_seconds``; there is no ``language``, ``channel``,
    ``categories`` or ``availability``. Its captions are as youtube-dl listed them from 2015 on (the
    ``pipeline.crawl.tracks`` docstring): every automatic entry is the ASR track's URL with ``tlang`` added,
    English itself included, here on the stand-in server (one path per language: it serves by path)."""
    asr = f"v={video_id}&caps=asr&key=yttt1&expire=1386762263&kind=asr&lang=en"
    info = {
        "upload_date": "20101004", "extractor": "youtube", "duration": "15", "fulltitle": "Pancakes in a pan",
        "playlist_index": None, "view_count": 21986, "playlist": None, "title": "Pancakes in a pan", "id": video_id,
        "annotations": None, "age_limit": 0, "thumbnail": f"https://i1.ytimg.com/vi/{video_id}/hqdefault.jpg",
        "description": "How to make pancakes", "format": "18 - 640x360", "uploader": "A Cook", "format_id": "18",
        "uploader_id": "acook", "subtitles": None, "stitle": "Pancakes in a pan", "extractor_key": "Youtube",
        "url": "http://r13---sn-tt17rn7r.googlevideo.com/videoplayback?itag=18&expire=1386762263",
        "player_url": None, "ext": "mp4", "webpage_url": f"https://www.youtube.com/watch?v={video_id}",
        "automatic_captions": {lang: [{"ext": "vtt", "url": f"{base}/subs/{video_id}/{lang}.vtt?{asr}&tlang={lang}"}]
                               for lang in ("en", "de")},
    }
    info.update(changes)
    return info


@pytest.fixture
def old_video(sample, tmp_path):
    """The stand-in serves the old video's English ASR track and its German translation; returns a function that
    saves a dict for it (``youtube_dl_dict`` with changes) and crawls it, giving (row, sample members)."""
    texts = load_texts()["pancakes"]
    subs = sample.files / "subs" / OLD
    subs.mkdir(parents=True)
    (subs / "en.vtt").write_text(rolling_asr_vtt(texts["en"][:3], "en"), encoding="utf-8")
    (subs / "de.vtt").write_text(plain_vtt(texts["de"][:3], "de"), encoding="utf-8")
    listing = tmp_path / "old.txt"
    listing.write_text(OLD + "\n")

    def crawl_it(**changes):
        info = youtube_dl_dict(sample.server.base_url, **changes)
        (sample.info / f"{OLD}.info.json").write_text(json.dumps(info))
        out = tmp_path / f"data{len(list(tmp_path.glob('data*')))}"
        args = sample.crawl_args(out, "--langs", "en,de")
        args[args.index("--videos") + 1] = str(listing)
        assert crawl.main(args) == 0
        assert verify_dir(out / "crawl").ok
        return read_all_rows(out / "crawl")[0], read_all_samples(out / "crawl").get(OLD, {})

    return crawl_it


def test_a_2013_youtube_dl_dict_is_crawled_like_a_new_one(sample, old_video):
    row, members = old_video()
    assert row["status"] == "ok", row["error"]
    assert row["duration"] == 15.0 and row["upload_date"] == "20101004" and row["title"] == "Pancakes in a pan"
    assert (row["en_kind"], row["de_kind"], row["de_source"]) == ("asr", "translated", "en")
    for lang in ("en", "de"):
        assert members[f"{lang}.vtt"] == (sample.files / "subs" / OLD / f"{lang}.vtt").read_bytes()
    assert json.loads(members["info.json"])["duration"] == 15.0
    fetched = sorted(r["path"] for r in sample.server.requests if r["path"].startswith(f"/subs/{OLD}/"))
    assert fetched == [f"/subs/{OLD}/de.vtt", f"/subs/{OLD}/en.vtt"]


@pytest.mark.parametrize("duration", ["", "abc", "nan", "-15", 0, 10 ** 400])
def test_an_unreadable_duration_is_missing_and_costs_nothing_else(old_video, duration):
    row, members = old_video(duration=duration, upload_date=20101004, categories="Howto & Style")
    assert row["status"] == "ok" and row["duration"] is None and row["upload_date"] == "20101004"
    assert {"en.vtt", "de.vtt"} <= set(members)
    info = json.loads(members["info.json"])
    assert info["duration"] is None and info["categories"] == ["Howto & Style"]


@pytest.mark.parametrize("duration", [[15], {"seconds": 15}, True])
def test_a_duration_of_a_type_no_tool_writes_still_fails_its_video(old_video, duration):
    row, _ = old_video(duration=duration)
    assert row["status"] == "error" and row["error"] == "unusable info dict: 'duration' is not a number"


# ---------------------------------------------------------------- normalize_info

@pytest.mark.parametrize("given,read", [
    ("15", 15.0), ("15.5", 15.5), (" 15 ", 15.0), (15, 15), (15.5, 15.5),
    ("", None), ("abc", None), ("nan", None), ("inf", None), ("-3", None), ("0", None), (-3, None), (0, None),
    (float("nan"), None), (float("inf"), None), (None, None),
])
def test_duration(given, read):
    info = normalize_info({"id": OLD, "duration": given})
    assert info["duration"] == read and type(info["duration"]) is type(read)
    assert info_problem(info) is None


@pytest.mark.parametrize("given", [[15], {"s": 15}, True])
def test_a_duration_of_another_type_is_left_for_info_problem(given):
    info = normalize_info({"duration": given})
    assert info["duration"] == given and info_problem(info) == "'duration' is not a number"


def test_upload_date_categories_and_missing_fields():
    assert normalize_info({"upload_date": 20110312})["upload_date"] == "20110312"
    assert normalize_info({"upload_date": 20110312.0})["upload_date"] == "20110312"
    assert normalize_info({"upload_date": 2011})["upload_date"] is None
    assert normalize_info({"upload_date": "20110312"})["upload_date"] == "20110312"
    assert info_problem(normalize_info({"upload_date": True})) == "'upload_date' is not a string"
    assert normalize_info({"categories": "Howto & Style"})["categories"] == ["Howto & Style"]
    assert normalize_info({"categories": ["Howto & Style", None]})["categories"] == ["Howto & Style"]
    assert normalize_info({"categories": None})["categories"] is None
    assert normalize_info({"id": OLD}) == {"id": OLD}  # nothing absent is added
    assert info_problem(normalize_info({"categories": [3]})) == "'categories' is not a list of strings"


def test_subtitle_text_in_place_of_formats_is_dropped():
    # youtube-dl before 2015 kept the text of the tracks it downloaded, manual and automatic merged
    formats = [{"ext": "vtt", "url": "https://www.youtube.com/api/timedtext?v=x&lang=de"}]
    info = {"subtitles": {"en": "1\n00:00:01,000 --> 00:00:02,000\nhello\n", "de": formats},
            "automatic_captions": {"fr": "WEBVTT\n"}}
    assert info_problem(info) == "subtitles['en'] is not a list of formats"
    read = normalize_info(info)
    assert read["subtitles"] == {"de": formats} and read["automatic_captions"] == {}
    assert info_problem(read) is None


def test_the_given_dict_is_not_changed():
    info = youtube_dl_dict("http://127.0.0.1:1", upload_date=20101004, categories="Howto & Style",
                           subtitles={"en": "text"})
    before = json.dumps(info, sort_keys=True)
    read = normalize_info(info)
    assert json.dumps(info, sort_keys=True) == before
    assert (read["duration"], read["upload_date"], read["categories"], read["subtitles"]) == (
        15.0, "20101004", ["Howto & Style"], {})
    assert read["view_count"] == 21986

"""info.json, subs.json and captions.json as dataclasses: the bytes each producer wrote before
them, read back and written again unchanged; malformed members refused; the trainer's questions."""
import json
import random

import pytest

from shards.codec import json_bytes
from shards.samples import (ABSENT, CAPTIONS_JSON, LANGS, Captions, InfoJson, LazyTracks, SubsJson, TrackRecord,
                            segment_pair)
from shards.writer import _encode
from tests.conftest import read_all_samples, real_fixtures
from tests.pipeline.downstream.test_prepare import msrvtt  # noqa: F401  (the fixture)


def _round_trips(cls, data: bytes) -> None:
    assert cls.from_member(data).to_member() == data
    assert cls.from_dict(json.loads(data)).to_member() == data


# ---------------------------------------------------------------- info.json


def test_info_json_round_trip_keeps_odd_tracks_and_unknown_keys():
    info = InfoJson(id="abcdefghijk", title=None, duration=12.5, language="de", input_meta={"rank": 3},
                    tracks={"en": TrackRecord(kind="asr", source_lang="en", status="ok", extra={"later": 1}),
                            "de": TrackRecord(kind="none", status="none")},
                    extra={"new_key": [1]})
    doc = json.loads(info.to_member())
    assert doc == {"id": "abcdefghijk", "title": None, "duration": 12.5, "language": "de", "input_meta": {"rank": 3},
                   "new_key": [1], "tracks": {"en": {"kind": "asr", "source_lang": "en", "status": "ok", "later": 1},
                                              "de": {"kind": "none", "status": "none"}}}
    back = InfoJson.from_member(info.to_member())
    assert back == info and back.declared()["en"].kind == "asr" and back.channel is ABSENT
    for odd in ({"tracks": "en"}, {"tracks": {"en": None, "de": {"kind": "manual"}}}, {}):
        data = json_bytes(odd)
        _round_trips(InfoJson, data)
    assert list(InfoJson.from_dict({"tracks": {"en": None, "de": {"kind": "manual"}}}).declared()) == ["de"]


@pytest.mark.parametrize("cls, data, why", [
    (InfoJson, b"[1]", "info.json is a JSON list, not an object"),
    (InfoJson, b"{", "info.json is not JSON"),
    (SubsJson, b'"x"', "subs.json is a JSON str, not an object"),
    (SubsJson, b'{"tracks": [1]}', "subs.json 'tracks' is not an object"),
    (SubsJson, b"\xff", "subs.json is not JSON"),
    (Captions, b"null", "captions.json is a JSON NoneType, not an object"),
])
def test_a_malformed_member_is_a_value_error_naming_it(cls, data, why):
    with pytest.raises(ValueError, match=why):
        cls.from_member(data)


def test_real_info_json_as_the_crawl_writes_it():
    from pipeline.crawl.tracks import select_tracks
    from pipeline.crawl.video import INFO_KEYS, trim_info
    from pipeline.crawl.videolist import VideoEntry

    paths = sorted((real_fixtures() / "infojson").glob("*.json"))
    assert paths
    for path in paths:
        info = json.loads(path.read_text())
        entry = VideoEntry("x", "abcdefghijk", {"task_id": "7"})
        records = {l: c.record() for l, c in select_tracks(info, list(LANGS)).items()}
        # what the crawl built before InfoJson: the trimmed dict, the id, input_meta and the records
        legacy = {**{k: info.get(k) for k in INFO_KEYS}, "id": "abcdefghijk", "input_meta": {"task_id": "7"},
                  "tracks": records}
        member = InfoJson.from_dict({**trim_info(info, entry).to_dict(), "tracks": records}).to_member()
        assert member == _encode(legacy)
        _round_trips(InfoJson, member)


# ---------------------------------------------------------------- subs.json


def _tracks():
    return {"en": {"kind": "asr", "source_lang": "en", "cues": [[0.0, 2.0, "e1"], [2.0, 4.0, "e2"], [6.0, 7.0, "e3"]]},
            "de": {"kind": "manual", "source_lang": "de", "cues": [[0.5, 3.5, "d1"], [20.0, 21.0, "d2"]]}}


def test_subs_json_round_trip_lazy_and_whole():
    subs = SubsJson(video_id="v", duration=None, language="en", timeline="en", tracks=_tracks(),
                    segments=[{"start": 0.0, "end": 2.0, "text": {"en": "e1", "de": "d1"}}], coverage={"en": 1.0},
                    source="howto100m-caption", extra={"later": True})
    data = subs.to_member()
    doc = json.loads(data)
    assert "flagged_tracks" not in doc and doc["duration"] is None and doc["later"] is True
    lazy = SubsJson.lazy(data)
    assert isinstance(lazy.tracks, LazyTracks) and lazy.tracks.decoded() == []
    assert lazy.cues("de") == _tracks()["de"]["cues"] and lazy.tracks.decoded() == ["de"]
    assert lazy.to_member() == data == SubsJson.from_member(data).to_member()
    assert lazy.segments == subs.segments and lazy.extra == {"later": True}
    for odd in (b"{}", b'{"tracks": null}', b'{"tracks": []}', b'{"a": {"b": [1, {}]}, "tracks": {}}'):
        _round_trips(SubsJson, odd)
        assert SubsJson.lazy(odd).to_member() == odd and SubsJson.lazy(odd).langs() == []
    for bad in (b'{"tracks": {}} x', b'{"a": 1,}', b'{"a" 1}', b"{,}", b'{"tracks": {"en": {}}'):
        with pytest.raises(ValueError):
            SubsJson.lazy(bad)
    with pytest.raises(ValueError, match="track 'en' is not an object"):
        SubsJson.lazy(b'{"tracks": {"en": [1]}}').cues("en")


def test_cues_near_is_the_overlap_filter_or_the_nearest_cue():
    subs = SubsJson(tracks=_tracks())
    cues = subs.cues("en")
    rng = random.Random(0)
    for _ in range(500):
        start = rng.choice([0, 1, 2, 4, 5, 6, 7, 8]) + rng.choice([0.0, 0.5])
        end = start + rng.choice([0.0, 0.5, 1.0, 2.0, 4.0])
        inside = [tuple(c) for c in cues if c[1] > start and c[0] < end]
        near = subs.cues_near("en", start, end)
        assert near == inside or (not inside and len(near) == 1)
    assert subs.cues_near("en", 4.0, 6.0) == [(2.0, 4.0, "e2")]  # touching is not inside; a tie: the earlier
    assert subs.cues_near("fr", 0, 1) == [] and SubsJson().cues_near("en", 0, 1) == []


def test_parallel_texts_over_the_segments():
    seg = {"start": 0.0, "end": 2.0, "text": {"en": "hello", "de": "hallo"}}
    subs = SubsJson(segments=[seg, {"start": 2.0, "end": 3.0, "text": {"en": "alone"}}])
    assert subs.parallel_texts("de", "en") == [(0.0, 2.0, "hallo", "hello")]
    assert segment_pair(seg, "en", "fr") is None and SubsJson().parallel_texts("en", "de") == []


def _legacy_subs(video_id, info, usable, timeline, segments, coverage, flagged, problems):
    """subs.json as assemble_video built it before SubsJson."""
    subs = {"video_id": video_id, "duration": info.get("duration"), "language": info.get("language"),
            "timeline": timeline, "tracks": usable, "segments": segments, "coverage": coverage}
    if flagged:
        subs["flagged_tracks"] = flagged
    if problems:
        subs["track_problems"] = problems
    return subs


def test_real_subtitles_as_mmp_align_writes_them():
    from pipeline.subtitles.align import align_tracks
    from pipeline.subtitles.clean import clean_track
    from pipeline.subtitles.stage import assemble_video

    root = real_fixtures() / "vtt"
    videos = {"ABC123": {l: (root / "same_video_multilang" / "pinchflat_ABC123" / f"ABC123.{l}.srt", k, s)
                         for l, k, s in (("en", "asr", "en"), ("de", "manual", "de"), ("fr", "translated", "de"))}}
    for lang in ("en", "es", "vi"):
        for path in sorted((root / "youtube_auto" / lang).glob("*.vtt"))[:3]:
            videos[f"{lang}-{path.stem}"] = {lang: (path, "asr", lang)}
    checked = 0
    for vid, files in videos.items():
        cleaned = {}
        for lang, (path, kind, source) in files.items():
            cues, report = clean_track(path.read_bytes(), lang)
            cleaned[lang] = (cues, report, kind, source)
        info = {"duration": 100.0, "language": "de"}
        langs = ["en", "de", "fr", "es", "vi"]
        declared = {"fr": TrackRecord(kind="translated", error="HTTP 429")}
        row, subs = assemble_video(vid, InfoJson.from_dict(info), cleaned, langs, declared)
        if subs is None:
            continue
        usable = {l: {"kind": k, "source_lang": s, "cues": [list(c) for c in cues], "report": r.as_dict()}
                  for l, (cues, r, k, s) in cleaned.items() if r.status == "ok" and "wrong_script" not in r.flags}
        timeline, segments, coverage = align_tracks(usable, "de")
        data = subs.to_member()
        assert json.loads(data)["tracks"] == usable and subs.segments == segments
        legacy = _legacy_subs(vid, info, usable, timeline, segments, coverage, subs.to_dict().get("flagged_tracks"),
                              subs.to_dict().get("track_problems"))
        assert data == _encode(legacy)
        _round_trips(SubsJson, data)
        lazy = SubsJson.lazy(data)
        assert lazy.to_member() == data and all(lazy.cues(l) == usable[l]["cues"] for l in usable)
        checked += 1
    assert checked >= 3


# ---------------------------------------------------------------- captions.json


def test_captions_round_trip_and_defaults():
    caps = Captions(video_id="v", split="test", captions={"en": ["a dog"], "de": ["ein Hund"]},
                    parallel=[{"en": "a dog", "de": "ein Hund"}], extra={"later": 1})
    data = caps.to_member()
    assert json.loads(data) == {"video_id": "v", "split": "test", "captions": {"en": ["a dog"], "de": ["ein Hund"]},
                                "parallel": [{"en": "a dog", "de": "ein Hund"}], "later": 1}
    assert Captions.from_member(data) == caps
    _round_trips(Captions, data)
    empty = Captions.from_member(b"{}")
    assert empty.split_name == "train" and empty.by_lang() == {} and empty.entries() == []
    assert Captions(split=None).split_name is None


def test_prepared_captions_round_trip(msrvtt):  # noqa: F811
    from pipeline.downstream.prepare import main

    root, data, jsf, feats = msrvtt
    out = root / "out"
    assert main(["msrvtt", str(data), "--features", f"s3d={feats}", "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 0
    samples = read_all_samples(out)
    assert samples
    for s in samples.values():
        member = s[CAPTIONS_JSON]
        assert set(json.loads(member)) == {"video_id", "split", "captions", "parallel"}
        _round_trips(Captions, member)

"""Putting languages on one timeline, and the trainer's two look-ups."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.subtitles.align import align_tracks, choose_timeline, cues_near, parallel_texts, project
from pipeline.subtitles.clean import clean_track


def track(kind, cues, source=None):
    return {"kind": kind, "source_lang": source, "cues": cues}


EN = [(0.0, 2.0, "e1"), (2.0, 4.0, "e2"), (4.0, 6.0, "e3"), (10.0, 12.0, "e4")]


def texts_of(segments, lang):
    return [seg["text"][lang] for seg in segments if lang in seg["text"]]


def test_timeline_choice():
    assert choose_timeline({"en": track("asr", EN), "de": track("manual", EN)}, "de") == "en"
    # English only as a translation: the source track in the video's language wins
    assert choose_timeline({"en": track("translated", EN, "de"), "de": track("manual", EN)}, "de") == "de"
    assert choose_timeline({"en": track("translated", EN, "fr"), "fr": track("asr", EN),
                            "de": track("manual", EN)}, "fr") == "fr"
    assert choose_timeline({"en": track("translated", EN, "de"), "de": track("translated", EN, "en")}, None) == "de"
    assert choose_timeline({"fr": track("translated", EN, "xx"), "de": track("translated", EN[:1], "yy")}, None) == "fr"
    assert choose_timeline({}, "en") is None and choose_timeline({"en": track("asr", [])}) is None


def test_one_to_many_and_many_to_one_without_loss_or_duplication():
    de = [(0.5, 3.5, "d-spans-e1-e2"),          # overlaps e1 by 1.5 and e2 by 1.5: the earlier one
          (4.1, 4.9, "d-a"), (5.0, 5.8, "d-b"),  # two German cues inside e3
          (7.0, 8.0, "d-gap"),                    # in the timeline's gap: nearest segment (e3)
          (11.0, 20.0, "d-after")]
    zh = [(1.5, 5.0, "中文")]                     # overlaps e2 most
    timeline, segments, coverage = align_tracks({"en": track("asr", EN), "de": track("manual", de),
                                                 "zh": track("translated", zh, "en")}, "en")
    assert timeline == "en" and len(segments) == len(EN)
    assert [s["text"]["en"] for s in segments] == ["e1", "e2", "e3", "e4"]
    assert segments[0]["text"]["de"] == "d-spans-e1-e2" and "de" not in segments[1]["text"]
    assert segments[2]["text"]["de"] == "d-a d-b d-gap"
    assert segments[3]["text"]["de"] == "d-after"
    assert segments[1]["text"]["zh"] == "中文" and texts_of(segments, "zh") == ["中文"]
    assert sorted(" ".join(texts_of(segments, "de")).split()) == sorted(c[2] for c in de)
    assert coverage["en"] == 1.0
    assert coverage["de"] == pytest.approx((3.0 + 0.8 + 0.8 + 1.0) / 8.0)
    assert coverage["zh"] == pytest.approx(3.5 / 8.0)


def test_differing_counts_never_crash():
    for n_other in (0, 1, 3, 50):
        other = [(i * 0.2, i * 0.2 + 0.1, f"w{i}") for i in range(n_other)]
        _, segments, _ = align_tracks({"en": track("asr", EN[:1]), "fr": track("translated", other, "en")})
        assert len(texts_of(segments, "fr")) == (1 if n_other else 0)
    assert project([(5.0, 5.0, "point")], [0.0, 10.0], [1.0, 11.0]) == [0]


def test_cues_near_returns_consecutive_cues_closest_in_time():
    subs = {"tracks": {"en": {"cues": [list(c) for c in EN]}}}
    assert [c[2] for c in cues_near(subs, "en", 1.0, 4.5)] == ["e1", "e2", "e3"]
    assert [c[2] for c in cues_near(subs, "en", 7.0, 8.0)] == ["e3"]     # in a gap: the nearest
    assert [c[2] for c in cues_near(subs, "en", 8.5, 9.5)] == ["e4"]
    assert [c[2] for c in cues_near(subs, "en", 50.0, 60.0)] == ["e4"]   # past the end
    assert [c[2] for c in cues_near(subs, "en", 0.0, 12.0, max_cues=2)] == ["e2", "e3"]
    assert cues_near(subs, "de", 0.0, 5.0) == [] and cues_near({}, "en", 0, 1) == []


def test_parallel_texts_of_a_segment_and_of_a_video():
    seg = {"start": 0.0, "end": 2.0, "text": {"en": "hello", "de": "hallo"}}
    assert parallel_texts(seg, "en", "de") == ("hello", "hallo")
    assert parallel_texts(seg, "en", "fr") is None
    subs = {"segments": [seg, {"start": 2.0, "end": 3.0, "text": {"en": "alone"}}]}
    assert parallel_texts(subs, "de", "en") == [(0.0, 2.0, "hallo", "hello")]


@pytest.mark.skipif(not os.environ.get("MMP_REAL_FIXTURES"), reason="MMP_REAL_FIXTURES not set")
def test_real_same_video_three_languages():
    root = Path(os.environ["MMP_REAL_FIXTURES"]) / "vtt" / "same_video_multilang" / "pinchflat_ABC123"
    kinds = {"en": ("asr", "en"), "de": ("manual", "de"), "fr": ("translated", "de")}
    tracks = {}
    for lang, (kind, source) in kinds.items():
        cues, rep = clean_track((root / f"ABC123.{lang}.srt").read_bytes(), lang)
        assert rep.status == "ok" and cues
        tracks[lang] = track(kind, cues, source)
    timeline, segments, coverage = align_tracks(tracks, "de")
    assert timeline == "en" and len(segments) == len(tracks["en"]["cues"])
    for lang in ("de", "fr"):  # every word of every track lands in exactly one segment
        assert " ".join(texts_of(segments, lang)).split() == " ".join(c[2] for c in tracks[lang]["cues"]).split()
        assert 0.3 < coverage[lang] <= 1.0
    assert parallel_texts({"segments": segments}, "en", "de")

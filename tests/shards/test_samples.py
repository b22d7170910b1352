"""The on-disk sample's one definition: member names, meta.json as each producer writes it, the codecs."""
import io
import json

import numpy as np
import pytest

from shards.codec import json_bytes, load_json, load_npy, npy_bytes
from shards.layout import ALIGNED, CRAWL, MMP, UnitFiles
from shards.rows import ALIGNED_LANG_FIELDS, CRAWL_LANG_FIELDS, aligned_schema, crawl_schema, lang_column, lang_columns
from shards.samples import (ABSENT, LANGS, RELEASE_LANGS, META_JSON, MmpMeta, feature_member, find_track_member,
                            is_track_member, track_format, track_member)
from shards.writer import UnitWriter, _encode
from tests.conftest import read_all_samples
from tests.pipeline.downstream.test_prepare import msrvtt  # noqa: F401  (the fixture)

# The keys of meta.json as each producer wrote it before MmpMeta (read from their code).
EXTRACT_KEYS = {"video_id", "duration", "fps", "width", "height", "rotation", "decoder", "decoder_note", "source",
                "features", "versions"}
CARRIED = {"title", "categories", "category_1", "category_2", "task_id", "channel", "language"}
S3D_IMPORT_KEYS = {"video_id", "duration", "fps", "features", "versions"}
PREPARE_KEYS = {"video_id", "dataset", "split", "features", "split_videos", "versions"}  # + benchmark, duration


def test_member_names_and_languages():
    assert (track_member("en"), track_member("zh-Hans"), feature_member("r21d")) == ("en.vtt", "zh-Hans.vtt", "r21d.npy")
    assert is_track_member("de.vtt") and not is_track_member("info.json")
    assert track_member("de", "srt") == "de.srt" and is_track_member("de.srt") and not is_track_member("srt")
    assert (track_format("zh-Hans.vtt"), track_format("de.srt")) == ("vtt", "srt")
    with pytest.raises(ValueError):
        track_member("de", "json3")
    with pytest.raises(ValueError):
        track_format("info.json")
    assert find_track_member({"info.json": b"", "de.srt": b""}, "de") == "de.srt"
    assert find_track_member({"de.vtt", "de.srt"}, "de") == "de.vtt"
    assert find_track_member({"de.vtt", "de.srt"}, "de", prefer="srt") == "de.srt"
    assert find_track_member({"en.vtt"}, "de") is None
    assert CRAWL.check({"info.json": b"", "de.srt": b"", "en.vtt": b"", "zh-Hans.srt": b""}) == []
    assert CRAWL.check({"info.json": b"", "de.json3": b""}) == ["unexpected member 'de.json3'"]
    assert len(LANGS) == 9 and sorted(LANGS) == sorted(RELEASE_LANGS) and LANGS != RELEASE_LANGS
    assert MMP.check({META_JSON: b"", feature_member("s3d"): b"", "captions.json": b""}) == []
    assert MMP.check({META_JSON: b"", "s3dxnpy": b""}) == ["unexpected member 's3dxnpy'"]


def test_lang_columns_name_each_stages_per_language_fields():
    assert lang_column("en", "status") == "en_status"
    assert lang_columns("de") == ["de_kind", "de_source", "de_bytes", "de_error", "de_status"]
    assert crawl_schema(["en", "de"]).names[-10:] == lang_columns("en") + lang_columns("de")
    assert aligned_schema(["sw"]).names[-len(ALIGNED_LANG_FIELDS):] == lang_columns("sw", ALIGNED_LANG_FIELDS)
    assert len(CRAWL_LANG_FIELDS) == 5


def test_mmp_meta_round_trip_keeps_absent_out_and_none_as_null():
    meta = MmpMeta(video_id="v", features={"s3d": {"rows": 4}}, versions={"numpy": "2"}, duration=None, fps=None,
                   title="a title", extra={"later_key": [1, 2]})
    doc = json.loads(meta.to_member())
    assert doc == {"video_id": "v", "features": {"s3d": {"rows": 4}}, "versions": {"numpy": "2"}, "duration": None,
                   "fps": None, "title": "a title", "later_key": [1, 2]}
    assert "width" not in doc and meta.width is ABSENT
    back = MmpMeta.from_member(meta.to_member())
    assert back == meta and back.to_member() == meta.to_member()
    # the writer's bytes for the dict a producer used to build are the member's bytes
    assert _encode(doc) == meta.to_member() == json_bytes(doc)


@pytest.mark.parametrize("data, why", [(b"[1]", "not an object"), (b'{"video_id": "v"}', "no features, versions"),
                                       (b"{", "Expecting")])
def test_mmp_meta_from_a_malformed_member_is_a_value_error(data, why):
    with pytest.raises(ValueError, match=why):
        MmpMeta.from_member(data)


def test_codec_round_trips_and_refuses_a_pickle():
    a = np.arange(6, dtype=np.float16).reshape(2, 3)
    back = load_npy(npy_bytes(a))
    assert back.dtype == np.float16 and np.array_equal(back, a)
    assert load_json(json_bytes({"b": "ü", "a": [1]})) == {"a": [1], "b": "ü"}
    assert json_bytes({"b": 1, "a": "ü"}) == '{"a": "ü", "b": 1}'.encode()
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        load_npy(buf.getvalue())
    with pytest.raises(ValueError):
        npy_bytes(np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError):
        load_json(b"[" * 100000 + b"]" * 100000)


def _aligned_unit(directory, vid, duration, meta=None):
    subs = {"video_id": vid, "duration": duration, "segments": [],
            "tracks": {"en": {"kind": "asr", "source_lang": "en", "cues": [[0.0, 1.0, "hello there"]]}}}
    with UnitWriter(UnitFiles(directory, "aligned", 0), aligned_schema(["en"]), ALIGNED) as writer:
        writer.write_sample(vid, {"subs.json": subs, **({META_JSON: meta} if meta else {})})
        writer.add_row({"video_id": vid, "status": "ok", "duration": duration})


def test_s3d_import_meta_keys(tmp_path):
    from pipeline.release import importer

    _aligned_unit(tmp_path / "aligned", "vidRelease1", 4.0)
    (tmp_path / "release").mkdir()
    np.save(tmp_path / "release" / "vidRelease1.npy", np.random.rand(4, 1024).astype(np.float32))
    assert importer.main(["s3d-features", "--features", str(tmp_path / "release"), "--aligned",
                          str(tmp_path / "aligned"), "--out", str(tmp_path / "mmp"), "--workers", "1",
                          "--no-progress"]) == 0
    member = read_all_samples(tmp_path / "mmp")["vidRelease1"][META_JSON]
    doc = load_json(member)
    assert set(doc) == S3D_IMPORT_KEYS and doc["fps"] is None and doc["duration"] == 4.0
    assert MmpMeta.from_member(member).to_member() == member


def test_prepare_meta_keys(msrvtt):  # noqa: F811
    from pipeline.downstream.prepare import main

    root, data, jsf, feats = msrvtt
    out = root / "out"
    assert main(["msrvtt", str(data), "--split", "1k-A", "--jsfusion-csv", str(jsf), "--features", f"s3d={feats}",
                 "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    samples = read_all_samples(out)
    keys = {vid: set(load_json(s[META_JSON])) for vid, s in samples.items()}
    assert keys and all(k == PREPARE_KEYS | {"benchmark", "duration"} for k in keys.values())
    out = root / "all"
    assert main(["msrvtt", str(data), "--features", f"s3d={feats}", "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 0
    keys = {vid: set(load_json(s[META_JSON])) for vid, s in read_all_samples(out).items()}
    assert keys and all(k == PREPARE_KEYS | {"duration"} for k in keys.values())


def test_extract_meta_keys(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("av")
    pytest.importorskip("decord")
    from tests.features.test_decode import cfr, make_video
    from tests.features.test_extract import run

    (tmp_path / "videos").mkdir()
    make_video(tmp_path / "videos" / "vidCFR00001.mkv", cfr(1.5))
    _aligned_unit(tmp_path / "aligned", "vidCFR00001", 1.5, meta={"title": "t", "channel": "c", "rank": 3})
    assert run(tmp_path / "aligned", tmp_path / "videos", tmp_path / "mmp", "--random-weights",
               "--backbones", "s3d") == 0
    member = read_all_samples(tmp_path / "mmp")["vidCFR00001"][META_JSON]
    doc = load_json(member)
    assert set(doc) == EXTRACT_KEYS | {"title", "channel"} and {"title", "channel"} <= CARRIED
    assert doc["decoder_note"] is None or isinstance(doc["decoder_note"], str)
    assert MmpMeta.from_member(member).to_member() == member

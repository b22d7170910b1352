"""mmp-prepare on tiny files in the public formats of MSR-VTT, VATEX and Multi30K."""
import csv
import gzip
import json

import numpy as np
import pytest

from pipeline.downstream.prepare import main
from shards.codec import load_json, load_npy
from shards.verify import main as verify
from shards.writer import sha256_file
from tests.conftest import read_all_rows, read_all_samples

RUN = ["--workers", "1", "--no-progress"]


def write_features(directory, ids, dim, rows=5, seed=0):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for vid in ids:
        np.save(directory / f"{vid}.npy", rng.standard_normal((rows, dim)).astype(np.float32))
    return directory


@pytest.fixture
def msrvtt(tmp_path):
    """MSRVTT_data.json with 7 videos, the JSFusion csv, and s3d features with faults planted."""
    splits = {"video0": "train", "video1": "train", "video2": "train", "video3": "validate",
              "video4": "test", "video5": "test", "video6": "test"}
    videos = [{"video_id": v, "split": s, "id": i, "category": 1, "url": "https://www.youtube.com/watch?v=x",
               "start time": 10.0, "end time": 22.5} for i, (v, s) in enumerate(splits.items())]
    sentences = []
    for i, vid in enumerate(splits):
        if vid == "video3":
            continue  # annotated video with no sentence: no_captions
        for k in (2, 0, 1):  # out of sen_id order on purpose
            sentences.append({"caption": f"{vid} caption {k}", "video_id": vid, "sen_id": i * 10 + k})
    data = tmp_path / "MSRVTT_data.json"
    data.write_text(json.dumps({"info": {}, "videos": videos, "sentences": sentences}))
    jsf = tmp_path / "MSRVTT_JSFUSION_test.csv"
    with open(jsf, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        w.writerow(["ret0", "msr4", "video4", "video4 caption 1"])
        w.writerow(["ret1", "msr5", "video5", "video5 caption 0"])
        w.writerow(["ret2", "msr7010", "video7010", "not in the annotations"])
    feats = write_features(tmp_path / "s3d", ["video0", "video3", "video4", "video5"], 1024)
    np.save(feats / "video1.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)  # pickled
    np.save(feats / "video2.npy", np.ones((4, 1024), dtype=np.int64))  # not float
    # video6 has no feature file
    return tmp_path, data, jsf, feats


def by_id(rows):
    return {r["video_id"]: r for r in rows}


def test_msrvtt_all_videos(msrvtt, capsys):
    root, data, _, feats = msrvtt
    out = root / "out"
    assert main(["msrvtt", str(data), "--features", f"s3d={feats}", "--out", str(out), *RUN]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-3:] == [
        "mmp-prepare: WARNING: test: 1 of 3 videos are not in the shards: 1 have no usable features (no_features=1); "
        "retrieval on test will be over 2 videos, not 3",
        "mmp-prepare: WARNING: train: 2 of 3 videos are not in the shards: 2 have no usable features "
        "(bad_features=2); retrieval on train will be over 1 video, not 3",
        "mmp-prepare: WARNING: val: 1 of 1 videos are not in the shards: 1 other (no_captions=1); "
        "retrieval on val will be over 0 videos, not 1"]
    assert verify([str(out)]) == 0
    rows = by_id(read_all_rows(out))
    assert {v: r["status"] for v, r in rows.items()} == {
        "video0": "ok", "video1": "bad_features", "video2": "bad_features", "video3": "no_captions",
        "video4": "ok", "video5": "ok", "video6": "no_features"}
    assert "pickled" in rows["video1"]["error"] and "not float" in rows["video2"]["error"]
    samples = read_all_samples(out)
    assert set(samples) == {"video0", "video4", "video5"}
    caps = load_json(samples["video0"]["captions.json"])
    assert caps == {"video_id": "video0", "split": "train", "parallel": [],
                    "captions": {"en": ["video0 caption 0", "video0 caption 1", "video0 caption 2"]}}
    assert load_json(samples["video4"]["captions.json"])["split"] == "test"
    s3d = load_npy(samples["video0"]["s3d.npy"])
    assert s3d.dtype == np.float16 and s3d.shape == (5, 1024)
    np.testing.assert_allclose(s3d, np.load(feats / "video0.npy"), atol=2e-3)
    meta = load_json(samples["video0"]["meta.json"])
    assert meta["dataset"] == "msrvtt" and meta["duration"] == 12.5 and meta["split"] == "train"
    assert meta["split_videos"] == 3 and "benchmark" not in meta  # the split as listed, failures included
    assert meta["features"]["s3d"] == {"file": "video0.npy", "sha256": sha256_file(feats / "video0.npy"),
                                       "rows": 5, "dim": 1024}
    assert rows["video0"]["languages"] == ["en"] and rows["video0"]["captions"] == 3


def test_split_warnings_survive_a_malformed_count_in_a_stats_file(msrvtt, capsys, caplog):
    root, data, _, feats = msrvtt
    out = root / "out"
    argv = ["msrvtt", str(data), "--features", f"s3d={feats}", "--out", str(out), *RUN]
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()[-3:]
    stats_file = sorted(out.glob("mmp-*.stats.json"))[0]
    stats = json.loads(stats_file.read_text())
    stats["counts"]["split/broken"] = 1  # not split/SPLIT/STATUS
    stats_file.write_text(json.dumps(stats))
    assert main(argv) == 0  # resumes: the warnings come from the stats files
    assert capsys.readouterr().out.splitlines()[-3:] == first
    assert "'split/broken' in a unit's stats is not split/SPLIT/STATUS" in caplog.text
    stats["counts"]["split/test/ok"] = "three"  # not a count: the unit's stats are damaged, said in one line
    stats_file.write_text(json.dumps(stats))
    caplog.clear()
    assert main(argv) == 0  # the unit stays complete; its damage is reported (mmp-verify fails it)
    assert "'counts.split/test/ok' is 'three', not a count" in caplog.text


def test_msrvtt_1k_a_with_translations(msrvtt, capsys):
    root, data, jsf, feats = msrvtt
    trans = root / "translations"
    trans.mkdir()
    # per-language file in the {video_id: [captions]} layout, as long as the English list (sen_id order)
    (trans / "msrvtt_de.json").write_text(json.dumps(
        {"video4.mp4": ["de null", "de eins", "de zwei"], "video5": ["", "de1", "de2"]}))
    # a translated copy of MSRVTT_data.json's sentences
    (trans / "msrvtt_ru.json").write_text(json.dumps({"sentences": [
        {"video_id": "video4", "sen_id": 41, "caption": "ru odin"}, {"video_id": "video4", "sen_id": 40, "caption": "ru nol"},
        {"video_id": "video4", "sen_id": 42, "caption": "ru dva"}]}))
    # one combined {lang: {video_id: [...]}} file, one caption per 1k-A video; zh with an unalignable list
    combined = root / "msrvtt_multi.json"
    combined.write_text(json.dumps({"fr": {"video4": ["fr un"]}, "zh": {"video4": ["zh a", "zh b"]}}))
    out = root / "out1k"
    argv = ["msrvtt", str(data), "--split", "1k-A", "--jsfusion-csv", str(jsf), "--translations", str(trans),
            str(combined), "--features", f"s3d={feats}", "--out", str(out), *RUN]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert ("mmp-prepare: WARNING: 1k-A: 1 of 3 videos keep their first translated caption (zh=1) instead of their "
            "sentence's translation: 0 sentences not among") in printed
    assert "WARNING: test: 1 of 3 videos are not in the shards: 1 other (not_in_annotations=1)" in printed
    assert "not the paper's MSR-VTT 1k-A" in printed
    assert verify([str(out)]) == 0
    rows = by_id(read_all_rows(out))
    assert set(rows) == {"video4", "video5", "video7010"}
    assert rows["video4"]["sentence_matched"] is True and rows["video4"]["translation_fallback"] == ["zh"]
    assert rows["video7010"]["sentence_matched"] is None
    assert rows["video7010"]["status"] == "not_in_annotations"
    assert "MSRVTT_JSFUSION_test.csv" in rows["video7010"]["error"]
    caps = load_json(read_all_samples(out)["video4"]["captions.json"])
    assert caps["split"] == "test"
    assert caps["captions"]["en"] == ["video4 caption 1"]  # the csv's one sentence
    assert caps["captions"]["de"] == ["de eins"] and caps["captions"]["ru"] == ["ru odin"]
    assert caps["captions"]["fr"] == ["fr un"]
    assert caps["captions"]["zh"] == ["zh a"]  # unalignable: one caption per video (the first), not paired
    assert caps["parallel"] == [{"en": "video4 caption 1", "de": "de eins", "fr": "fr un", "ru": "ru odin"}]
    assert rows["video4"]["languages"] == ["de", "en", "fr", "ru", "zh"]
    # an empty translation keeps its place: video5's csv sentence is caption 0, whose German is empty
    assert load_json(read_all_samples(out)["video5"]["captions.json"])["captions"] == {"en": ["video5 caption 0"]}
    meta = load_json(read_all_samples(out)["video4"]["meta.json"])
    assert meta["split_videos"] == 3 and meta["benchmark"] == "MSR-VTT 1k-A"
    # resume: the same command skips the finished unit, and still says what the split lacks
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "1 already complete" in printed and "WARNING: test: 1 of 3 videos are not in the shards" in printed


def test_msrvtt_1k_a_unmatched_sentence_keeps_one_caption_per_language(msrvtt, capsys):
    """A csv sentence that is none of the video's captions: its translation cannot be found, so each
    language keeps the video's first translated caption (file order; sen_id order), unpaired."""
    root, data, jsf, feats = msrvtt
    csv_path = root / "jsf_unmatched.csv"
    csv_path.write_text(jsf.read_text() + "ret3,msr0,video0,Video0 caption two!\n")
    trans = root / "tr"
    trans.mkdir()
    (trans / "de.json").write_text(json.dumps({"video0": ["de0 null", "de0 eins", "de0 zwei"],
                                               "video4": ["de null", "de eins", "de zwei"]}))
    (trans / "ru.json").write_text(json.dumps({"sentences": [
        {"video_id": "video0", "sen_id": 2, "caption": "ru0 dva"}, {"video_id": "video0", "sen_id": 1, "caption": "ru0 odin"},
        {"video_id": "video0", "sen_id": 0, "caption": ""}]}))
    out = root / "outu"
    assert main(["msrvtt", str(data), "--split", "1k-A", "--jsfusion-csv", str(csv_path), "--translations", str(trans),
                 "--features", f"s3d={feats}", "--out", str(out), *RUN]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "1k-A:" in line]
    assert warnings == ["mmp-prepare: WARNING: 1k-A: 1 of 4 videos keep their first translated caption (de=1, ru=1) "
                        "instead of their sentence's translation: 1 sentence not among the video's "
                        "MSRVTT_data.json captions, 0 translation lists not lining up with them; those captions "
                        "are unpaired (parquet: translation_fallback)"]
    caps = load_json(read_all_samples(out)["video0"]["captions.json"])
    assert caps["split"] == "test"
    assert caps["captions"] == {"en": ["Video0 caption two!"], "de": ["de0 null"], "ru": ["ru0 odin"]}  # not all 3
    assert caps["parallel"] == []
    rows = by_id(read_all_rows(out))
    assert rows["video0"]["sentence_matched"] is False and rows["video0"]["translation_fallback"] == ["de", "ru"]
    assert rows["video4"]["sentence_matched"] is True and rows["video4"]["translation_fallback"] == []
    assert load_json(read_all_samples(out)["video4"]["captions.json"])["captions"]["de"] == ["de eins"]
    stats = json.loads(next(out.glob("mmp-*.stats.json")).read_text())["counts"]
    assert stats["sentence_unmatched"] == 1 and stats["translation_fallback/de"] == 1


def test_a_video_missing_one_of_its_features_is_not_written(msrvtt, capsys):
    """Asked for s3d and r21d, a test video with s3d alone is a no_features row, not an 'ok' video
    that mmp-eval would leave out of the gallery."""
    root, data, _, feats = msrvtt
    r21d = write_features(root / "r21d", ["video4", "video6"], 512)
    out = root / "outboth"
    assert main(["msrvtt", str(data), "--split", "test", "--features", f"s3d={feats}", f"r21d={r21d}",
                 "--out", str(out), *RUN]) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = by_id(read_all_rows(out))
    assert {v: r["status"] for v, r in rows.items()} == {"video4": "ok", "video5": "no_features", "video6": "no_features"}
    assert rows["video5"]["error"] == f"no r21d feature file (r21d in {r21d}); found s3d"
    assert rows["video6"]["error"] == f"no s3d feature file (s3d in {feats}); found r21d"
    assert set(read_all_samples(out)) == {"video4"}
    assert printed[-1] == ("mmp-prepare: WARNING: test: 2 of 3 videos are not in the shards: 2 have no usable features "
                           "(no_features=2); retrieval on test will be over 1 video, not 3")


def test_msrvtt_9k_and_official_split(msrvtt):
    root, data, jsf, feats = msrvtt
    out = root / "out9k"
    assert main(["msrvtt", str(data), "--split", "9k", "--jsfusion-csv", str(jsf), "--features", f"s3d={feats}",
                 "--out", str(out), "--unit-size", "2", "--workers", "2", "--no-progress"]) == 0  # a process pool
    assert verify([str(out)]) == 0 and len(list(out.glob("mmp-*.stats.json"))) == 3
    rows = by_id(read_all_rows(out))
    assert set(rows) == {"video0", "video1", "video2", "video3", "video6"}
    assert {r["split"] for r in rows.values()} == {"train"}
    out = root / "outval"
    assert main(["msrvtt", str(data), "--split", "val", "--features", f"s3d={feats}", "--out", str(out), *RUN]) == 0
    assert list(by_id(read_all_rows(out))) == ["video3"]


def write_multi30k(root, n_train=3):
    root.mkdir(parents=True, exist_ok=True)
    train_images = [f"{1000 + i}.jpg" for i in range(n_train)]
    (root / "train_images.txt").write_text("\n".join(train_images) + "\n")
    for lang in ("en", "de", "fr", "cs"):
        lines = [f"{lang} train {i}" for i in range(n_train)]
        if lang == "de":
            lines[1] = ""
        (root / f"train.{lang}").write_text("\n".join(lines) + "\n")
    (root / "image_splits").mkdir()
    (root / "image_splits" / "test_2016_flickr.txt").write_text("2000.jpg\n2001.jpg\n")
    (root / "raw").mkdir()
    for lang in ("en", "de"):  # as the multi30k-dataset repository ships them: raw/*.gz
        with gzip.open(root / "raw" / f"test_2016_flickr.{lang}.gz", "wt", encoding="utf-8") as f:
            f.write(f"{lang} test 0\n{lang} test 1\n")
    return train_images


def run_error(argv, capsys):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmp-prepare: error: ") and len(err.strip().splitlines()) == 1
    return err


def test_bad_inputs_are_one_clear_error(tmp_path, msrvtt, capsys):
    root, data, jsf, feats = msrvtt
    out = str(tmp_path / "bad")
    feat = ["--features", f"s3d={feats}", "--out", out, *RUN]
    assert "does not exist" in run_error(["msrvtt", str(tmp_path / "nope.json"), *feat], capsys)
    broken = tmp_path / "broken.json"
    broken.write_text('{"videos": [}')
    assert "not valid JSON" in run_error(["msrvtt", str(broken), *feat], capsys)
    assert "not valid JSON" in run_error(["vatex", f"train={broken}", *feat], capsys)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"videos": 3}')
    assert "MSRVTT_data.json" in run_error(["msrvtt", str(wrong), *feat], capsys)
    assert "--jsfusion-csv" in run_error(["msrvtt", str(data), "--split", "1k-A", *feat], capsys)
    assert "NAME=PATH" in run_error(["msrvtt", str(data), "--features", f"i3d={feats}", "--out", out], capsys)
    assert "give the features" in run_error(["msrvtt", str(data), "--out", out], capsys)
    unnamed = tmp_path / "captions.json"
    unnamed.write_text("{}")
    assert "cannot tell its language" in run_error(["msrvtt", str(data), "--translations", str(unnamed), *feat], capsys)
    assert "cannot tell the split" in run_error(["vatex", str(unnamed), *feat], capsys)

    m30k = tmp_path / "m30k"
    write_multi30k(m30k)
    regions = write_features(tmp_path / "regions", ["1000"], 8)
    (m30k / "train.fr").write_text("only one line\n")
    assert "line i of every file" in run_error(
        ["multi30k", str(m30k), "--splits", "train", "--features", f"regions={regions}", "--out", out], capsys)
    (m30k / "train.fr").write_text("a\nb\nc\n")
    assert "no image list" in run_error(
        ["multi30k", str(m30k), "--splits", "val", "--features", f"regions={regions}", "--out", out], capsys)
    pickled = tmp_path / "train.npy"
    np.save(pickled, np.array([None, {"x": 1}], dtype=object), allow_pickle=True)
    assert "pickled data is never loaded" in run_error(
        ["multi30k", str(m30k), "--splits", "train", "--features", f"regions={pickled}", "--out", out], capsys)
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((2, 3, 4), dtype=np.float32))
    assert "row i must be image i" in run_error(
        ["multi30k", str(m30k), "--splits", "train", "--features", f"regions={short}", "--out", out], capsys)
    assert not list((tmp_path / "bad").glob("mmp-*"))


def test_resume_refuses_other_input(msrvtt, capsys):
    root, data, jsf, feats = msrvtt
    out = root / "out"
    assert main(["msrvtt", str(data), "--split", "train", "--features", f"s3d={feats}", "--out", str(out), *RUN]) == 0
    err = run_error(["msrvtt", str(data), "--split", "test", "--features", f"s3d={feats}", "--out", str(out), *RUN], capsys)
    assert "different" in err


def test_resume_compares_features_and_inputs_by_content(msrvtt, capsys):
    """Other --features are refused (they were not compared at all); the same files copied
    elsewhere resume without redoing a unit."""
    import shutil

    root, data, jsf, feats = msrvtt
    out = root / "out"
    argv = ["msrvtt", str(data), "--split", "train", "--out", str(out), *RUN]
    assert main(argv[:2] + ["--features", f"s3d={feats}"] + argv[2:]) == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.stats.json")}
    other = write_features(root / "other_s3d", ["video0", "video1", "video2"], 1024)
    err = run_error(argv[:2] + ["--features", f"s3d={other}"] + argv[2:], capsys)
    assert "different features (by content)" in err
    moved = root / "moved"
    moved.mkdir()
    for p in (data, feats, out):
        (shutil.copytree if p.is_dir() else shutil.copy)(p, moved / p.name)
    capsys.readouterr()
    assert main(["msrvtt", str(moved / data.name), "--split", "train", "--features", f"s3d={moved / feats.name}",
                 "--out", str(moved / out.name), *RUN]) == 0
    assert "already complete" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (moved / out.name).glob("*.stats.json")} == before

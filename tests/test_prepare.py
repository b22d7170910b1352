"""mmp-prepare on tiny files in the public formats of MSR-VTT, VATEX and Multi30K."""
import csv
import gzip
import json

import numpy as np
import pytest

from model.prepare import main
from shards.reader import load_json, load_npy
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


def test_msrvtt_all_videos(msrvtt):
    root, data, _, feats = msrvtt
    out = root / "out"
    assert main(["msrvtt", str(data), "--features", f"s3d={feats}", "--out", str(out), *RUN]) == 0
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
    assert meta["features"]["s3d"] == {"file": "video0.npy", "sha256": sha256_file(feats / "video0.npy"),
                                       "rows": 5, "dim": 1024}
    assert rows["video0"]["languages"] == ["en"] and rows["video0"]["captions"] == 3


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
    assert verify([str(out)]) == 0
    rows = by_id(read_all_rows(out))
    assert set(rows) == {"video4", "video5", "video7010"}
    assert rows["video7010"]["status"] == "not_in_annotations"
    assert "MSRVTT_JSFUSION_test.csv" in rows["video7010"]["error"]
    caps = load_json(read_all_samples(out)["video4"]["captions.json"])
    assert caps["split"] == "test"
    assert caps["captions"]["en"] == ["video4 caption 1"]  # the csv's one sentence
    assert caps["captions"]["de"] == ["de eins"] and caps["captions"]["ru"] == ["ru odin"]
    assert caps["captions"]["fr"] == ["fr un"]
    assert caps["captions"]["zh"] == ["zh a", "zh b"]  # kept, but not paired
    assert caps["parallel"] == [{"en": "video4 caption 1", "de": "de eins", "fr": "fr un", "ru": "ru odin"}]
    assert rows["video4"]["languages"] == ["de", "en", "fr", "ru", "zh"]
    # an empty translation keeps its place: video5's csv sentence is caption 0, whose German is empty
    assert load_json(read_all_samples(out)["video5"]["captions.json"])["captions"] == {"en": ["video5 caption 0"]}
    # resume: the same command skips the finished unit
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 already complete" in capsys.readouterr().out


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


def vatex_entry(vid, n=10):
    return {"videoID": vid, "enCap": [f"{vid} en {i}" for i in range(n)], "chCap": [f"{vid} 中文 {i}" for i in range(n)]}


def test_vatex(tmp_path):
    train = tmp_path / "vatex_training_v1.0.json"
    train.write_text(json.dumps([vatex_entry("Ptf_2VRj-V0_000122_000132"), vatex_entry("abcdefghijk_000001_000011"),
                                 {"videoID": "emptycapsXX_000000_000010", "enCap": [], "chCap": []},
                                 ["not", "an", "entry"], vatex_entry("bad.id_000000_000010")]))
    test = tmp_path / "vatex_public_test_english_v1.1.json"
    test.write_text(json.dumps([{"videoID": "testvideo01_000005_000015", "enCap": ["a person cooks", " ", 3]}]))
    feats = write_features(tmp_path / "r21d", ["Ptf_2VRj-V0_000122_000132", "testvideo01_000005_000015",
                                               "emptycapsXX_000000_000010"], 512, rows=10)
    out = tmp_path / "out"
    assert main(["vatex", str(train), f"test={test}", "--features", f"r21d={feats}", "--out", str(out),
                 "--unit-size", "2", *RUN]) == 0
    assert verify([str(out)]) == 0
    assert len(list(out.glob("mmp-*.stats.json"))) == 3
    rows = by_id(read_all_rows(out))
    assert {v: r["status"] for v, r in rows.items()} == {
        "Ptf_2VRj-V0_000122_000132": "ok", "abcdefghijk_000001_000011": "no_features",
        "emptycapsXX_000000_000010": "no_captions", "vatex_training_v1.0.json#3": "bad_annotation",
        "bad.id_000000_000010": "bad_id", "testvideo01_000005_000015": "ok"}
    samples = read_all_samples(out)
    caps = load_json(samples["Ptf_2VRj-V0_000122_000132"]["captions.json"])
    vid = "Ptf_2VRj-V0_000122_000132"
    assert caps["split"] == "train" and len(caps["captions"]["en"]) == 10 and len(caps["captions"]["zh"]) == 10
    assert caps["parallel"] == [{"en": f"{vid} en {i}", "zh": f"{vid} 中文 {i}"} for i in range(5, 10)]
    meta = load_json(samples[vid]["meta.json"])
    assert meta["duration"] == 10.0 and meta["features"]["r21d"]["dim"] == 512
    assert load_npy(samples[vid]["r21d.npy"]).shape == (10, 512)
    test_caps = load_json(samples["testvideo01_000005_000015"]["captions.json"])
    assert test_caps["split"] == "test" and test_caps["captions"] == {"en": ["a person cooks"]}
    assert test_caps["parallel"] == []


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


def test_multi30k_region_files_and_split_arrays(tmp_path):
    root = tmp_path / "m30k"
    write_multi30k(root)
    regions = write_features(tmp_path / "regions", ["1000", "1001", "2000", "2001"], 8, rows=4)
    np.save(regions / "1002.npy", np.zeros((4, 8, 2), dtype=np.float32))  # wrong ndim
    out = tmp_path / "out"
    assert main(["multi30k", str(root), "--splits", "train", "test_2016_flickr", "--features",
                 f"regions={regions}", "--out", str(out), *RUN]) == 0
    assert verify([str(out)]) == 0
    rows = by_id(read_all_rows(out))
    assert {v: r["status"] for v, r in rows.items()} == {
        "1000": "ok", "1001": "ok", "1002": "bad_features", "2000": "ok", "2001": "ok"}
    samples = read_all_samples(out)
    caps = load_json(samples["1001"]["captions.json"])
    assert caps["captions"] == {"en": ["en train 1"], "fr": ["fr train 1"], "cs": ["cs train 1"]}
    assert caps["parallel"] == [{"en": "en train 1", "fr": "fr train 1", "cs": "cs train 1"}]
    assert load_json(samples["2000"]["captions.json"]) == {
        "video_id": "2000", "split": "test", "captions": {"en": ["en test 0"], "de": ["de test 0"]},
        "parallel": [{"en": "en test 0", "de": "de test 0"}]}
    assert load_npy(samples["2000"]["regions.npy"]).shape == (4, 8)

    # the same split as one [N, R, D] array, in image-list order
    array = np.arange(3 * 5 * 6, dtype=np.float32).reshape(3, 5, 6)
    np.save(tmp_path / "train_regions.npy", array)
    out2 = tmp_path / "out2"
    assert main(["multi30k", str(root), "--splits", "train", "--features", f"regions={tmp_path / 'train_regions.npy'}",
                 "--out", str(out2), *RUN]) == 0
    assert verify([str(out2)]) == 0
    samples = read_all_samples(out2)
    np.testing.assert_array_equal(load_npy(samples["1002"]["regions.npy"]), array[2].astype(np.float16))
    meta = load_json(samples["1002"]["meta.json"])["features"]["regions"]
    assert meta["index"] == 2 and meta["rows"] == 5 and meta["dim"] == 6


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

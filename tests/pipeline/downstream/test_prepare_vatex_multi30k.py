"""mmp-prepare on VATEX (HGR's split from a test-id list) and Multi30K (region files, split arrays)."""
import json

import numpy as np
import pytest

from pipeline.downstream.prepare import main
from shards.codec import load_json, load_npy
from shards.verify import main as verify
from shards.writer import sha256_file
from tests.conftest import read_all_rows, read_all_samples
from tests.pipeline.downstream.test_prepare import RUN, by_id, run_error, write_features, write_multi30k


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


def test_vatex_hgr_split_from_a_test_id_list(tmp_path, capsys):
    """HGR's split: the listed validation videos become 'test', the others stay 'val'."""
    train = tmp_path / "vatex_training_v1.0.json"
    train.write_text(json.dumps([vatex_entry("trainvideo1_000000_000010")]))
    val_ids = [f"valvideo{i:03d}_000000_000010" for i in range(4)]
    val = tmp_path / "vatex_validation_v1.0.json"
    val.write_text(json.dumps([vatex_entry(v) for v in val_ids]))
    feats = write_features(tmp_path / "s3d", ["trainvideo1_000000_000010", *val_ids], 1024)
    ids = tmp_path / "tst_names.txt"
    ids.write_text(f"{val_ids[1]}\n{val_ids[3]}.mp4\n\nnotavideo00_000000_000010\n")
    out = tmp_path / "out"
    argv = ["vatex", str(train), str(val), "--test-ids", str(ids), "--features", f"s3d={feats}", "--out", str(out), *RUN]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == [
        "mmp-prepare: vatex: --test-ids tst_names.txt: 2 of the validation file's 4 videos are 'test', the other 2 "
        "'val' (HGR's split)",
        "mmp-prepare: WARNING: 1 of the 3 ids in tst_names.txt are not videoIDs of the validation file and are left out",
        "mmp-prepare: WARNING: HGR's split is 1,500 val / 1,500 test videos; this is 2 / 2: results are not comparable "
        "to the paper's VATEX numbers"]
    assert verify([str(out)]) == 0
    rows = by_id(read_all_rows(out))
    assert {v: r["split"] for v, r in rows.items()} == {
        "trainvideo1_000000_000010": "train", val_ids[0]: "val", val_ids[1]: "test", val_ids[2]: "val", val_ids[3]: "test"}
    samples = read_all_samples(out)
    assert load_json(samples[val_ids[3]]["captions.json"])["split"] == "test"
    meta = load_json(samples[val_ids[3]]["meta.json"])
    assert meta["benchmark"] == "VATEX (HGR split)" and meta["split_videos"] == 2
    assert "benchmark" not in load_json(samples["trainvideo1_000000_000010"]["meta.json"])
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["test_ids"] == str(ids) and config["test_ids_sha256"] == sha256_file(ids)

    # HGR ships its list as a .npy array of strings: read without unpickling
    np.save(tmp_path / "tst_names.npy", np.array([val_ids[0]]))
    out2 = tmp_path / "out2"
    assert main(["vatex", str(train), str(val), "--test-ids", str(tmp_path / "tst_names.npy"), "--features",
                 f"s3d={feats}", "--out", str(out2), *RUN]) == 0
    assert [v for v, r in by_id(read_all_rows(out2)).items() if r["split"] == "test"] == [val_ids[0]]

    # the list changed under an existing output: refused, as for any other input
    ids.write_text(f"{val_ids[0]}\n")
    assert "different" in run_error(argv, capsys)


def test_vatex_test_ids_errors_and_help(tmp_path, capsys):
    val = tmp_path / "vatex_validation_v1.0.json"
    val.write_text(json.dumps([vatex_entry("valvideo000_000000_000010")]))
    test = tmp_path / "vatex_public_test_english_v1.1.json"
    test.write_text(json.dumps([vatex_entry("testvideo00_000000_000010")]))
    feats = write_features(tmp_path / "s3d", ["valvideo000_000000_000010"], 1024)
    ids = tmp_path / "ids.txt"
    ids.write_text("valvideo000_000000_000010\n")
    rest = ["--features", f"s3d={feats}", "--out", str(tmp_path / "out"), *RUN]
    assert "give no test annotation file" in run_error(["vatex", str(val), str(test), "--test-ids", str(ids), *rest], capsys)
    assert "needs the validation file" in run_error(["vatex", f"train={val}", "--test-ids", str(ids), *rest], capsys)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(["someothervid_000000_000010"]))
    assert "none of the 1 --test-ids" in run_error(["vatex", str(val), "--test-ids", str(other), *rest], capsys)
    assert "does not exist" in run_error(["vatex", str(val), "--test-ids", str(tmp_path / "nope.txt"), *rest], capsys)
    pickled = tmp_path / "tst_names.npy"
    np.save(pickled, np.array(["valvideo000_000000_000010", None], dtype=object), allow_pickle=True)
    assert "never loaded" in run_error(["vatex", str(val), "--test-ids", str(pickled), *rest], capsys)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("mmp-*"))

    with pytest.raises(SystemExit):
        main(["vatex", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "HGR's split" in text and "1,500 for validation and 1,500 for test" in text
    assert "--test-ids" in text and "tst_names.npy" in text and "hgr_v2t" in text


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

"""mmp-eval: retrieval metrics by hand, the per-language table, clear errors."""
import json

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny tensors on a shared machine: extra threads only wait on each other
pytest.importorskip("transformers")

from model.trainer.evaluate import main as eval_main  # noqa: E402
from model.trainer.evaluate import median_rank, retrieval_metrics  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.trainer.train import main as train_main  # noqa: E402
from tests.textmodel import build_text_model, caption_sample, write_tar  # noqa: E402


def test_retrieval_metrics_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    v = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    # similarities: q0 [1, .8, 0], q1 [0, .6, 1], q2 [.6, .96, .8]; targets 1, 0, 2 -> ranks 2, 3, 2
    m = retrieval_metrics(q, v, [1, 0, 2])
    assert m["R@1"] == 0.0 and m["R@5"] == 100.0 and m["R@10"] == 100.0 and m["MdR"] == 2.0
    m = retrieval_metrics(q, v, [0, 2, 1])  # every query's video ranks first
    assert m["R@1"] == 100.0 and m["MdR"] == 1.0 and m["queries"] == 3 and m["videos"] == 3


def test_ties_rank_pessimistically():
    same = torch.ones(4, 2) / 2 ** 0.5
    assert retrieval_metrics(same[:2], same, [0, 1])["MdR"] == 4.0


def test_median_rank_of_an_even_count_is_the_mean_of_the_two_middle_ranks():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    # q0 [1, .8, 0] -> its video 0 ranks 1; q1 [0, .6, 1] -> its video 1 ranks 2
    assert retrieval_metrics(q, v, [0, 1])["MdR"] == 1.5  # torch.median would say 1
    assert median_rank([4, 1, 3, 2]) == 2.5 and median_rank([3, 1, 2]) == 2.0 and median_rank([7]) == 7.0
    assert median_rank(torch.tensor([1, 2, 9, 10])) == 5.5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    text = build_text_model(root / "textmodel")
    ds = root / "ds"
    write_tar(ds / "mmp-000000.tar", [caption_sample(i) for i in range(4)]
              + [caption_sample(40 + i, split="test", langs=("en", "de", "zh")) for i in range(6)])
    run = root / "run"
    assert train_main(["--shards", str(ds), "--out", str(run), "--text-model", str(text), "--task", "finetune",
                       "--steps", "1", "--batch-size", "2", "--d-model", "32", "--text-output-layer", "2",
                       "--text-trainable-layers", "2", "--loader-workers", "0", "--no-progress"]) == 0
    return root, ds, run


def test_eval_writes_the_per_language_table(trained, capsys):
    root, ds, run = trained
    out = root / "results.json"
    assert eval_main(["--shards", str(ds / "mmp-*.tar"), "--ckpt", str(run / "ckpt-000001.pt"),
                      "--langs", "en,de,zh,fr", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["query_langs"] == ["en", "de", "zh"]  # in --langs order; fr has no caption: no row
    assert set(res["languages"]) == {"en", "de", "zh"}
    assert res["videos"] == 6 and res["split"] == "test" and res["step"] == 1
    for lang in ("en", "de", "zh"):
        r = res["languages"][lang]
        assert r["queries"] == 6 and r["videos"] == 6
        assert 0 <= r["R@1"] <= r["R@5"] <= r["R@10"] <= 100 and 1 <= r["MdR"] <= 6
        assert lang in printed
    assert res["average"]["R@10"] == pytest.approx(sum(r["R@10"] for r in res["languages"].values()) / 3)
    assert "avg" in printed and "R@1" in printed
    # shards without mmp-prepare's split size: the split's samples in the shards are the split
    assert res["pool"] == {"videos": 6, "expected": 6, "expected_from": "shards", "in_shards": 6, "benchmark": None,
                           "complete": True, "warning": None}
    assert "pool of 6 videos" in printed and "WARNING" not in printed


def test_an_incomplete_pool_is_said_and_can_be_refused(trained, tmp_path, capsys):
    """Six 1k-A-style samples of a split mmp-prepare recorded as eight, one of them without r21d."""
    root, _, run = trained
    samples = []
    for i in range(6):
        key, members = caption_sample(60 + i, split="test", langs=("en", "de"))
        members["meta.json"] = {"split_videos": 8, "benchmark": "MSR-VTT 1k-A"}
        if i == 0:
            del members["r21d.npy"]
        samples.append((key, members))
    write_tar(tmp_path / "short" / "mmp-000000.tar", samples)
    out = tmp_path / "res.json"
    argv = ["--shards", str(tmp_path / "short"), "--ckpt", str(run), "--langs", "en,de", "--device", "cpu"]
    capsys.readouterr()
    assert eval_main(argv + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    warning = ("WARNING: 5 of 8 test videos have features: R@K is over a pool of 5, "
               "not comparable to the paper's MSR-VTT 1k-A")
    assert warning in printed.splitlines()
    assert "pool of 5 videos (the split holds 8: INCOMPLETE)" in printed
    res = json.loads(out.read_text())
    assert res["videos"] == 5 and res["languages"]["en"]["videos"] == 5
    assert res["pool"] == {"videos": 5, "expected": 8, "expected_from": "meta.json", "in_shards": 6,
                           "benchmark": "MSR-VTT 1k-A", "complete": False, "warning": warning}
    assert res["counts"]["skipped/missing_r21d"] == 1

    assert eval_main(argv + ["--require-complete"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mmp-eval: error: --require-complete: 5 of 8 test videos have features")
    assert "2 are not in --shards" in err[0] and "1 were skipped here (missing_r21d=1)" in err[0]
    assert "R@1" not in captured.out

    # shards written before mmp-prepare recorded split sizes: the unusable sample still shows
    for _, members in samples:
        members["meta.json"] = {}
    write_tar(tmp_path / "old" / "mmp-000000.tar", samples)
    assert eval_main(["--shards", str(tmp_path / "old"), "--ckpt", str(run), "--langs", "en", "--device", "cpu",
                      "--out", str(out)]) == 0
    assert ("WARNING: 5 of 6 test videos have features: R@K is over a pool of 5, not comparable to results over "
            "the whole test split") in capsys.readouterr().out
    assert json.loads(out.read_text())["pool"]["expected_from"] == "shards"


def test_eval_errors_are_one_line(trained, tmp_path, capsys):
    root, ds, run = trained

    def error(argv):
        assert eval_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mmp-eval: error: ")
        return err[0]

    assert "holds no checkpoint" in error(["--shards", str(ds), "--ckpt", str(tmp_path)])
    assert "no video of split 'dev'" in error(["--shards", str(ds), "--ckpt", str(run), "--split", "dev"])
    assert "no 'test' caption" in error(["--shards", str(ds), "--ckpt", str(run), "--langs", "sw"])
    other = tmp_path / "other"
    write_tar(other / "mmp-000000.tar", [caption_sample(i, split="test", dims=(8, 8)) for i in range(3)])
    assert "16-dimensional but" in error(["--shards", str(other), "--ckpt", str(run)])


def test_image_regions_train_and_evaluate(trained, tmp_path):
    """Multi30K-style samples: region features [R, D] stand in for the video rows."""
    import numpy as np

    from tests.textmodel import _npy

    root, _, _ = trained
    samples = []
    for i in range(8):
        key, members = caption_sample(i, split="train" if i < 4 else "test")
        del members["r21d.npy"], members["s3d.npy"]
        members["regions.npy"] = _npy(np.random.default_rng(i).normal(size=(5, 12)).astype(np.float16))
        samples.append((key, members))
    write_tar(tmp_path / "m30k" / "mmp-000000.tar", samples)
    run = tmp_path / "run"
    assert train_main(["--shards", str(tmp_path / "m30k"), "--out", str(run), "--text-model", str(root / "textmodel"),
                       "--task", "finetune", "--video-features", "regions", "--steps", "1", "--batch-size", "2",
                       "--d-model", "16", "--text-output-layer", "1", "--text-trainable-layers", "1", "--loader-workers", "0",
                       "--no-progress"]) == 0
    out = tmp_path / "res.json"
    assert eval_main(["--shards", str(tmp_path / "m30k"), "--ckpt", str(run), "--langs", "en,de",
                      "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["video_features"] == ["regions"] and res["videos"] == 4 and res["languages"]["de"]["queries"] == 4


def test_prepare_then_eval_reports_the_1k_a_pool(trained, tmp_path, capsys):
    """mmp-prepare's 1k-A with one video lacking its features, evaluated: the pool of 3 is set
    against the split's 4 and the benchmark named, in the table and the JSON."""
    import csv

    import numpy as np

    from pipeline.downstream.prepare import main as prepare_main
    from tests.textmodel import WORDS

    _, _, run = trained
    vids = [f"video{i}" for i in range(4)]
    data = tmp_path / "MSRVTT_data.json"
    data.write_text(json.dumps({
        "videos": [{"video_id": v, "split": "test", "start time": 0, "end time": 6} for v in vids],
        "sentences": [{"video_id": v, "sen_id": i, "caption": " ".join(WORDS["en"][i:i + 4])} for i, v in enumerate(vids)]}))
    jsf = tmp_path / "MSRVTT_JSFUSION_test.csv"
    with open(jsf, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, v in enumerate(vids):
            w.writerow([f"ret{i}", f"msr{i}", v, " ".join(WORDS["en"][i:i + 4])])
    rng = np.random.default_rng(0)
    for name, dim in (("r21d", 8), ("s3d", 16)):
        (tmp_path / name).mkdir()
        for v in vids[:3]:  # video3 has no feature file
            np.save(tmp_path / name / f"{v}.npy", rng.normal(size=(6, dim)).astype(np.float32))
    shards = tmp_path / "msrvtt1k"
    assert prepare_main(["msrvtt", str(data), "--split", "1k-A", "--jsfusion-csv", str(jsf), "--features",
                         f"r21d={tmp_path / 'r21d'}", f"s3d={tmp_path / 's3d'}", "--feature-dim", "r21d=8", "s3d=16",
                         "--out", str(shards), "--workers", "1", "--no-progress"]) == 0
    assert ("mmp-prepare: WARNING: test: 1 of 4 videos are not in the shards: 1 have no usable features "
            "(no_features=1); retrieval on test will be over 3 videos, not 4; not the paper's MSR-VTT 1k-A"
            ) in capsys.readouterr().out
    out = tmp_path / "res.json"
    assert eval_main(["--shards", str(shards / "mmp-*.tar"), "--ckpt", str(run), "--langs", "en", "--device", "cpu",
                      "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert ("WARNING: 3 of 4 test videos have features: R@K is over a pool of 3, not comparable to the paper's "
            "MSR-VTT 1k-A") in printed
    pool = json.loads(out.read_text())["pool"]
    assert (pool["videos"], pool["expected"], pool["expected_from"], pool["complete"]) == (3, 4, "meta.json", False)
    assert eval_main(["--shards", str(shards), "--ckpt", str(run), "--langs", "en", "--require-complete"]) == 2
    assert "--require-complete: 3 of 4 test videos" in capsys.readouterr().err


def test_a_moved_text_model_is_named_as_the_checkpoints(trained, tmp_path, capsys, monkeypatch):
    """The run config holds the text model's absolute place: mmp-eval run from elsewhere finds it,
    and when it has moved the error names the checkpoint's model and the flag to give."""
    import shutil

    root, ds, run = trained
    monkeypatch.chdir(tmp_path)
    assert eval_main(["--shards", str(ds), "--ckpt", str(run), "--out", str(tmp_path / "e.json")]) == 0
    moved = tmp_path / "moved"
    shutil.copytree(root / "textmodel", moved / "textmodel")
    shutil.copytree(run, moved / "run")
    text = json.loads(load_checkpoint(moved / "run")["model_config"])["text_model"]
    assert text == str(root / "textmodel")
    shutil.move(str(root / "textmodel"), str(tmp_path / "gone"))
    try:
        capsys.readouterr()
        assert eval_main(["--shards", str(ds), "--ckpt", str(moved / "run")]) == 2
        err = capsys.readouterr().err
        assert f"the checkpoint's text model {text} cannot be loaded" in err and "--text-model DIR" in err
        assert eval_main(["--shards", str(ds), "--ckpt", str(moved / "run"), "--text-model",
                          str(moved / "textmodel"), "--out", str(tmp_path / "f.json")]) == 0
    finally:
        shutil.move(str(tmp_path / "gone"), str(root / "textmodel"))

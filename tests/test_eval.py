"""mmp-eval: retrieval metrics by hand, the per-language table, clear errors."""
import json

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny tensors on a shared machine: extra threads only wait on each other
pytest.importorskip("transformers")

from model.evaluate import main as eval_main  # noqa: E402
from model.evaluate import retrieval_metrics  # noqa: E402
from model.train import main as train_main  # noqa: E402
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
                       "--text-freeze-below", "1", "--workers", "0", "--no-progress"]) == 0
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
                       "--d-model", "16", "--text-output-layer", "1", "--text-freeze-below", "0", "--workers", "0",
                       "--no-progress"]) == 0
    out = tmp_path / "res.json"
    assert eval_main(["--shards", str(tmp_path / "m30k"), "--ckpt", str(run), "--langs", "en,de",
                      "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["video_features"] == ["regions"] and res["videos"] == 4 and res["languages"]["de"]["queries"] == 4

"""mmp-train as the paper trains: --epochs, the learning-rate schedule across a resume, validation
during training and the best checkpoint it keeps."""
import json
import math
import shutil

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny tensors on a shared machine: extra threads only wait on each other
pytest.importorskip("transformers")

from model.trainer.train import lr_at, main  # noqa: E402
from tests.model.test_train import TINY, _free_port, _log, _summary, train_error  # noqa: E402
from tests.textmodel import caption_sample, write_tar  # noqa: E402


@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    """Train and val captions in one shard (the layout mmp-prepare writes)."""
    d = tmp_path_factory.mktemp("ds")
    write_tar(d / "mmp-000000.tar", [caption_sample(i) for i in range(6)]
              + [caption_sample(50 + i, split="val") for i in range(5)])
    return d


def _train_rows(run):
    return [r for r in _log(run) if "loss" in r]


def _val_rows(run):
    return [r for r in _log(run) if "val/R@1" in r]


# ---------------------------------------------------------------------------- epochs


def test_epochs_stop_after_n_passes_and_a_resume_counts_on(tmp_path, text_dir, pretrain_shards):
    base = ["--shards", str(pretrain_shards / "mmp-*.tar"), "--text-model", str(text_dir), "--batch-size", "2",
            "--ckpt-every", "100"] + TINY
    whole = tmp_path / "whole"
    assert main(base + ["--out", str(whole), "--epochs", "2"]) == 0
    s = _summary(whole)
    assert s["epochs"] == 2 and s["steps"] == 8 and s["steps_per_epoch"] == 4  # 8 samples / batch 2 per epoch
    assert s["counts"]["samples/used"] == 16
    assert [r["epochs"] for r in _train_rows(whole)] == [0, 0, 0, 1, 1, 1, 1, 2]

    part = tmp_path / "part"
    assert main(base + ["--out", str(part), "--epochs", "1"]) == 0
    assert _summary(part)["epochs"] == 1 and _summary(part)["steps"] == 4
    assert main(base + ["--out", str(part), "--epochs", "2", "--resume"]) == 0
    s = _summary(part)
    assert s["started_at_step"] == 4 and s["steps"] == 8 and s["epochs"] == 2 and s["resumed"]
    # nothing left to do: a resume of a finished run trains no step and leaves its summary as it was
    before = (part / "summary.json").read_text()
    assert main(base + ["--out", str(part), "--epochs", "2", "--resume"]) == 0
    assert (part / "summary.json").read_text() == before and _summary(part)["final"]["loss"] > 0

    # a resume with other loader workers cannot place the stream: it restarts at the epoch reached
    moved = tmp_path / "moved"
    assert main(base + ["--out", str(moved), "--epochs", "1"]) == 0
    argv = base + ["--out", str(moved), "--epochs", "2", "--resume"]
    argv[argv.index("--loader-workers") + 1] = "2"
    assert main(argv) == 0
    s = _summary(moved)
    assert s["started_at_step"] == 4 and s["steps"] == 8 and s["epochs"] == 2


def test_an_epoch_waits_for_the_slowest_worker(tmp_path, text_dir, pretrain_shards):
    """Two loader workers, one shard each: the run ends when both have read theirs twice."""
    run = tmp_path / "w2"
    argv = ["--shards", str(pretrain_shards / "mmp-*.tar"), "--out", str(run), "--text-model", str(text_dir),
            "--epochs", "2", "--batch-size", "2"] + TINY
    argv[argv.index("--loader-workers") + 1] = "2"
    assert main(argv) == 0
    s = _summary(run)
    assert s["epochs"] == 2 and s["steps"] == 8 and s["counts"]["samples/used"] >= 16


def test_steps_and_epochs_are_exclusive_and_steps_stay_the_default(tmp_path, text_dir, pretrain_shards, capsys):
    base = ["--shards", str(pretrain_shards), "--out", str(tmp_path / "r"), "--text-model", str(text_dir),
            "--batch-size", "2"] + TINY
    assert "give only one" in train_error(base + ["--steps", "2", "--epochs", "1"], capsys)
    assert "--epochs must be at least 1" in train_error(base + ["--epochs", "0"], capsys)
    assert "--val-every needs --val-shards" in train_error(base + ["--steps", "1", "--val-every", "1"], capsys)
    from model.trainer.train import build_parser

    assert build_parser().parse_args(["--shards", "x", "--out", "y"]).steps is None  # train() makes it 1000
    assert main(base + ["--steps", "2"]) == 0
    s = _summary(tmp_path / "r")
    assert s["steps"] == 2 and s["epochs"] == 0 and s["lr_schedule"] == "constant" and s["best"] is None


# ---------------------------------------------------------------------------- learning rate


def test_lr_schedules_by_hand():
    assert [lr_at(s, 1.0, "constant", 0, 10) for s in (1, 5, 10)] == [1.0, 1.0, 1.0]
    assert [lr_at(s, 1.0, "constant", 4, 10) for s in (1, 2, 4, 5)] == [0.25, 0.5, 1.0, 1.0]
    cos = [lr_at(s, 2.0, "warmup-cosine", 2, 10) for s in range(1, 11)]
    assert cos[:3] == [1.0, 2.0, 2.0]  # warm-up, then the peak on the first cosine step
    assert all(a > b for a, b in zip(cos[2:], cos[3:])) and cos[-1] > 0
    assert cos[-1] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert lr_at(7, 2.0, "warmup-cosine", 2, None) == 2.0  # horizon unknown yet: the peak


def test_the_lr_sequence_after_a_resume_is_the_uninterrupted_one(tmp_path, text_dir, pretrain_shards):
    argv = ["--shards", str(pretrain_shards / "mmp-*.tar"), "--text-model", str(text_dir), "--batch-size", "2",
            "--steps", "7", "--lr-schedule", "warmup-cosine", "--warmup-steps", "2", "--lr", "1e-3",
            "--ckpt-every", "1", "--keep", "100"] + TINY
    whole = tmp_path / "whole"
    assert main(argv + ["--out", str(whole)]) == 0
    lrs = [r["lr"] for r in _train_rows(whole)]
    assert lrs == pytest.approx([lr_at(s, 1e-3, "warmup-cosine", 2, 7) for s in range(1, 8)])
    assert lrs[0] < lrs[1] and lrs[2] > lrs[-1] > 0

    cut = tmp_path / "cut"  # the same run killed after step 3's checkpoint
    shutil.copytree(whole, cut)
    for s in range(4, 8):
        (cut / f"ckpt-{s:06d}.pt").unlink()
    (cut / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _log(whole)[:3]))
    assert main(argv + ["--out", str(cut), "--resume"]) == 0
    assert _summary(cut)["started_at_step"] == 3
    assert [(r["step"], r["lr"]) for r in _train_rows(cut)] == [(r["step"], r["lr"]) for r in _train_rows(whole)]
    from model.checkpoint import load_checkpoint

    assert load_checkpoint(cut)["train_state"]["lr"] == lrs[-1]


def test_warmup_cosine_with_epochs_decays_over_the_run(tmp_path, text_dir, pretrain_shards):
    run = tmp_path / "run"
    assert main(["--shards", str(pretrain_shards / "mmp-*.tar"), "--out", str(run), "--text-model", str(text_dir),
                 "--batch-size", "2", "--epochs", "3", "--lr-schedule", "warmup-cosine", "--lr", "1e-3"] + TINY) == 0
    lrs = [r["lr"] for r in _train_rows(run)]
    assert len(lrs) == 12 and lrs[:4] == [1e-3] * 4  # the first epoch's length is the horizon's unit
    assert lrs[4:] == pytest.approx([lr_at(s, 1e-3, "warmup-cosine", 0, 12) for s in range(5, 13)])


# ---------------------------------------------------------------------------- validation


def test_validation_keeps_the_best_checkpoint_and_mmp_eval_reads_it(tmp_path, text_dir, downstream):
    from model.checkpoint import load_checkpoint
    from model.trainer.evaluate import main as eval_main

    run = tmp_path / "ft"
    assert main(["--shards", str(downstream), "--out", str(run), "--text-model", str(text_dir), "--task", "finetune",
                 "--langs", "en,de", "--batch-size", "3", "--steps", "4", "--lr", "1e-2", "--val-shards",
                 str(downstream), "--val-every", "1", "--ckpt-every", "100"] + TINY) == 0
    val = _val_rows(run)
    assert [r["step"] for r in val] == [1, 2, 3, 4]
    for r in val:
        assert r["val/videos"] == 5 and r["val/queries"] == 10
        assert r["val/rsum"] == pytest.approx(r["val/R@1"] + r["val/R@5"] + r["val/R@10"])
    top = max(val, key=lambda r: r["val/rsum"])  # the first of equals: a later one must beat it
    assert top["step"] == min(r["step"] for r in val if r["val/rsum"] == top["val/rsum"])
    best = _summary(run)["best"]
    assert best["step"] == top["step"] and best["rsum"] == top["val/rsum"] and best["R@1"] == top["val/R@1"]
    assert [r["val/best"] for r in val].count(True) >= 1

    ck = load_checkpoint(run / "best.pt")
    assert ck["step"] == top["step"] and ck["train_state"]["val"]["rsum"] == top["val/rsum"]
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "ckpt-000004.pt"]  # not pruned, not latest
    assert load_checkpoint(run)["step"] == 4

    out = tmp_path / "res.json"
    assert eval_main(["--shards", str(downstream), "--ckpt", str(run / "best.pt"), "--split", "val",
                      "--langs", "en,de", "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads(out.read_text())
    assert res["step"] == top["step"]
    for k in ("R@1", "R@5", "R@10"):  # the trainer's validation is mmp-eval's number
        assert res["average"][k] == pytest.approx(top[f"val/{k}"], abs=1e-3)


def test_a_resume_keeps_a_best_checkpoint_newer_than_the_one_it_resumes(tmp_path, text_dir, downstream):
    from model.checkpoint import load_checkpoint

    run = tmp_path / "ft"
    argv = ["--shards", str(downstream), "--out", str(run), "--text-model", str(text_dir), "--task", "finetune",
            "--langs", "en,de", "--batch-size", "3", "--steps", "4", "--lr", "1e-2", "--val-shards", str(downstream),
            "--val-every", "1", "--ckpt-every", "2", "--keep", "100"] + TINY
    assert main(argv) == 0
    before = _summary(run)["best"]
    (run / "ckpt-000004.pt").unlink()  # killed after best.pt was written, before the last checkpoint
    ck = load_checkpoint(run / "best.pt")
    ck["train_state"]["best"]["rsum"] = 1000.0  # a best no rerun can beat
    from model.checkpoint import save_checkpoint

    save_checkpoint(run, ck["step"], ck["model"], ck["optimizer"], model_config=ck["model_config"],
                    run_config=ck["run_config"], data_position=ck["data_position"], keep=0,
                    train_state=ck["train_state"], name="best.pt")
    assert main(argv + ["--resume"]) == 0
    after = _summary(run)["best"]
    assert after["step"] == before["step"] and after["rsum"] == 1000.0
    assert load_checkpoint(run / "best.pt")["step"] == before["step"]  # not overwritten by a worse one


def test_validation_at_each_epoch_end_and_bad_val_shards(tmp_path, text_dir, downstream, capsys):
    run = tmp_path / "ep"
    base = ["--shards", str(downstream), "--out", str(run), "--text-model", str(text_dir), "--task", "finetune",
            "--langs", "en", "--batch-size", "3"] + TINY
    assert main(base + ["--epochs", "2", "--val-shards", str(downstream)]) == 0
    assert [(r["step"], r["epochs"]) for r in _val_rows(run)] == [(2, 1), (4, 2)]  # 6 train videos / 3
    assert _summary(run)["best"]["epochs"] in (1, 2)
    capsys.readouterr()
    base[base.index(str(run))] = str(tmp_path / "new")  # --out holding a run is refused before anything else
    assert "matches no file" in train_error(base + ["--steps", "1", "--val-shards", str(tmp_path / "no-*.tar")],
                                            capsys)
    msg = train_error(base + ["--steps", "1", "--val-shards", str(downstream), "--val-split", "test"], capsys)
    assert "--val-shards hold no 'test' video" in msg


def _ddp_worker(rank, world, port, argv):
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert main(argv) == 0


def test_two_process_ddp_epochs_and_validation_do_not_deadlock(tmp_path, text_dir, pretrain_shards, downstream):
    """Rank 0 validates while rank 1 waits; an epoch is both ranks' shards read once."""
    import torch.multiprocessing as mp

    run = tmp_path / "ddp"
    argv = ["--shards", str(pretrain_shards / "mmp-*.tar"), "--out", str(run), "--text-model", str(text_dir),
            "--batch-size", "2", "--epochs", "1", "--val-shards", str(downstream), "--val-every", "3"] + TINY
    mp.spawn(_ddp_worker, args=(2, _free_port(), argv), nprocs=2, join=True)
    s = _summary(run)
    assert s["world_size"] == 2 and s["epochs"] == 1 and s["steps"] == 4  # 4 samples per rank, 1 per step
    assert [r["step"] for r in _val_rows(run)] == [3, 4]
    assert (run / "best.pt").is_file() and s["best"]["step"] in (3, 4)

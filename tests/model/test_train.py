"""mmp-train end to end on CPU: pre-train, fine-tune, DDP equivalence, kill and resume, bad input."""
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny tensors on a shared machine: extra threads only wait on each other
pytest.importorskip("transformers")

from model.trainer.train import main  # noqa: E402
from tests.textmodel import caption_sample, pretrain_sample, write_tar  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--d-model", "32", "--text-output-layer", "2", "--text-trainable-layers", "2", "--loader-workers", "0",
        "--no-progress", "--log-every", "1"]


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_pretrain_then_finetune_then_eval(tmp_path, text_dir, pretrain_shards):
    from model.checkpoint import load_checkpoint
    from model.trainer.evaluate import main as eval_main

    run = tmp_path / "pre"
    assert main(["--shards", str(pretrain_shards / "mmp-{000000..000001}.tar"), "--out", str(run),
                 "--text-model", str(text_dir), "--steps", "3", "--batch-size", "4", "--ckpt-every", "2"] + TINY) == 0
    assert sorted(p.name for p in run.glob("ckpt-*.pt")) == ["ckpt-000002.pt", "ckpt-000003.pt"]
    log = _log(run)
    assert [r["step"] for r in log] == [1, 2, 3]
    # the paper's pre-training objective: inter- and intra-modal NCE, nothing cross-lingual
    assert all(r["loss"] > 0 and {"inter", "intra"} <= set(r) and "xling" not in r for r in log)
    assert _summary(run)["counts"]["samples/used"] >= 12
    assert json.loads((run / "run_config.json").read_text())["losses"] == ["inter", "intra"]
    assert load_checkpoint(run)["run_config"]["losses"] == ["inter", "intra"]

    ds = tmp_path / "ds"
    write_tar(ds / "mmp-000000.tar", [caption_sample(i) for i in range(6)]
              + [caption_sample(50 + i, split="test") for i in range(5)])
    ft = tmp_path / "ft"
    assert main(["--shards", str(ds), "--out", str(ft), "--init", str(run), "--task", "finetune", "--langs", "en",
                 "--steps", "2", "--batch-size", "3", "--loader-workers", "0", "--no-progress"]) == 0
    summary = _summary(ft)
    assert summary["steps"] == 2 and summary["counts"]["skipped/other_split"] >= 5
    # fine-tuning trains xling by default; English only: no parallel pair, so it is 0
    assert summary["final"]["xling"] == 0.0
    assert json.loads((ft / "run_config.json").read_text())["losses"] == ["inter", "intra", "xling"]

    out = tmp_path / "results.json"
    assert eval_main(["--shards", str(ds / "mmp-000000.tar"), "--ckpt", str(ft), "--langs", "en,de,fr",
                      "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads(out.read_text())
    assert res["videos"] == 5 and set(res["languages"]) == {"en", "de"}
    for r in res["languages"].values():
        assert r["queries"] == 5 and 0 <= r["R@1"] <= r["R@5"] <= r["R@10"] == 100.0 and 1 <= r["MdR"] <= 5


def test_loader_workers_feed_training(tmp_path, text_dir, pretrain_shards):
    run = tmp_path / "w2"
    args = ["--shards", str(pretrain_shards / "mmp-*.tar"), "--out", str(run), "--text-model", str(text_dir),
            "--steps", "3", "--batch-size", "2"] + TINY
    args[args.index("--loader-workers") + 1] = "2"
    assert main(args) == 0
    ck = torch.load(run / "ckpt-000003.pt", weights_only=True)
    position = json.loads(ck["data_position"])
    assert position["workers"] == 2 and set(position["ranks"][0]) <= {"0", "1"}


def test_learns_a_planted_structure(tmp_path, text_dir):
    """Twelve concepts, each shown by noisy features and named by its own words: after a short
    fine-tuning, retrieval is far above chance (1 in 24) in both languages."""
    import numpy as np

    from model.trainer.evaluate import main as eval_main
    from tests.textmodel import WORDS, _npy

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 24)).astype(np.float32)

    def sample(i, split):
        k = i % 12
        feats = (centres[k] + 0.3 * rng.normal(size=(6, 24))).astype(np.float16)
        caps = {lang: [f"{WORDS[lang][k]} {WORDS[lang][(k + 3) % len(WORDS[lang])]}"] for lang in ("en", "de")}
        return f"p{i:010d}", {"meta.json": {}, "r21d.npy": _npy(feats[:, :8]), "s3d.npy": _npy(feats[:, 8:]),
                              "captions.json": {"video_id": str(i), "split": split, "captions": caps,
                                                "parallel": [{lang: c[0] for lang, c in caps.items()}]}}

    write_tar(tmp_path / "d" / "mmp-000000.tar", [sample(i, "train") for i in range(120)]
              + [sample(1000 + i, "test") for i in range(24)])
    run = tmp_path / "run"
    assert main(["--shards", str(tmp_path / "d"), "--out", str(run), "--text-model", str(text_dir),
                 "--task", "finetune", "--steps", "150", "--batch-size", "16", "--lr", "1e-3", "--dropout", "0.1",
                 "--ckpt-every", "1000"] + TINY) == 0
    out = tmp_path / "res.json"
    assert eval_main(["--shards", str(tmp_path / "d"), "--ckpt", str(run), "--langs", "en,de", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for lang in ("en", "de"):
        assert res["languages"][lang]["R@1"] >= 25 and res["languages"][lang]["MdR"] <= 2, res["languages"][lang]
    inter = [r["inter"] for r in _log(run)]
    assert sum(inter[-10:]) / 10 < 0.5 * inter[0]


# ---------------------------------------------------------------------------- DDP


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_error(argv, capsys) -> str:
    """mmp-train's one-line error for `argv` (exit 2, no traceback)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mmp-train: error: "), err
    return err[0]


def _ddp_worker(rank, world, port, argv):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert main(argv) == 0


@pytest.mark.parametrize("losses", [None, "inter,intra,xling"])
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path, text_dir, pretrain_shards, losses):
    import torch.multiprocessing as mp

    # Two shards of 4 samples and a global batch of 8: each step sees every sample, in both runs.
    # The default (inter,intra) never embeds the parallel text; with xling every branch runs.
    common = ["--shards", str(pretrain_shards / "mmp-{000000..000001}.tar"), "--text-model", str(text_dir),
              "--steps", "2", "--batch-size", "8", "--dropout", "0", "--ckpt-every", "100"] + TINY
    if losses:
        common += ["--losses", losses]
    assert main(common + ["--out", str(tmp_path / "one")]) == 0
    mp.spawn(_ddp_worker, args=(2, _free_port(), common + ["--out", str(tmp_path / "two")]), nprocs=2, join=True)
    one, two = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert _summary(tmp_path / "two")["world_size"] == 2
    want = ["inter", "intra"] + (["xling"] if losses else []) + ["loss"]
    for a, b in zip(one, two):
        logged = [k for k in a if k in ("inter", "intra", "xling", "loss")]
        assert logged == want and [k for k in b if k in want] == want
        for term in logged:
            assert a[term] == pytest.approx(b[term], rel=1e-4), (a["step"], term)
        if losses:
            assert a["xling"] > 0  # the pretrain shards have parallel subtitles: the pivot branch ran
    # step 2 follows one optimiser step: equal only if DDP's gradient equals the one-process gradient
    assert len(one) == len(two) == 2


# ---------------------------------------------------------------------------- kill and resume


def test_sigkill_then_resume_continues_the_step_count(tmp_path, text_dir, pretrain_shards):
    from model.checkpoint import list_checkpoints, load_checkpoint

    run = tmp_path / "run"
    argv = ["--shards", str(pretrain_shards / "mmp-*.tar"), "--out", str(run), "--text-model", str(text_dir),
            "--steps", "100000", "--batch-size", "2", "--ckpt-every", "1", "--keep", "1000"] + TINY
    proc = subprocess.Popen([sys.executable, "-m", "model.trainer.train"] + argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while len(list_checkpoints(run)) < 4 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(list_checkpoints(run)) >= 4, "the trainer wrote no checkpoints"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    found = list_checkpoints(run)
    for _, path in found:  # every checkpoint under a final name is whole
        load_checkpoint(path)
    last = found[-1][0]
    (run / f".ckpt-{last + 1:06d}.pt.tmp-killed00").write_bytes(b"\x80\x02 half written")
    argv[argv.index("--steps") + 1] = str(last + 2)
    assert main(argv + ["--resume"]) == 0
    summary = _summary(run)
    assert summary["started_at_step"] == last and summary["steps"] == last + 2 and summary["resumed"]
    assert [r["step"] for r in _log(run)][-2:] == [last + 1, last + 2]
    assert load_checkpoint(run)["step"] == last + 2


def test_data_position_resumes_where_the_stream_was(text_dir, pretrain_shards):
    from model.clips import ClipConfig
    from model.trainer.data import ClipStream, expand_shards
    from pipeline.runtime.hub import load_tokenizer

    tok = load_tokenizer(str(text_dir))
    urls = expand_shards(str(pretrain_shards / "mmp-*.tar"))
    cfg = ClipConfig(members=("r21d", "s3d"))

    def stream(positions=None):
        return iter(ClipStream(urls, tok, cfg, 3, seed=5, shuffle_buffer=1, positions=positions))

    first = stream()
    batches = [next(first) for _ in range(6)]
    pos = batches[2]["position"]
    resumed = stream({0: (pos["epoch"], pos["raw"])})
    again = [next(resumed) for _ in range(3)]
    assert [b["keys"] for b in again] == [b["keys"] for b in batches[3:6]]


# ---------------------------------------------------------------------------- bad input


def test_corrupt_samples_and_a_truncated_shard_are_counted_not_fatal(tmp_path, text_dir):
    d = tmp_path / "mixed"
    write_tar(d / "mmp-000000.tar", [pretrain_sample(i) for i in range(4)])
    bad_npy = pretrain_sample(10)
    bad_npy[1]["r21d.npy"] = b"not an npy file"
    no_s3d = pretrain_sample(11, s3d=False)
    pickled = pretrain_sample(12)
    pickled[1]["extra.pyd"] = b"\x80\x04K\x01."
    bad_times = pretrain_sample(14)
    bad_times[1]["meta.json"] = {"features": {"s3d": {"row_start_s": 0.0, "row_seconds": 0}}}
    write_tar(d / "mmp-000001.tar", [bad_npy, no_s3d, pickled, bad_times, pretrain_sample(13)])
    whole = write_tar(tmp_path / "whole.tar", [pretrain_sample(20 + i) for i in range(4)]).read_bytes()
    (d / "mmp-000002.tar").write_bytes(whole[: int(len(whole) * 0.6)])
    run = tmp_path / "run"
    assert main(["--shards", str(d / "mmp-{000000..000002}.tar"), "--out", str(run), "--text-model", str(text_dir),
                 "--steps", "8", "--batch-size", "2", "--shuffle-buffer", "1"] + TINY) == 0
    counts = _summary(run)["counts"]
    assert counts["skipped/corrupt"] >= 1
    assert counts["skipped/missing_s3d"] >= 1
    assert counts["skipped/pickle_member"] >= 1
    assert counts["skipped/bad_row_times"] >= 1
    assert counts["error/shard"] >= 1


def test_clear_errors_for_bad_shards_text_model_and_feature_dims(tmp_path, text_dir, pretrain_shards, capsys):
    base = ["--out", str(tmp_path / "r"), "--text-model", str(text_dir), "--steps", "1", "--batch-size", "2"] + TINY

    def error(argv):
        return train_error(argv, capsys)

    assert "names no shards" in error(["--shards", ""] + base)
    assert "matches no file" in error(["--shards", str(tmp_path / "nothing-*.tar")] + base)
    assert "does not exist" in error(["--shards", str(tmp_path / "mmp-{000000..000003}.tar")] + base)
    bad_model = list(base)
    bad_model[bad_model.index("--text-model") + 1] = str(tmp_path / "no-such-model")
    assert "not a model directory" in error(["--shards", str(pretrain_shards)] + bad_model)

    run = tmp_path / "pre"
    assert main(["--shards", str(pretrain_shards), "--out", str(run), "--text-model", str(text_dir),
                 "--steps", "1", "--batch-size", "2"] + TINY) == 0
    capsys.readouterr()
    msg = error(["--shards", str(pretrain_shards), "--out", str(tmp_path / "ft"), "--init", str(run),
                 "--video-features", "r21d", "--steps", "1", "--batch-size", "2", "--loader-workers", "0"])
    assert "8-dimensional" in msg and "expects 24" in msg
    msg = error(["--shards", str(pretrain_shards), "--out", str(run), "--resume", "--video-features", "s3d",
                 "--steps", "2", "--batch-size", "2", "--loader-workers", "0"])
    assert "--video-features s3d (the run's: r21d,s3d)" in msg  # a resume keeps the run's members
    assert "refusing" in error(["--shards", str(pretrain_shards), "--out", str(tmp_path / "x"),
                                "--init", str(_pickled_checkpoint(tmp_path)), "--steps", "1", "--loader-workers", "0"])
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    assert "no sample" in error(["--shards", str(tmp_path / "empty.tar")] + base)
    write_tar(tmp_path / "test-only" / "mmp-000000.tar", [caption_sample(i, split="test") for i in range(3)])
    assert main(["--shards", str(tmp_path / "test-only"), "--task", "finetune"] + base) == 2
    assert "stopped giving batches" in capsys.readouterr().err  # every sample is of another split


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def _pickled_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "evil" / "ckpt-000001.pt"
    path.parent.mkdir()
    torch.save({"model": {}, "model_config": "{}", "x": _Payload()}, path)
    return path


# ---------------------------------------------------------------------------- loader decoding


def test_the_old_freeze_flag_is_refused_with_its_new_name(tmp_path, text_dir, pretrain_shards, capsys):
    argv = ["--shards", str(pretrain_shards / "mmp-*.tar"), "--out", str(tmp_path / "r"), "--text-model",
            str(text_dir), "--steps", "1", "--text-freeze-below", "9"]
    assert "--text-trainable-layers 4" in train_error(argv, capsys)


# ---------------------------------------------------------------------------- loss terms


def test_losses_flag_is_checked_with_one_clear_error(tmp_path, text_dir, pretrain_shards, capsys):
    base = ["--shards", str(pretrain_shards), "--out", str(tmp_path / "r"), "--text-model", str(text_dir),
            "--steps", "1", "--batch-size", "2"] + TINY
    assert "--losses '' has an empty term" in train_error(base + ["--losses", ""], capsys)
    assert "empty term" in train_error(base + ["--losses", "inter,,intra"], capsys)
    msg = train_error(base + ["--losses", "inter,cross"], capsys)
    assert "unknown term 'cross'" in msg and "inter, intra, xling" in msg
    assert not (tmp_path / "r" / "run_config.json").exists()


def test_pivot_branch_runs_only_when_xling_is_trained(tmp_path, text_dir, pretrain_shards, monkeypatch):
    from model.mmp import MMP

    calls = []
    pivoted = MMP.embed_pivoted
    monkeypatch.setattr(MMP, "embed_pivoted", lambda self, *a: calls.append(1) or pivoted(self, *a))
    argv = ["--shards", str(pretrain_shards), "--text-model", str(text_dir), "--steps", "2", "--batch-size", "4"] + TINY
    assert main(argv + ["--out", str(tmp_path / "default")]) == 0  # pretrain: inter,intra
    assert calls == [] and all("xling" not in r for r in _log(tmp_path / "default"))
    assert main(argv + ["--out", str(tmp_path / "x"), "--losses", "intra,xling"]) == 0
    assert len(calls) == 2 * 2  # pivot_a and pivot_b, every step
    log = _log(tmp_path / "x")
    assert all("inter" not in r and r["loss"] == pytest.approx(r["intra"] + r["xling"]) for r in log)
    assert json.loads((tmp_path / "x" / "run_config.json").read_text())["losses"] == ["intra", "xling"]


def test_parallel_text_gets_its_own_masked_copy_in_the_batch(text_dir, pretrain_shards):
    from model.clips import ClipConfig
    from model.trainer.shard_stream import StreamState, tar_samples
    from model.trainer.tokens import tokenize
    from model.trainer.data import collate, expand_shards, sample_clips
    from pipeline.runtime.hub import load_tokenizer

    tok = load_tokenizer(str(text_dir))
    cfg = ClipConfig(members=("r21d", "s3d"), max_text_len=10, mask_prob=1.0)
    state = StreamState()
    src = tar_samples(iter([(0, expand_shards(str(pretrain_shards)))]), state)
    samples = list(tokenize(sample_clips(src, cfg, state, seed=3), tok, cfg, chunk=4))[:4]
    special = set(tok.all_special_ids)
    for s in samples:
        assert s["pair_ids"] is not None
        assert s["pair_noisy_ids"] == [t if t in special else tok.mask_token_id for t in s["pair_ids"]]
    samples[1]["pair_ids"] = samples[1]["pair_noisy_ids"] = None  # a sample without a parallel text
    batch = collate(samples, tok.pad_token_id)
    assert batch["pair_valid"].tolist() == [True, False, True, True]
    for i, s in enumerate(samples):
        want = s["pair_noisy_ids"] or s["noisy_ids"]
        assert batch["pair_noisy_ids"][i, :len(want)].tolist() == want
        assert batch["pair_noisy_ids"].shape == batch["pair_ids"].shape


def test_new_video_input_from_a_pretrained_checkpoint_at_twice_the_rate(tmp_path, text_dir, pretrain_shards, capsys):
    """The paper's Multi30K: an MMP checkpoint, a new linear input for region features, trained at 2x lr."""
    import numpy as np

    from model.checkpoint import load_checkpoint
    from tests.textmodel import _npy, caption_sample, write_tar

    pre = tmp_path / "pre"
    assert main(["--shards", str(pretrain_shards / "mmp-*.tar"), "--out", str(pre), "--text-model", str(text_dir),
                 "--steps", "1", "--batch-size", "2"] + TINY) == 0
    samples = []
    for i in range(4):
        key, members = caption_sample(i)
        members["regions.npy"] = _npy(np.random.default_rng(i).normal(size=(5, 12)).astype(np.float16))
        samples.append((key, members))
    regions = write_tar(tmp_path / "m30k" / "mmp-000000.tar", samples)
    ft = ["--shards", str(regions), "--task", "finetune", "--video-features", "regions", "--steps", "2",
          "--batch-size", "2", "--init", str(pre), "--lr", "1e-3"] + TINY
    capsys.readouterr()
    assert "--new-video-input" in train_error(ft + ["--out", str(tmp_path / "refused")], capsys)
    assert main(ft + ["--out", str(tmp_path / "ft"), "--new-video-input"]) == 0
    before, after = load_checkpoint(pre), load_checkpoint(tmp_path / "ft")
    cfg = json.loads(after["model_config"])
    assert (cfg["video_dim"], cfg["video_features"], cfg["video_input_lr_scale"]) == (12, ["regions"], 2.0)
    assert after["model"]["video_proj.weight"].shape[1] == 12 and before["model"]["video_proj.weight"].shape[1] != 12
    groups = after["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 2.0] and [g["lr"] for g in groups] == [1e-3, 2e-3]
    # the rest of the model came from the checkpoint: two Adam steps at 1e-3 move each weight by at most ~2e-3
    for key, value in before["model"].items():
        if not key.startswith("video_proj."):
            assert (after["model"][key].float() - value.float()).abs().max() < 5e-3, key
    assert main(ft + ["--out", str(tmp_path / "ft"), "--resume", "--steps", "3"]) == 0  # the groups resume as saved
    assert [g["lr_scale"] for g in load_checkpoint(tmp_path / "ft")["optimizer"]["param_groups"]] == [1.0, 2.0]

"""Shards, meta.json and checkpoints nobody on the team wrote, and outputs that cannot be written:
each costs a counted sample or one sentence (exit 2), never the run's memory or a traceback. The
risky calls run under the watchdog (tests/watchdog.py), so a regression fails here instead of
taking the machine down."""
import errno
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny tensors on a shared machine: extra threads only wait on each other
pytest.importorskip("transformers")

from model.trainer.evaluate import main as eval_main  # noqa: E402
from model.trainer.train import main as train_main  # noqa: E402
from tests.textmodel import caption_sample, pretrain_sample, write_tar  # noqa: E402
from tests.watchdog import call_main, run_bounded  # noqa: E402

MB = 1 << 20
TINY = ["--d-model", "32", "--text-output-layer", "2", "--text-trainable-layers", "2", "--loader-workers", "0",
        "--no-progress", "--log-every", "1"]


def _rss_mb() -> float:
    """This process's resident memory: a forked child starts with it."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


class _Zeros:
    """A file of ``n`` zero bytes that is never held in memory."""

    def __init__(self, n: int):
        self.left = n

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def _gzip_bomb(path: Path, key: str, sizes: dict, after=()) -> Path:
    """A .tar.gz whose sample ``key`` holds members of zeros of ``sizes`` bytes, then the ``after`` samples."""
    with gzip.open(path, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, size in sizes.items():
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size = size
            tar.addfile(info, _Zeros(size))
        for other, members in after:
            for name, value in members.items():
                data = value if isinstance(value, bytes) else json.dumps(value).encode()
                info = tarfile.TarInfo(f"{other}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _one_line(err: str, prog: str) -> str:
    # transformers draws a progress bar on stderr while it loads the text model's weights
    lines = [line for line in err.strip().splitlines() if not line.startswith("Loading weights")]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


# ---------------------------------------------------------------------------- the bytes of one sample


def test_a_sample_over_the_byte_cap_is_skipped_before_its_bytes_are_read(tmp_path):
    """Six members of zeros, each under the 24 MB npy cap (143 MB in all, 0.2 MB gzipped): the
    sample is refused at the member that takes it past the default sample cap (two arrays and
    two JSON members at their caps: 50 MB), unread, and the stream goes on to the next sample."""
    from model.trainer.shard_stream import StreamState, default_sample_bytes, shard_samples
    from shards.members import MemberLimits

    good = pretrain_sample(1)
    bomb = _gzip_bomb(tmp_path / "mmp-000000.tar.gz", "v0000000000",
                      {f"{name}.npy": 24 * MB - 4096 for name in "abcdef"}, after=[good])
    assert bomb.stat().st_size < MB
    limits = MemberLimits(npy=24 * MB, json=1 * MB)
    assert default_sample_bytes(limits) == 50 * MB

    def read():
        state = StreamState()
        keys = [s["__key__"] for s in shard_samples(str(bomb), 0, state, limits)]
        return keys, dict(state.counts)

    keys, counts = run_bounded(read, seconds=60, memory_mb=_rss_mb() + 100)
    assert keys == [good[0]]
    assert counts == {"skipped/sample_too_large": 1}


def test_mmp_train_skips_a_gzip_bomb_sample_and_records_the_cap(tmp_path, text_dir, pretrain_shards):
    bomb = _gzip_bomb(tmp_path / "bomb.tar.gz", "v0000000000", {f"{name}.npy": 8 * MB - 4096 for name in "abcdef"})
    shards = "::".join([str(bomb)] + [str(p) for p in sorted(pretrain_shards.glob("*.tar"))])
    argv = ["--shards", shards, "--text-model", str(text_dir), "--steps", "2", "--batch-size", "2",
            "--max-member-mb", "npy=8,json=1"] + TINY
    run = tmp_path / "run"
    code, out, err = call_main(train_main, argv + ["--out", str(run), "--max-sample-mb", "12"], seconds=120, start="spawn",
                               memory_mb=_rss_mb() + 400)
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["counts"]["skipped/sample_too_large"] >= 1
    assert json.loads((run / "run_config.json").read_text())["max_sample_mb"] == 12

    # without the flag the cap is derived from the member caps, and recorded resolved
    run = tmp_path / "run2"
    code, out, err = call_main(train_main, argv + ["--out", str(run)], seconds=120, start="spawn", memory_mb=_rss_mb() + 400)
    assert code == 0, err
    assert json.loads((run / "run_config.json").read_text())["max_sample_mb"] == 2 * 8 + 2 * 1
    assert json.loads((run / "summary.json").read_text())["counts"]["skipped/sample_too_large"] >= 1

    code, out, err = call_main(train_main, argv + ["--out", str(tmp_path / "run3"), "--max-sample-mb", "0"])
    assert code == 2 and "--max-sample-mb must be more than 0" in _one_line(err, "mmp-train")


# ---------------------------------------------------------------------------- meta.json's row mapping


def _bytes(members: dict) -> dict:
    return {k: v if isinstance(v, bytes) else json.dumps(v).encode() for k, v in members.items()}


@pytest.mark.parametrize("field,value,said", [
    ("row_seconds", 3e6, "row_seconds"),
    ("row_seconds", 1e12, "row_seconds"),
    ("row_start_s", 1e12, "row_start_s"),
    ("row_seconds", 2.0, "duration"),  # 12 rows of 2 s in a 12 s video
    ("rows", 99, "rows"),  # the array holds 12
])
def test_a_row_mapping_that_claims_more_than_the_arrays_is_refused(field, value, said):
    from model.clips import FeatureRows
    from model.row_times import RowTimesError

    _, members = pretrain_sample(1)  # 12 rows per backbone, a 12 s video
    entry = {"rows": 12, "row_start_s": 0.0, "row_seconds": 1.5}
    entry[field] = value
    members["meta.json"] = {"duration": 12, "features": {"r21d": entry, "s3d": entry}}
    sample = _bytes(members)

    def build():
        try:
            rows = FeatureRows(sample, ("r21d", "s3d"))
            return f"accepted: {rows.shape}", rows[:].shape
        except RowTimesError as exc:
            return str(exc), None

    said_back, _ = run_bounded(build, seconds=30, memory_mb=_rss_mb() + 200)
    assert said_back.startswith("meta.json features.r21d") and said in said_back, said_back


def test_a_sound_mapping_of_another_span_still_reads():
    from model.clips import FeatureRows

    _, members = pretrain_sample(1)
    members["meta.json"] = {"duration": 12, "features": {"s3d": {"rows": 12, "row_start_s": 0.0,
                                                                 "row_seconds": 13 / 12}}}
    rows = FeatureRows(_bytes(members), ("r21d", "s3d"))
    assert rows.gridded and rows.shape == (12, 24) and rows[3:7].shape == (4, 24)
    # mmp-eval's even rows copy those rows alone, and equal the same rows of the whole
    import numpy as np

    from model.trainer.evaluate import even_rows

    index = np.linspace(0, 11, 5).round().astype(int)
    for video in (rows, FeatureRows(_bytes(pretrain_sample(1)[1]), ("r21d", "s3d"))):
        assert np.array_equal(even_rows(video, 5), video[:][index])


def test_bad_row_mappings_are_skipped_and_counted_and_a_resume_reads_past_them(tmp_path, text_dir):
    bad = []
    for i, value in enumerate((3e6, 1e12)):
        key, members = pretrain_sample(100 + i)
        entry = {"row_start_s": 0.0, "row_seconds": value}
        members["meta.json"] = {"duration": 12, "features": {"r21d": entry, "s3d": entry}}
        bad.append((key, members))
    write_tar(tmp_path / "d" / "mmp-000000.tar", bad + [pretrain_sample(i) for i in range(4)])
    run = tmp_path / "run"
    argv = ["--shards", str(tmp_path / "d"), "--out", str(run), "--text-model", str(text_dir), "--batch-size", "2",
            "--shuffle-buffer", "1", "--ckpt-every", "1"] + TINY
    code, out, err = call_main(train_main, argv + ["--steps", "2"], seconds=120, start="spawn", memory_mb=_rss_mb() + 600)
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["counts"]["skipped/bad_row_times"] == 2
    code, out, err = call_main(train_main, argv + ["--steps", "5", "--resume"], seconds=120, start="spawn",
                               memory_mb=_rss_mb() + 600)
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["resumed"] and summary["counts"]["skipped/bad_row_times"] >= 2


# ---------------------------------------------------------------------------- mmp-eval's flags and checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_dir):
    root = tmp_path_factory.mktemp("trained")
    ds = root / "ds"
    write_tar(ds / "mmp-000000.tar", [caption_sample(i) for i in range(4)]
              + [caption_sample(50 + i, split="test") for i in range(3)])
    run = root / "run"
    assert train_main(["--shards", str(ds), "--out", str(run), "--text-model", str(text_dir), "--task", "finetune",
                       "--steps", "1", "--batch-size", "2"] + TINY) == 0
    return ds, run


@pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--max-text-len", "2"), ("--max-video-len", "0"),
                                        ("--threads", "-1"), ("--batch-size", "-3")])
def test_eval_numbers_out_of_range_are_one_sentence_before_any_work(tmp_path, capsys, flag, value):
    # neither the shards nor the checkpoint exist: the flag is checked before either is looked at
    code = eval_main(["--shards", str(tmp_path / "none.tar"), "--ckpt", str(tmp_path / "none.pt"), flag, value])
    line = _one_line(capsys.readouterr().err, "mmp-eval")
    assert code == 2 and f"{flag} must be at least" in line and f"got {value}" in line


def _not_checkpoints(tmp_path: Path, real: Path) -> dict:
    text = tmp_path / "notes.pt"
    text.write_text("model: yes\n" * 20)
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "a zip, but not a torch checkpoint")
    truncated = tmp_path / "truncated.pt"
    data = real.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    no_config = tmp_path / "no-config.pt"
    torch.save({"model": {}, "step": 1}, no_config)
    bad_config = tmp_path / "bad-config.pt"
    torch.save({"model": {}, "model_config": "{not json", "step": 1}, bad_config)
    odd_config = tmp_path / "odd-config.pt"
    torch.save({"model": {}, "model_config": json.dumps({"text_model": "x", "wings": 2}), "step": 1}, odd_config)
    ck = torch.load(real, weights_only=True)
    no_step = tmp_path / "no-step.pt"
    torch.save({k: v for k, v in ck.items() if k != "step"}, no_step)
    other_weights = tmp_path / "other-weights.pt"
    torch.save({**ck, "model": {"w": torch.zeros(2)}}, other_weights)
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    return {"/etc/passwd": Path("/etc/passwd"), "text": text, "zip": other_zip, "truncated": truncated,
            "no model_config": no_config, "model_config not JSON": bad_config, "model_config of other fields": odd_config,
            "no step": no_step, "other weights": other_weights, "a FIFO": fifo, "a directory": tmp_path / "empty"}


def test_a_checkpoint_that_is_not_one_is_one_sentence_naming_it(trained, tmp_path):
    ds, run = trained
    (tmp_path / "empty").mkdir()
    real = sorted(run.glob("ckpt-*.pt"))[-1]
    for what, path in _not_checkpoints(tmp_path, real).items():
        code, out, err = call_main(eval_main, ["--shards", str(ds), "--ckpt", str(path), "--device", "cpu"],
                                   seconds=60, memory_mb=_rss_mb() + 500)
        line = _one_line(err, "mmp-eval")
        assert code == 2 and str(path) in line, (what, err)
        assert "R@1" not in out, what


# ---------------------------------------------------------------------------- an --out that cannot be written


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may write into, root included (the immutable attribute)."""
    d = tmp_path / "ro"
    d.mkdir()
    if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=True)


def test_train_on_a_read_only_out_is_one_sentence_before_any_work(read_only_dir, text_dir, pretrain_shards,
                                                                  monkeypatch):
    import model.trainer.data as data

    monkeypatch.setattr(data, "feature_layout", lambda *a, **k: pytest.fail("read the shards"))
    for out in (read_only_dir / "run", read_only_dir):
        code, _, err = call_main(train_main, ["--shards", str(pretrain_shards), "--out", str(out), "--text-model",
                                              str(text_dir), "--steps", "1", "--batch-size", "2"] + TINY)
        line = _one_line(err, "mmp-train")
        assert code == 2 and f"cannot write the output {out}" in line and "permission denied" in line, err


def _train_with_a_full_disk(argv):
    """mmp-train whose checkpoint writes find the disk full (run in a spawned child)."""
    import model.checkpoint as checkpoint

    def no_space(path, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    checkpoint.save_checkpoint = no_space
    return train_main(argv)


def test_train_on_a_full_out_is_one_sentence(tmp_path, text_dir, pretrain_shards, monkeypatch):

    argv = ["--shards", str(pretrain_shards), "--text-model", str(text_dir), "--steps", "2", "--batch-size", "2"] + TINY
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=4096))
    code, _, err = call_main(train_main, argv + ["--out", str(tmp_path / "full")])
    line = _one_line(err, "mmp-train")
    assert code == 2 and "the disk is full" in line and str(tmp_path / "full") in line
    assert not list((tmp_path / "full").glob("ckpt-*")) and not (tmp_path / "full" / "train_log.jsonl").exists()
    monkeypatch.undo()

    # It trains a step first: a clean interpreter, since torch's threads do not survive a fork of this
    # process once it ran them; the disk fills there, at the first checkpoint.
    code, _, err = call_main(_train_with_a_full_disk, argv + ["--out", str(tmp_path / "filled"), "--ckpt-every", "1"],
                             start="spawn")
    assert code == 2 and "the disk is full" in _one_line(err, "mmp-train")


def test_eval_on_a_read_only_or_full_out_is_one_sentence_before_any_work(trained, read_only_dir, tmp_path,
                                                                         monkeypatch):
    import model.checkpoint as checkpoint

    ds, run = trained
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a: pytest.fail("loaded the checkpoint"))
    for out in (read_only_dir / "results.json", read_only_dir / "sub" / "results.json"):
        code, stdout, err = call_main(eval_main, ["--shards", str(ds), "--ckpt", str(run), "--out", str(out)])
        line = _one_line(err, "mmp-eval")
        assert code == 2 and f"cannot write the output {out}" in line, err
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=0))
    out = tmp_path / "res" / "results.json"
    code, stdout, err = call_main(eval_main, ["--shards", str(ds), "--ckpt", str(run), "--out", str(out)])
    assert code == 2 and "the disk is full" in _one_line(err, "mmp-eval")


def test_rows_from_the_files_start_before_a_late_first_frame_read():
    # A video 3 s after its audio: the S3D rows start 3 s before its first frame (row_start_s -3),
    # within the rows; a start before all of them is refused.
    from model.row_times import RowTimesError, row_times

    def meta(start):
        return {"duration": 9, "features": {"s3d": {"rows": 12, "row_start_s": start, "row_seconds": 1.0}}}

    assert row_times(meta(-3.0), ("s3d",), (12,))[0].start == -3.0
    with pytest.raises(RowTimesError, match="row_start_s"):
        row_times(meta(-13.0), ("s3d",), (12,))

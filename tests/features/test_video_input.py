"""The video input: rows mapped to seconds by meta.json's row times, and the fixed S3D fc (--s3d-fc)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny tensors on a shared machine: extra threads only wait on each other
pytest.importorskip("transformers")

from model.clips import ClipConfig, FeatureRows  # noqa: E402
from model.row_times import RowTimesError, row_times  # noqa: E402
from model.trainer.shard_stream import StreamState, tar_samples  # noqa: E402
from model.trainer.data import sample_clips  # noqa: E402
from model.trainer.train import main  # noqa: E402
from tests.model.test_train import train_error  # noqa: E402
from tests.textmodel import _npy, caption_sample, pretrain_sample, write_tar  # noqa: E402

TINY = ["--d-model", "32", "--text-output-layer", "2", "--text-trainable-layers", "2", "--loader-workers", "0",
        "--no-progress", "--log-every", "1"]
CLIP32 = 32 / 30  # an IG65M clip32 recipe at 30 fps: one row per 32 frames


# ---------------------------------------------------------------------------- row times


def _indexed(rows: int, width: int, base: float = 0.0) -> np.ndarray:
    """Rows whose first column is ``base + row index`` (exact in float16 below 2048)."""
    a = np.zeros((rows, width), np.float16)
    a[:, 0] = base + np.arange(rows)
    return a


def _clip32_sample(key: str, start_s: float = 0.02) -> tuple[str, dict]:
    """r21d at 32/30 s per row (30 rows: 32 s), s3d at one row per second (33 rows), cues every 3 s."""
    cues = [[t, t + 2.5, f"cue{t}"] for t in range(0, 32, 3)]
    return key, {"r21d.npy": _npy(_indexed(30, 3)), "s3d.npy": _npy(_indexed(33, 2, 1000)),
                 "meta.json": {"features": {"r21d": {"rows": 30, "row_start_s": start_s, "row_seconds": CLIP32},
                                            "s3d": {"rows": 33, "row_start_s": 0.0, "row_seconds": 1.0}}},
                 "subs.json": {"video_id": key, "tracks": {"en": {"cues": cues}}}}


def _expected_r21d_row(k: int, start_s: float) -> int:
    return min(29, max(0, math.floor((k + 0.5 - start_s) / CLIP32)))


def test_rows_of_another_span_are_mapped_onto_seconds(tmp_path):
    _, members = _clip32_sample("a")
    sample = {k: (v if isinstance(v, bytes) else json.dumps(v).encode()) for k, v in members.items()}
    rows = FeatureRows(sample, ("r21d", "s3d"))
    # r21d covers 0.02 + 30 * 32/30 = 32.02 s: seconds 0..31 (centre 31.5 inside); s3d covers 33
    assert rows.shape == (32, 5) and rows.gridded
    whole = rows[:]
    assert whole[:, 3].tolist() == list(range(1000, 1032))  # s3d: second k is row k
    want = [_expected_r21d_row(k, 0.02) for k in range(32)]
    assert whole[:, 0].astype(int).tolist() == want
    assert want[0] == 0 and want[15] == 14 and want[16] == 15 and want[31] == 29  # a row repeats every 16 s
    part = rows[5:13]
    assert np.array_equal(part, whole[5:13]) and part.flags.writeable
    assert rows[40:50].shape == (0, 5)
    # a late start: the first second takes row 0 (clipped), the rest shift
    late = FeatureRows({**sample, "meta.json": json.dumps({"features": {"r21d": {"row_start_s": 2.0,
                                                                                 "row_seconds": CLIP32}}}).encode()},
                       ("r21d", "s3d"))
    assert late.shape[0] == 33 and late[:][:, 0].astype(int).tolist() == [_expected_r21d_row(k, 2.0) for k in range(33)]

    # through the stream: clip rows and subtitles index the same seconds
    write_tar(tmp_path / "mmp-000000.tar", [_clip32_sample(f"v{i}") for i in range(6)])
    state = StreamState()
    cfg = ClipConfig(members=("r21d", "s3d"), langs=("en",), max_video_len=8)
    clips = list(sample_clips(tar_samples(iter([(0, [str(tmp_path / "mmp-000000.tar")])]), state), cfg, state, 1))
    assert len(clips) == 6 and state.counts["samples/used"] == 6
    for clip in clips:
        video = clip["video"]
        seconds = (video[:, 3] - 1000).astype(int).tolist()
        start, end = seconds[0], seconds[-1] + 1
        assert seconds == list(range(start, end))
        assert video[:, 0].astype(int).tolist() == [_expected_r21d_row(k, 0.02) for k in seconds]
        inside = [f"cue{t}" for t in range(0, 32, 3) if t + 2.5 > start and t < end]
        assert clip["text"] == " ".join(inside)


def test_samples_without_row_times_keep_the_contiguous_path():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 4)).astype(np.float16)
    b = rng.normal(size=(11, 3)).astype(np.float16)
    base = {"r21d.npy": _npy(a), "s3d.npy": _npy(b)}
    metas = [None, b"{}", b'{"duration": 12}', b"not json, and no row times",
             json.dumps({"features": ["r21d", "s3d"]}).encode(),  # an older layout: member names
             json.dumps({"features": {"s3d": {"file": "x.npy", "rows": 11}}}).encode(),
             json.dumps({"features": {"r21d": {"row_start_s": 1 / 32, "row_seconds": 1.0},
                                      "s3d": {"row_start_s": -1 / 32, "row_seconds": 1.0 + 1e-7}}}).encode()]
    for meta in metas:
        sample = dict(base, **({} if meta is None else {"meta.json": meta}))
        rows = FeatureRows(sample, ("r21d", "s3d"))
        assert not rows.gridded and rows.shape == (11, 7), meta
        assert np.array_equal(rows[2:9], np.concatenate([a[2:9], b[2:9]], axis=1))
    assert row_times(b'{"duration": 3}', ("s3d",))[0].per_second
    imported = row_times(json.dumps({"features": {"s3d": {"row_start_s": 0.0, "row_seconds": 1.0}}}).encode(),
                         ("s3d",))
    assert imported[0].start == 0.0 and imported[0].seconds == 1.0


BAD_ROW_TIMES = [
    ({"row_seconds": 0}, "positive"),
    ({"row_seconds": -1.0}, "positive"),
    ({"row_seconds": "1.0"}, "not a finite number"),
    ({"row_seconds": True}, "not a finite number"),
    ({"row_start_s": None}, "not a finite number"),
    ({"row_start_s": float("nan")}, "not a finite number"),
    ({"row_seconds": float("inf")}, "not a finite number"),
]


def test_malformed_row_times_are_skipped_and_counted(tmp_path, caplog):
    for entry, reason in BAD_ROW_TIMES:
        with pytest.raises(RowTimesError, match=reason):
            row_times(json.dumps({"features": {"s3d": entry}}).encode(), ("r21d", "s3d"))
    with pytest.raises(RowTimesError, match="not an object"):
        row_times(json.dumps({"features": {"s3d": "1 row per second", "row_seconds": 1}}).encode(), ("s3d",))
    with pytest.raises(RowTimesError, match="not JSON"):
        row_times(b'{"features": {"s3d": {"row_seconds": 1', ("s3d",))
    with pytest.raises(RowTimesError, match="not an object"):
        row_times(b'[{"row_seconds": 1}]', ("s3d",))

    good = [pretrain_sample(i) for i in range(3)]
    bad = []
    for i, (entry, _) in enumerate(BAD_ROW_TIMES):
        key, members = pretrain_sample(10 + i)
        members["meta.json"] = {"features": {"r21d": {"row_start_s": 0.0, "row_seconds": 1.0}, "s3d": entry}}
        bad.append((key, members))
    write_tar(tmp_path / "mmp-000000.tar", good[:1] + bad + good[1:])
    state = StreamState()
    cfg = ClipConfig(members=("r21d", "s3d"))
    clips = list(sample_clips(tar_samples(iter([(0, [str(tmp_path / "mmp-000000.tar")])]), state), cfg, state, 0))
    assert [c["key"] for c in clips] == [k for k, _ in good]
    assert state.counts["skipped/bad_row_times"] == len(BAD_ROW_TIMES) and state.counts["samples/used"] == 3
    assert "row_seconds" in caplog.text and "positive" in caplog.text  # the log says why


# ---------------------------------------------------------------------------- the S3D fc


def _fc_file(path: Path, seed: int = 0, **override) -> Path:
    """A tiny stand-in for s3d_howto100m.pth: a random fc and one unrelated backbone tensor."""
    g = torch.Generator().manual_seed(seed)
    state = {"conv1.conv1.weight": torch.randn(4, 3, 1, 1, 1, generator=g),
             "fc.weight": torch.randn(512, 1024, generator=g) * 0.03, "fc.bias": torch.randn(512, generator=g)}
    state.update(override)
    state = {k: v for k, v in state.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def s3d_1024(tmp_path_factory):
    """Pre-training shards with r21d 512 + s3d 1024 (mixed_5c, as released) and downstream shards alike."""
    d = tmp_path_factory.mktemp("mixed5c")
    for s in range(2):
        write_tar(d / "pre" / f"mmp-{s:06d}.tar", [pretrain_sample(s * 10 + i, dims=(512, 1024)) for i in range(3)])
    write_tar(d / "ds" / "mmp-000000.tar", [caption_sample(i, dims=(512, 1024)) for i in range(4)]
              + [caption_sample(50 + i, split="test", dims=(512, 1024)) for i in range(3)])
    return d


def _by_hand(video: torch.Tensor, fc: dict) -> torch.Tensor:
    video = video.float()
    return torch.cat([video[..., :512], video[..., 512:] @ fc["fc.weight"].t() + fc["fc.bias"]], -1)


def test_s3d_fc_builds_the_papers_512_plus_512_input_and_travels_with_the_checkpoint(tmp_path, text_dir, s3d_1024):
    from model.checkpoint import load_checkpoint
    from model.trainer.data import ClipStream, expand_shards
    from model.trainer.evaluate import main as eval_main
    from model.mmp import MMPConfig, build_model
    from pipeline.runtime.hub import load_tokenizer

    fc_path = _fc_file(tmp_path / "s3d_howto100m.pth")
    fc = torch.load(fc_path, weights_only=True)
    run = tmp_path / "pre"
    assert main(["--shards", str(s3d_1024 / "pre"), "--out", str(run), "--text-model", str(text_dir),
                 "--steps", "2", "--batch-size", "2", "--s3d-fc", str(fc_path)] + TINY) == 0
    ck = load_checkpoint(run)
    cfg = MMPConfig.from_json(ck["model_config"])
    assert cfg.video_dim == 512 + 512 and cfg.row_dim == 512 + 1024
    assert cfg.s3d_fc["offset"] == 512 and cfg.s3d_fc["file"] == str(fc_path) and len(cfg.s3d_fc["sha256"]) == 64
    assert tuple(ck["model"]["video_proj.weight"].shape) == (32, 1024)
    assert torch.equal(ck["model"]["s3d_fc_weight"], fc["fc.weight"])  # fixed: not trained
    assert torch.equal(ck["model"]["s3d_fc_bias"], fc["fc.bias"])
    assert ck["run_config"]["s3d_fc_map"] == cfg.s3d_fc

    model = build_model(cfg)  # as evaluation rebuilds it: the map comes with the weights, not the file
    model.load_state_dict(ck["model"])
    model.eval()
    assert not any(n.startswith("s3d_fc") for n, _ in model.named_parameters())
    urls = expand_shards(str(s3d_1024 / "pre"))
    batch = next(iter(ClipStream(urls, load_tokenizer(str(text_dir)), ClipConfig(members=("r21d", "s3d")), 2)))
    assert batch["video"].shape[-1] == 1536
    with torch.no_grad():
        assert torch.allclose(model.video_input(batch["video"]), _by_hand(batch["video"], fc), atol=1e-5)

    # fine-tuning and evaluation from that checkpoint map the same rows the same way
    ft = tmp_path / "ft"
    assert main(["--shards", str(s3d_1024 / "ds"), "--out", str(ft), "--init", str(run), "--task", "finetune",
                 "--langs", "en", "--steps", "1", "--batch-size", "2", "--loader-workers", "0", "--no-progress",
                 "--s3d-fc", str(fc_path)]) == 0
    assert torch.equal(load_checkpoint(ft)["model"]["s3d_fc_weight"], fc["fc.weight"])
    out = tmp_path / "res.json"
    assert eval_main(["--shards", str(s3d_1024 / "ds"), "--ckpt", str(ft), "--langs", "en", "--out", str(out),
                      "--device", "cpu"]) == 0
    assert json.loads(out.read_text())["videos"] == 3


def test_the_s3d_fc_is_applied_before_the_projection_and_the_frame_noise():
    from model.mmp import MMP, MMPConfig

    class NoText(torch.nn.Module):
        hidden_size = 8

    cfg = MMPConfig(text_model="-", video_dim=3 + 4, video_features=["r21d", "s3d", "regions"], d_model=8,
                    dropout=0.0, s3d_fc={"offset": 2, "in_dim": 6, "out_dim": 4, "file": None, "sha256": None})
    assert cfg.row_dim == 2 + 6 + 1
    torch.manual_seed(0)
    model = MMP(cfg, NoText()).eval()
    w, b = torch.randn(4, 6), torch.randn(4)
    model.set_s3d_fc(w, b)
    assert model.video_proj.in_features == 7 and {"s3d_fc_weight", "s3d_fc_bias"} <= set(model.state_dict())
    x = torch.randn(2, 5, 9).half()
    noise = torch.zeros(2, 5, dtype=torch.bool)
    noise[0, 1] = True
    mapped = torch.cat([x[..., :2].float(), x[..., 2:8].float() @ w.t() + b, x[..., 8:].float()], -1)
    with torch.no_grad():
        assert torch.allclose(model.video_input(x), mapped, atol=1e-5)
        want = model.video_proj(mapped.masked_fill(noise.unsqueeze(-1), 0.0))
        assert torch.allclose(model.video_tokens(x, noise), want, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the map itself stays in float32
            assert model.video_input(x).dtype == torch.float32
            assert torch.allclose(model.video_input(x), mapped, atol=1e-5)


def test_bad_s3d_fc_files_and_setups_are_refused(tmp_path, text_dir, s3d_1024, capsys):
    base = ["--out", str(tmp_path / "r"), "--text-model", str(text_dir), "--steps", "1", "--batch-size", "2"] + TINY

    def error(argv):
        return train_error(argv, capsys)

    pre = ["--shards", str(s3d_1024 / "pre")] + base
    assert "does not exist" in error(pre + ["--s3d-fc", str(tmp_path / "missing.pth")])
    no_fc = _fc_file(tmp_path / "backbone_only.pth", **{"fc.weight": None, "fc.bias": None})
    assert "has no fc.weight [512, 1024] and fc.bias [512]" in error(pre + ["--s3d-fc", str(no_fc)])
    no_bias = _fc_file(tmp_path / "no_bias.pth", **{"fc.bias": None})
    assert "has no fc.weight" in error(pre + ["--s3d-fc", str(no_bias)])
    wide = _fc_file(tmp_path / "wide.pth", **{"fc.weight": torch.zeros(512, 832)})
    assert "fc.weight is [512, 832]" in error(pre + ["--s3d-fc", str(wide)])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert "not a readable PyTorch checkpoint" in error(pre + ["--s3d-fc", str(tmp_path / "junk.pth")])

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"fc.weight": torch.zeros(512, 1024), "x": Payload()}, tmp_path / "evil.pth")
    assert "pickled Python objects" in error(pre + ["--s3d-fc", str(tmp_path / "evil.pth")])

    good = _fc_file(tmp_path / "s3d.pth")
    assert "does not include s3d" in error(pre + ["--s3d-fc", str(good), "--video-features", "r21d"])
    emb = tmp_path / "emb"
    samples = []
    for i in range(3):
        key, members = pretrain_sample(i, dims=(512, 512))
        members["meta.json"] = {"features": {"s3d": {"name": "s3d", "output": "embedding", "output_dim": 512,
                                                     "row_start_s": 0.0, "row_seconds": 1.0}}}
        samples.append((key, members))
    write_tar(emb / "mmp-000000.tar", samples)
    msg = error(["--shards", str(emb), "--s3d-fc", str(good)] + base)
    assert "already 512-d (meta.json output: embedding)" in msg and "drop --s3d-fc" in msg
    narrow = tmp_path / "narrow"
    write_tar(narrow / "mmp-000000.tar", [pretrain_sample(i, dims=(8, 16)) for i in range(3)])
    assert "s3d rows are 16-d" in error(["--shards", str(narrow), "--s3d-fc", str(good)] + base)

    # a checkpoint trained without the map, or with another one
    plain = tmp_path / "plain"
    assert main(["--shards", str(s3d_1024 / "pre"), "--out", str(plain), "--text-model", str(text_dir),
                 "--steps", "1", "--batch-size", "2"] + TINY) == 0
    capsys.readouterr()
    init = ["--shards", str(s3d_1024 / "pre"), "--out", str(tmp_path / "ft"), "--steps", "1", "--batch-size", "2",
            "--loader-workers", "0"]
    assert "trained without an s3d fc" in error(init + ["--init", str(plain), "--s3d-fc", str(good)])
    mapped = tmp_path / "mapped"
    assert main(["--shards", str(s3d_1024 / "pre"), "--out", str(mapped), "--text-model", str(text_dir),
                 "--steps", "1", "--batch-size", "2", "--s3d-fc", str(good)] + TINY) == 0
    capsys.readouterr()
    other = _fc_file(tmp_path / "other.pth", seed=1)
    assert "differs from the s3d fc" in error(init + ["--init", str(mapped), "--s3d-fc", str(other)])
    msg = error(init + ["--init", str(mapped), "--video-features", "s3d,r21d"])
    assert "puts the s3d rows at 0" in msg

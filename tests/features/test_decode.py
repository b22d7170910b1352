"""Decoding into per-second windows (features.decode): timestamps, fallback, rotation, bad input.

Videos are written here with PyAV (H.264, which decord reads), a few frames each. Frames
encode their index as grey level, so a test can tell exactly which source frame a window
shows. No model runs in this file.
"""
import fractions
import math

import numpy as np
import pytest

av = pytest.importorskip("av")
torch = pytest.importorskip("torch")
pytest.importorskip("decord")

from features.decode import DECODERS, DecodedVideo, decode_all  # noqa: E402
from tests.features import isolated  # noqa: E402
from features.video import DecodeError  # noqa: E402
from features.frames import (Normaliser, decode_size, frame_plan, normalise, prepare_frames,  # noqa: E402
                             stack_windows)
from shards.feature_spec import R21D, R21D_IG65M, S3D, num_windows, window_frame_times  # noqa: E402


from tests.conftest import real_fixtures  # noqa: E402


SPECS = [R21D, S3D]
STEP = 8  # grey levels between consecutive frames: H.264 noise stays far below it


def grey(i: int) -> int:
    return 15 + STEP * (i % 30)


def make_video(path, times, size=(64, 48), *, pix="yuv420p", rotation=None, image=None, audio=False):
    """Write frames at presentation times `times` (s); frame i is grey(i) unless `image(i)` draws it."""
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = w, h, pix
        stream.time_base = fractions.Fraction(1, 1000)
        # Matroska keeps millisecond pts as given, irregular ones too (tests write .mkv).
        stream.codec_context.time_base = stream.time_base
        stream.options = {"qp": "4", "preset": "ultrafast", "bf": "0"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, t in enumerate(times):
            array = image(i) if image is not None else np.full((h, w, 3), grey(i), np.uint8)
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), stream.time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_audio_only(path, seconds=1.0):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = int(16000 * seconds)
        for start in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def cfr(seconds, fps=10, start=0.0):
    return [start + i / fps for i in range(int(round(seconds * fps)))]


def vfr(seconds, seed=0):
    rng = np.random.default_rng(seed)
    times, t = [], 0.0
    while t < seconds - 1e-9:
        times.append(round(t, 3))
        t += float(rng.choice([0.04, 0.07, 0.13, 0.21]))
    return times


def shown(times, t):
    """Index of the frame on screen at t (relative to the first frame): the last with pts <= t."""
    rel = np.asarray(times) - times[0]
    return max(0, int(np.searchsorted(rel, t + 1e-4, side="right")) - 1)


def shown_16(times, n):
    """Index of the frame FFmpeg's fps=16 filter puts at output tick n (absolute pts): the last
    frame with pts < (n + 1/2) / 16."""
    return max(0, int(np.searchsorted(np.asarray(times), (n + 0.5) / 16, side="left")) - 1)


def expected_s3d(times, end):
    """[rows, 16] frame indices of the released recipe (-1: black padding), from first principles."""
    n0 = math.floor(times[0] * 16 + 0.5)
    count = math.floor(end * 16 + 0.5) - n0
    rows = -(-count // 16) if count >= 16 else 0
    return np.array([[shown_16(times, n0 + 16 * k + j) if 16 * k + j < count else -1 for j in range(16)]
                     for k in range(rows)]).reshape(rows, 16)


def window_grey(windows):
    """Mean grey of every frame of every window: [N, T]."""
    return windows.float().mean(dim=(1, 3, 4)).numpy()


# ---------------------------------------------------------------- pure planning

def test_frame_plan_uses_timestamps_not_counts():
    times = np.array([0.0, 0.1, 0.5, 0.55, 1.2, 1.9])
    plan = frame_plan(times, 2.0, SPECS)
    r21d, s3d = plan["r21d"], plan["s3d"]
    assert r21d.index.shape == (2, 8) and (r21d.start, r21d.seconds) == (0.0, 1.0)
    for k in range(2):
        for j, t in enumerate(window_frame_times(2.0, R21D)[k]):
            assert r21d.index[k, j] == shown(times, t)
    assert s3d.index.shape == (2, 16) and s3d.frames_out == 32 and (s3d.start, s3d.seconds) == (0.0, 1.0)
    assert np.array_equal(s3d.index, expected_s3d(times, 2.0))
    # 0.1 s rounds to tick 2 (1.6), 0.5 s to tick 8, 0.55 s to tick 9 (8.8): each shows from there
    assert list(s3d.index[0, :10]) == [0, 0, 1, 1, 1, 1, 1, 1, 2, 3]
    # late start and a partial last chunk: ticks from round(16 * 0.7) = 11, the tail padded black
    late = frame_plan(times + 0.7, 2.75, [S3D])["s3d"]
    assert late.frames_out == 44 - 11 and late.rows == 3 and (late.index[2, 1:] == -1).all()
    assert late.start == pytest.approx(11 / 16 - 0.7)
    # the ffmpeg command line counts from the file's start (0.2 s here) and, the file holding an
    # audio track too, repeats the fps filter's first frame (tick 8 = round(16 * 0.5)) from tick 0
    lead = frame_plan(times + 0.7, 2.75, [S3D], origin=0.2, several_streams=True)["s3d"]
    assert lead.frames_out == 41 and lead.start == pytest.approx(-0.5)
    assert list(lead.index[0, :12]) == [0] * 10 + [1, 1]  # 0.6 s: tick 10
    alone = frame_plan(times + 0.7, 2.75, [S3D], origin=0.2)["s3d"]  # one stream: from the first frame's tick
    assert alone.frames_out == 41 - 8 and alone.start == pytest.approx(0.0)


def test_decode_size_is_the_released_arithmetic_for_every_recipe():
    assert decode_size(3840, 2160, SPECS) == (398, 224) == decode_size(3840, 2160, [R21D])
    assert decode_size(2160, 3840, SPECS) == (224, 398)
    assert decode_size(176, 144, SPECS) == (273, 224)  # scaled up, as FFmpeg's scale does
    assert decode_size(480, 360, [S3D]) == (298, 224)


def test_prepare_and_normalise_follow_the_spec():
    frames = np.full((2, 61, 97, 3), 128, np.uint8)
    for spec in SPECS:
        x = prepare_frames(frames, spec)
        assert x.shape == (2, 3, *spec.crop) and x.dtype == torch.uint8
    r = normalise(prepare_frames(frames, R21D).permute(1, 0, 2, 3).unsqueeze(0), R21D)
    assert r.shape == (1, 3, 2, 112, 112)
    assert torch.allclose(r[0, 0, 0, 0, 0], torch.tensor((128 / 255 - R21D.mean[0]) / R21D.std[0]), atol=1e-4)
    s = normalise(prepare_frames(frames, S3D).permute(1, 0, 2, 3).unsqueeze(0), S3D)
    assert 0.0 <= float(s.min()) and float(s.max()) <= 1.0


def _texture(h, w):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return lambda i: np.roll(base, 5 * i, axis=1)


def test_windows_are_each_frame_resized_once_then_gathered(tmp_path):
    """Chunk windows == decoding every frame at decode_size, prepare_frames, gather by plan: exactly."""
    import decord

    path = make_video(tmp_path / "tex.mkv", cfr(3.0, fps=30), size=(400, 300), image=_texture(300, 400))
    info, windows = decode_all(str(path), SPECS, chunk_seconds=1, decoder="decord")
    assert info.decoder == "decord" and info.rows == {"r21d": 3, "s3d": 3}
    dw, dh = decode_size(400, 300, SPECS)
    vr = decord.VideoReader(str(path), width=dw, height=dh, num_threads=1)
    frames = np.stack([vr.next().asnumpy() for _ in range(len(vr))])
    stamps = np.asarray(vr.get_frame_timestamp(np.arange(len(vr))))
    plan = frame_plan(stamps[:, 0], stamps[-1, 1], SPECS)
    for spec in SPECS:
        prepared = prepare_frames(frames, spec)  # [F, 3, h, w]
        expect = prepared[torch.from_numpy(plan[spec.name].index)].permute(0, 2, 1, 3, 4)  # [N, 3, T, h, w]
        assert torch.equal(windows[spec.name], expect), spec.name
        # The model side: stacking keeps values, normalising gives a contiguous float batch.
        batch = stack_windows(list(windows[spec.name]))
        assert torch.equal(batch, windows[spec.name])
        reused = stack_windows(list(windows[spec.name]), out=batch.permute(0, 2, 3, 4, 1))
        assert torch.equal(reused, expect) and reused.data_ptr() == batch.data_ptr()
        normaliser = Normaliser(spec)
        x = normaliser(reused)
        assert x.is_contiguous() and torch.equal(x, normalise(expect.contiguous(), spec))
        # A smaller batch (the end-of-run flush) uses the front of the same buffer.
        small = normaliser(stack_windows(list(windows[spec.name][1:])))
        assert small.data_ptr() == x.data_ptr() and torch.equal(small, normalise(expect[1:].contiguous(), spec))


# ---------------------------------------------------------------- timestamps

@pytest.mark.parametrize("kind", ["cfr", "vfr", "late_start"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_windows_show_the_frame_on_screen_at_each_grid_time(tmp_path, kind, decoder):
    times = {"cfr": cfr(2.5), "vfr": vfr(2.6), "late_start": cfr(2.3, start=0.7)}[kind]
    path = make_video(tmp_path / f"{kind}.mkv", times)
    info, windows = isolated.decode_all(str(path), SPECS, chunk_seconds=1, decoder=decoder)
    assert info.decoder == decoder and info.fallback_reason is None
    n = num_windows(info.duration)
    assert n == math.ceil(times[-1] - times[0] + 0.05) == info.rows["r21d"]
    assert windows["r21d"].shape == (n, 3, 8, 112, 112)
    got = window_grey(windows["r21d"])
    for k, wanted in enumerate(window_frame_times(info.duration, R21D)):
        expect = [grey(shown(times, t)) for t in wanted]
        assert np.abs(got[k] - expect).max() < STEP / 2, ("r21d", k, got[k], expect)
    # the end is the last frame's pts plus its duration, as decoded (test_s3d_released checks it against FFmpeg)
    # ... counted from the file's start, which for a file of one stream is its first frame (as the command line counts)
    plan = expected_s3d(np.asarray(times) - times[0], info.duration)
    assert windows["s3d"].shape == (len(plan), 3, 16, 224, 224) and info.rows["s3d"] == len(plan)
    got = window_grey(windows["s3d"])
    expect = np.where(plan >= 0, [[grey(i) for i in row] for row in plan], 0)
    assert np.abs(got - expect).max() < STEP / 2, (got, expect)


def test_decord_and_pyav_give_equal_frames(tmp_path):
    path = make_video(tmp_path / "v.mkv", vfr(2.0, seed=3), size=(80, 64), image=_texture(64, 80))
    a_info, a = decode_all(str(path), SPECS, decoder="decord")
    b_info, b = decode_all(str(path), SPECS, decoder="pyav")
    assert (a_info.decoder, b_info.decoder) == ("decord", "pyav")
    assert a_info.rows == b_info.rows
    for name in a:  # one scaler (FFmpeg's bilinear swscale) and one frame plan: the same bytes
        assert torch.equal(a[name], b[name]), name


def test_short_video_is_too_short_for_released_s3d_and_one_padded_r21d_row(tmp_path):
    times = cfr(0.4)
    path = make_video(tmp_path / "short.mkv", times)
    with pytest.raises(DecodeError) as err:
        decode_all(str(path), SPECS)
    assert err.value.status == "too_short" and "16" in err.value.message
    info, windows = decode_all(str(path), [R21D])
    assert info.rows == {"r21d": 1} and info.duration < 1
    got = window_grey(windows["r21d"])[0]
    # Grid times past the end repeat the last one inside; R21D's 8 frames end at 0.233 s.
    last_inside = max(t for t in window_frame_times(info.duration, R21D)[0])
    assert abs(got[-1] - grey(shown(times, last_inside))) < STEP / 2


def test_chunks_are_bounded_and_in_order(tmp_path):
    path = make_video(tmp_path / "long.mkv", cfr(7.0, fps=5))
    video = DecodedVideo(str(path), SPECS, chunk_seconds=2)
    chunks = list(video.chunks())
    assert [c.first for c in chunks] == [0, 2, 4, 6]
    assert max(len(c) for c in chunks) == 2
    assert video.info.rows == {"r21d": 7, "s3d": 7}


# ---------------------------------------------------------------- sizes and rotation

def test_odd_size_and_4k(tmp_path):
    odd = make_video(tmp_path / "odd.mkv", cfr(1.2), size=(97, 61), pix="yuv444p")
    info, windows = decode_all(str(odd), SPECS)
    assert (info.width, info.height, info.rows) == (97, 61, {"r21d": 2, "s3d": 2})
    big = make_video(tmp_path / "4k.mkv", cfr(1.0, fps=20), size=(3840, 2160))
    info, windows = decode_all(str(big), SPECS, decoder="decord")
    assert (info.width, info.height, info.decoder) == (3840, 2160, "decord")
    assert windows["s3d"].shape == (1, 3, 16, 224, 224) and windows["r21d"].shape == (1, 3, 8, 112, 112)


def _corner_image(h, w):
    def draw(i):
        a = np.zeros((h, w, 3), np.uint8)
        a[: h // 2, : w // 2] = 250  # bright top-left quadrant in coded orientation
        return a
    return draw


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_gives_upright_frames(tmp_path, rotation):
    path = make_video(tmp_path / "rot.mkv", cfr(1.2), size=(96, 64), rotation=rotation, image=_corner_image(64, 96))
    info, windows = decode_all(str(path), SPECS)
    assert info.rotation == rotation % 360 and info.decoder == "pyav"
    assert (info.width, info.height) == ((64, 96) if rotation % 180 else (96, 64))
    frame = windows["s3d"][0, :, 0].float().mean(0)  # [224, 224], upright
    quads = {"tl": frame[:100, :100].mean(), "tr": frame[:100, -100:].mean(),
             "bl": frame[-100:, :100].mean(), "br": frame[-100:, -100:].mean()}
    # Counter-clockwise turn by the display rotation: top-left goes to bottom-left (90),
    # top-right (-90), bottom-right (180).
    bright = {90: "bl", -90: "tr", 180: "br"}[rotation]
    assert max(quads, key=quads.get) == bright, quads


# ---------------------------------------------------------------- bad input

def test_bad_inputs_are_classified(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    audio = make_audio_only(tmp_path / "audio.m4a")
    good = make_video(tmp_path / "good.mkv", cfr(2.0)).read_bytes()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video at all" * 100)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good[: len(good) // 3])
    expected = {empty: "empty_file", audio: "no_video_stream", garbage: "decode_error"}
    for path, status in expected.items():
        with pytest.raises(DecodeError) as err:
            decode_all(str(path), SPECS)
        assert err.value.status == status, (path.name, err.value.message)
        assert err.value.message
    # A truncated MP4 (moov atom at the end is gone): classified, never a crash.
    with pytest.raises(DecodeError) as err:
        decode_all(str(cut), SPECS)
    assert err.value.status in ("decode_error", "no_frames")


# ---------------------------------------------------------------- real files

def test_real_videos_decode_or_fail_cleanly():
    root = real_fixtures() / "video"
    results = {}
    for path in sorted(root.iterdir()):
        if path.suffix == ".md":
            continue
        try:
            info, windows = decode_all(str(path), SPECS, decoder="decord")
        except DecodeError as exc:
            results[path.name] = exc.status
            continue
        results[path.name] = info.decoder
        assert windows["r21d"].shape[0] == num_windows(info.duration) == info.rows["r21d"] >= 1
        assert windows["s3d"].shape[0] == info.rows["s3d"] == -(-info.plans["s3d"].frames_out // 16)
    assert results["decord_corrupted.mp4"] == "decode_error"
    assert results["moviepy_no_duration.webm"] == "pyav"  # no container duration: PyAV fallback
    assert results["decord_video_90.mov"] == "too_short"  # 0.1 s: 2 of the 16 frames of a released S3D row
    assert results["v_ZNVhz7ctTq0.mp4"] == "decord"
    assert results["mmaction2_test.avi"] == "pyav"  # decord's AVI timestamps are garbage


def test_real_rotated_fixture_is_portrait_and_no_duration_webm_has_length():
    root = real_fixtures() / "video"
    info, windows = decode_all(str(root / "decord_video_90.mov"), [R21D])
    assert (info.width, info.height, info.rotation, info.decoder) == (320, 568, 270, "pyav")
    info, _ = decode_all(str(root / "moviepy_no_duration.webm"), SPECS)
    assert info.decoder == "pyav" and 4.5 < info.duration < 5.5 and info.rows == {"r21d": 5, "s3d": 5}


# ---------------------------------------------------------------- the IG65M port's recipe

@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_ig65m_recipe_is_the_ports_transform_on_the_source_frames(tmp_path, decoder):
    """Back-to-back 32-frame clips of the source frames, / 255, F.interpolate(scale_factor) whole, no crop,
    mean/std: written here as the port writes it, on the frames decord gives at native size."""
    import decord
    import torch.nn.functional as F

    path = make_video(tmp_path / "v.mkv", cfr(2.3, fps=30), size=(120, 90), image=_texture(90, 120))
    info, windows = decode_all(str(path), [R21D_IG65M, S3D], decoder=decoder)
    assert info.rows == {"r21d": 2, "s3d": 3}  # 69 frames: 2 clips of 32, 5 dropped
    times = info.row_times("r21d")
    assert times["row_seconds"] == pytest.approx(32 / 30, rel=1e-3) and times["frames_sampled"] == 69
    frames = decord.VideoReader(str(path)).get_batch(list(range(64))).asnumpy()
    clips = torch.from_numpy(frames).float().div(255).view(2, 32, 90, 120, 3).permute(0, 4, 1, 2, 3)
    mean, std = (torch.tensor(v).view(3, 1, 1, 1) for v in (R21D.mean, R21D.std))
    expect = torch.stack([(F.interpolate(c, scale_factor=128 / 90, mode="bilinear", align_corners=False) - mean) / std
                          for c in clips])
    got = normalise(windows["r21d"].contiguous(), R21D_IG65M)
    assert got.shape == expect.shape == (2, 3, 32, 128, 170)
    assert (got - expect).abs().max() < 1e-5
    # the S3D rows of the same run are those of S3D alone: the recipes decode separately
    _, alone = decode_all(str(path), [S3D], decoder=decoder)
    assert torch.equal(windows["s3d"], alone["s3d"])


def test_ig65m_recipe_under_one_clip_is_too_short(tmp_path):
    path = make_video(tmp_path / "v.mkv", cfr(1.0, fps=30))
    with pytest.raises(DecodeError) as err:
        decode_all(str(path), [R21D_IG65M])
    assert err.value.status == "too_short" and "32" in err.value.message

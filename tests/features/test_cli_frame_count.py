"""The fps=16 frame count of every decoder against the ffmpeg command line itself.

The released S3D features were made by piping ``ffmpeg -i VIDEO -vf fps=16,scale=...`` to
rawvideo; how many frames that gives depends on where the command line ends the stream (the
last frame's pts plus its duration). Here the real ffmpeg binary (imageio-ffmpeg's) is run
on each video and its frame count compared with the S3D plan (and the R(2+1)D row count) of
each decoder (features.decode.DECODERS), and the exact decoders' frames with its frames. Clips written here: MP4s with B-frames at a variable
frame rate (their declared stream duration falls short of the last frame's end, and decord's
own frame ends, one period of the guessed 100 fps, fell shorter still), at YouTube's 19.62 fps,
and H.264 AVIs (no stored pts: the command line times frames by their packets' dts).
"""
from __future__ import annotations

import fractions
import subprocess

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("decord")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")

from features.decode import DECODERS  # noqa: E402
from shards.feature_spec import R21D, S3D  # noqa: E402

from tests.conftest import real_fixtures  # noqa: E402
from tests.features import isolated  # noqa: E402
from tests.features.test_decode import vfr  # noqa: E402


SPECS = [R21D, S3D]


def cli_frames(path) -> int:
    """Frames the ffmpeg command line outputs with ``-vf fps=16`` (scaled to 8x8 to keep it small)."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-an", "-vf", "fps=16,scale=8:8",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    assert len(out) % 192 == 0
    return len(out) // 192


def planned(path, decoder: str):
    """(decoder, S3D frames at 16 fps, R(2+1)D rows) as the toolkit plans them, or the failure status."""
    ran, info = isolated.plan_of(path, SPECS, decoder)
    if info is None:
        return ran, None, None
    return ran, info.plans["s3d"].frames_out, info.plans["r21d"].rows


def write_mp4(path, times, rate, time_base=fractions.Fraction(1, 16000), b_frames=3):
    """An H.264 MP4 with frames at `times` (s); B-frames make the muxer's edit list and a
    declared duration shorter than the last frame's end."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = stream.codec_context.time_base = time_base
        stream.options = {"qp": "20", "preset": "ultrafast", "bf": str(b_frames)}
        write_frames(out, stream, times, time_base, shade=8)
    return path


def write_frames(out, stream, times, tb, shade: int) -> None:
    """Encode flat 64x48 frames shown at `times` (s, in time base `tb`) into `stream` of `out`, frame i
    grey `shade * i`."""
    for i, t in enumerate(times):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), shade * i % 256, np.uint8), format="rgb24")
        frame.pts, frame.time_base = int(round(t / tb)), tb
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def _last_end_and_declared(path) -> tuple[float, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.duration) for p in container.demux(stream) if p.size and p.pts is not None]
        pts, dur = max(packets)
        return float((pts + dur) * stream.time_base), float(stream.duration * stream.time_base)


def check_all(path) -> int:
    expected = cli_frames(path)
    got = {name: planned(path, name) for name in DECODERS}
    for name, (decoder, frames, r21d_rows) in got.items():
        if expected < S3D.frames:
            assert decoder == "too_short", (path, name, decoder, expected)
        else:
            assert frames == expected, f"{path.name}: {decoder} plans {frames} frames at 16 fps, ffmpeg gives {expected}"
    assert len({plan[1:] for plan in got.values()}) == 1, (path.name, got)  # and the same R(2+1)D rows
    return expected


R1962 = fractions.Fraction(981, 50)


@pytest.mark.parametrize("name,times,rate", [
    ("vfr_a.mp4", vfr(10.0, seed=5), 30),
    ("vfr_b.mp4", vfr(10.0, seed=3), 30),
    ("r1962.mp4", [i / R1962 for i in range(284)], R1962),
])
def test_b_frame_mp4_ends_where_ffmpeg_ends_it(tmp_path, name, times, rate):
    path = write_mp4(tmp_path / name, times, rate)
    end, declared = _last_end_and_declared(path)
    if name.startswith("vfr"):
        # The case decord got wrong: the stream declares less than its last frame's end.
        assert declared < end - 0.01, (declared, end)
    assert check_all(path) >= 16
    assert planned(path, "decord")[0] == "decord" and planned(path, "torchcodec")[0] == "torchcodec"


def test_a_19_62_fps_mp4_in_youtubes_time_base(tmp_path):
    path = write_mp4(tmp_path / "r1962.mp4", [i / R1962 for i in range(357)], R1962,
                     time_base=fractions.Fraction(50, 9810))
    assert check_all(path) == 291


def write_avi(path, n, b_frames, rate=30):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": str(b_frames)}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("b_frames", [0, 2])
def test_h264_avi_is_timed_as_the_command_line_times_it(tmp_path, b_frames):
    # AVI has no pts: the demuxer's guess (dts + 1) gave 54 frames where the command line, timing
    # frames by their packets' dts, gives 55.
    assert check_all(write_avi(tmp_path / "clip.avi", 103, b_frames)) == 55


def test_every_real_fixture_has_the_command_lines_frame_count():
    # mmaction2_test.avi's audio starts before its first video frame: the command line (several
    # streams: a constant frame rate from the file's start) repeats the fps filter's first frame
    # from tick 0, one frame more than the filter gives.
    root = real_fixtures() / "video"
    done = {}
    for path in sorted(root.iterdir()):
        if path.suffix in (".md", ".tsv", ".txt"):
            continue
        if planned(path, "pyav")[0] == "decode_error":  # decord_corrupted.mp4: no decoder reads it
            continue
        done[path.name] = check_all(path)
    assert len(done) >= 8 and done["mmaction2_test.avi"] == 106, done


def write_clip(path, start, n, rate=30, audio_start=None):
    """An H.264 clip (MP4 or MKV) of `n` frames from `start` s, frame i a flat grey 4 * i, and an
    AAC track of silence from `audio_start` s when one is given."""
    tb = fractions.Fraction(1, 15360)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.time_base = video.codec_context.time_base = tb
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"preset": "ultrafast", "bf": "0", "qp": "10"}
        if audio_start is not None:
            audio = out.add_stream("aac", rate=16000)
            audio.layout = "mono"
            t = audio_start
            while t < start + n / rate:
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = 16000, int(round(t * 16000)), fractions.Fraction(1, 16000)
                for packet in audio.encode(frame):
                    out.mux(packet)
                t += 1024 / 16000
            for packet in audio.encode():
                out.mux(packet)
        write_frames(out, video, [start + i / rate for i in range(n)], tb, shade=4)
    return path


def check_frames(path) -> tuple[int, float]:
    """The exact decoders' S3D frames byte for byte the command line's (its S3D scale and crop), torchcodec's
    as many; (frames, row_start_s, first_frame_s) as meta.json records them."""
    from tests.s3d_oracle import cli_s3d_frames

    cli = cli_s3d_frames(str(path))
    starts = set()
    for decoder in DECODERS:
        info, windows = isolated.decode_all(str(path), SPECS, decoder=decoder)
        frames = windows["s3d"].permute(0, 2, 3, 4, 1).reshape(-1, 224, 224, 3).numpy()
        assert info.plans["s3d"].frames_out == len(cli), (path.name, decoder)
        starts.add(info.row_times("s3d")["row_start_s"])
        if decoder == "torchcodec":  # flat greys 4 apart: the right frame is within 2 of each value (measured)
            assert info.decoder == "torchcodec"
            assert np.abs(frames[:len(cli)].astype(np.int16) - cli).max() <= 2, path.name
            continue
        unequal = [i for i in range(len(cli)) if not np.array_equal(frames[i], cli[i])]
        assert not unequal, f"{path.name}: {len(unequal)} of {len(cli)} frames differ, first {unequal[:5]}"
        first_frame_s = info.row_times("s3d")["first_frame_s"]
    assert len(starts) == 1
    return len(cli), starts.pop(), first_frame_s


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_video_from_1_075_s_is_counted_from_the_files_start(tmp_path, suffix):
    # The command line subtracts the file's start (the video's first frame, 1.075 s): 29 frames
    # at 30 fps give 15 at 16 fps, too short for a row; rounding the absolute pts gave 16.
    path = write_clip(tmp_path / f"late{suffix}", 1.075, 29)
    assert cli_frames(path) == 15
    for decoder in DECODERS:
        assert planned(path, decoder)[0] == "too_short"
    assert check_frames(write_clip(tmp_path / f"long{suffix}", 1.075, 60)) == (32, 0.0, 0.0)


def test_a_video_from_0_02_s_shows_the_command_lines_frames(tmp_path):
    # Same count either way, but ticks rounded on absolute pts picked another frame for 12 of 32.
    frames, start, first_frame_s = check_frames(write_clip(tmp_path / "v.mp4", 0.02, 60))
    assert frames == 32 and abs(start) < 1e-5 and first_frame_s == 0.0


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_audio_before_video_repeats_the_first_frame_from_the_files_start(tmp_path, suffix):
    # Video from 1 s, audio from 0: 16 repeats of the first frame, then the fps filter's 32.
    path = write_clip(tmp_path / f"av{suffix}", 1.0, 60, audio_start=0.0)
    assert check_frames(path) == (48, -1.0, 1.0)  # the rows start at the file's start

"""Hostile videos cost one failure row, never a worker: rows follow decoded frames, not the
container's claims, and frame sizes are refused before FFmpeg allocates them.

Each file is built here with PyAV (a few hundred bytes to a few tens of kB) and every risky call
runs under tests/watchdog.py, so a regression fails its test instead of eating the machine. Each
case runs on every decoder the project has (decord, which hands refusals to PyAV, and PyAV
alone); they must agree on the status and the message.
"""
import fractions
import json
import multiprocessing as mp
import os
import struct
import zlib

import numpy as np
import pytest

av = pytest.importorskip("av")
torch = pytest.importorskip("torch")
pytest.importorskip("decord")

from features.decode import DECODERS, DecodedVideo  # noqa: E402
from features.extract import main  # noqa: E402
from features.video import DecodeError  # noqa: E402
from shards.feature_spec import R21D, S3D  # noqa: E402

from tests.conftest import read_all_rows, read_all_samples  # noqa: E402
from tests.features.test_decode import cfr, make_video  # noqa: E402
from tests.features.test_extract import run, write_aligned  # noqa: E402
from tests.watchdog import call_main, run_bounded  # noqa: E402

SPECS = [R21D, S3D]
FAR = 3_000_000.0  # seconds between the two frames of the hostile file


def _outcome(path, decoder: str, **limits):
    """(status, message, rows per backbone) of decoding `path` whole; 'ok' when it decodes."""
    from features.video import VideoLimits

    # A forked child cannot use the OpenMP threads an earlier test started in the parent (it would
    # wait on them for ever): torch runs on this thread alone.
    torch.set_num_threads(1)
    video = DecodedVideo(str(path), SPECS, decoder=decoder, limits=VideoLimits(**limits))
    try:
        chunks = [c for c in video.chunks() if c is not None]
    except DecodeError as exc:
        return exc.status, exc.message, None
    return "ok", None, {s.name: sum(len(c.windows[s.name]) for c in chunks if s.name in c.windows) for s in SPECS}


# Children come from a clean server process that imported this module (torch, PyAV, decord) once: a fork
# of the test process itself, once it had decoded in threads of its own (PyAV's, torch's, a helper
# pool's), now and then hung in PyAV's demuxer on a lock no thread of the child held.
_SERVER = mp.get_context("forkserver")
_SERVER.set_forkserver_preload([__name__])


# What loading torchcodec and its FFmpeg libraries adds to a process (measured: ~270 MiB with a first decode).
TORCHCODEC_MB = 300


def bounded_outcome(path, decoder: str, extra_mb: float = 250, **limits):
    """_outcome in a child under the watchdog; the bound is on what decoding adds to the child."""
    extra_mb += TORCHCODEC_MB if decoder == "torchcodec" else 0
    return run_bounded(_outcome, path, decoder, seconds=60, memory_mb=extra_mb, start="forkserver", **limits)


def far_apart(path):
    """Two 16x16 frames, at 0 s and 3,000,000 s (a millisecond time base holds it): ~1 kB of mkv."""
    return make_video(path, [0.0, FAR], size=(16, 16))


def png_bytes(width: int, height: int) -> bytes:
    """A black 1-bit grey PNG of width x height: ~30 kB for 16000x16000, written row by row in 0.2 s."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the row's bits
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def png_video(path, size, declared, frames=20):
    """A .mov of `frames` PNG packets of `size` (width, height) whose container declares `declared`."""
    image = png_bytes(*size)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=10)
        stream.width, stream.height, stream.pix_fmt = *declared, "monob"
        stream.time_base = fractions.Fraction(1, 10)
        for i in range(frames):
            packet = av.Packet(image)
            packet.stream = stream
            packet.pts = packet.dts = i
            packet.time_base = fractions.Fraction(1, 10)  # the muxer's own time base is set at the first packet
            out.mux(packet)
    return path


# ---------------------------------------------------------------- time: rows follow frames, bounded

@pytest.mark.parametrize("decoder", DECODERS)
def test_frames_three_million_seconds_apart_are_too_long(tmp_path, decoder):
    path = far_apart(tmp_path / "far.mkv")
    assert path.stat().st_size < 2000
    status, message, _ = bounded_outcome(path, decoder)
    assert status == "too_long"
    assert message == ("the video track runs 3000000.033 s from its first frame to the end of its last, "
                       "over --max-video-seconds 43200")


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_gap_between_frames_is_bounded(tmp_path, decoder):
    # Within --max-video-seconds, but no frame for 1,000 s: a hostile file, not a real video.
    gap = make_video(tmp_path / "gap.mkv", cfr(1.0) + [1001.0], size=(16, 16))
    status, message, _ = bounded_outcome(gap, decoder)
    assert status == "frame_gap"
    assert message == "no frame for 1000.100 s after 0.900 s (over --max-frame-gap 300)"
    # The last frame shown for 1,000 s (its own duration) is the same gap.
    tail = make_video(tmp_path / "tail.mkv", cfr(1.0), size=(16, 16))
    _stretch_last_packet(tail, 1000.0)
    status, message, _ = bounded_outcome(tail, decoder)
    assert (status, message) == ("frame_gap", "no frame for 1000.000 s after 0.900 s (over --max-frame-gap 300)")
    # Real videos miss a few seconds (variable frame rate, a dropped stretch): rows still cover them.
    holes = make_video(tmp_path / "holes.mkv", cfr(1.0) + [6.0 + t for t in cfr(1.0)], size=(16, 16))
    assert bounded_outcome(holes, decoder) == ("ok", None, {"r21d": 7, "s3d": 7})
    # Both bounds are flags.
    assert bounded_outcome(holes, decoder, max_frame_gap=4.0)[0] == "frame_gap"
    status, message, _ = bounded_outcome(holes, decoder, max_video_seconds=5.0)
    assert status == "too_long" and message.endswith("over --max-video-seconds 5")


def _stretch_last_packet(path, seconds: float) -> None:
    """Rewrite an mkv with its last packet's duration set to `seconds` (a container claim, no frame)."""
    tmp = path.with_suffix(".tmp.mkv")
    with av.open(str(path)) as src, av.open(str(tmp), "w") as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        packets = [p for p in src.demux(s_in) if p.size]
        for i, packet in enumerate(packets):
            if i == len(packets) - 1:
                packet.duration = int(seconds / s_in.time_base)
            packet.stream = s_out
            dst.mux(packet)
    os.replace(tmp, path)


# ---------------------------------------------------------------- space: frame sizes refused before allocation

@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("declared", [(16000, 16000), (16, 16)], ids=["declared-big", "declared-small"])
def test_a_16000_square_video_is_refused_before_a_frame_of_that_size_exists(tmp_path, decoder, declared):
    # FFmpeg's own probe decodes a PNG track to learn its pixel format: it is bounded too.
    path = png_video(tmp_path / "big.mov", (16000, 16000), declared=declared)
    assert path.stat().st_size < 1_000_000
    # A 16000x16000 frame is 32 MB as 1-bit grey, 768 MB as rgb24: the bound is under both.
    status, message, _ = bounded_outcome(path, decoder, extra_mb=30)
    assert status == "too_large"
    assert message == ("a frame larger than --max-video-pixels 67108864 was refused (first frame does not decode: "
                       "Invalid argument: 'avcodec_send_packet()' returned 22)")


@pytest.mark.parametrize("decoder", DECODERS)
def test_frame_sizes_known_before_decoding_are_checked(tmp_path, decoder):
    small = make_video(tmp_path / "small.mkv", cfr(2.0), size=(64, 48))
    status, message, _ = bounded_outcome(small, decoder, max_video_pixels=1000)
    assert (status, message) == ("too_large", "frames of 64x48 (0.0 megapixels), over --max-video-pixels 1000")


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_thin_video_is_refused_by_its_shape(tmp_path, decoder):
    # A megapixel, but resized to a short side of 224 it would be 840,000x224 (560 MB a frame).
    path = png_video(tmp_path / "thin.mov", (60000, 16), declared=(60000, 16))
    status, message, _ = bounded_outcome(path, decoder, extra_mb=100)
    assert (status, message) == ("too_large", "frames of 60000x16 are 3750 times as wide as high, over the 10 "
                                 "any real video has")


# ---------------------------------------------------------------- the stage: one row each, the unit goes on

def _extract_main(argv):
    """mmp-extract-features, named here so a spawned child imports this module (torch, PyAV, decord) before
    the watchdog takes its starting memory: the bound is then on what decoding adds."""
    return main(argv)


@pytest.mark.parametrize("decoder", DECODERS)
def test_mmp_extract_features_records_hostile_videos_and_extracts_the_rest(tmp_path, decoder):
    src = tmp_path / "videos"
    src.mkdir()
    far_apart(src / "vidFarApart.mkv")
    png_video(src / "vidHugeSize.mov", (16000, 16000), declared=(16000, 16000))
    make_video(src / "vidGood0001.mkv", cfr(0.9))
    ids = ["vidFarApart", "vidHugeSize", "vidGood0001"]
    aligned = tmp_path / "aligned"
    write_aligned(aligned, [[(vid, 0.9) for vid in ids]])
    out = tmp_path / "mmp"
    argv = ["--aligned", str(aligned), "--video-dir", str(src), "--out", str(out), "--gpus", "0", "--workers", "1",
            "--no-progress", "--random-weights", "--backbones", "r21d", "--executor", "inline", "--decoder", decoder]
    # A clean interpreter (torch's threads do not survive a fork of this process once it ran them).
    code, _, err = call_main(_extract_main, argv, seconds=180, memory_mb=700, start="spawn")
    assert code == 0, err
    rows = {r["video_id"]: r for r in read_all_rows(out)}
    assert rows["vidFarApart"]["status"] == "too_long"
    assert rows["vidFarApart"]["error"].startswith("the video track runs 3000000.033 s")
    assert rows["vidHugeSize"]["status"] == "too_large" and "--max-video-pixels" in rows["vidHugeSize"]["error"]
    assert rows["vidGood0001"]["status"] == "ok" and rows["vidGood0001"]["feature_rows"] == 1
    assert rows["vidGood0001"]["decoder"] == decoder
    samples = read_all_samples(out)
    assert sorted(samples) == ["vidGood0001"]
    assert json.loads(samples["vidGood0001"]["meta.json"])["decoder"] == decoder
    assert json.loads((out / "config.json").read_text())["config"]["decoder"] == decoder
    limits = json.loads((out / "config.json").read_text())["config"]["limits"]
    assert limits == {"max_video_seconds": 43200.0, "max_frame_gap": 300.0, "max_video_pixels": 8192 * 8192}


def test_limits_are_flags_checked_before_any_work(tmp_path, capsys):
    aligned = tmp_path / "aligned"
    write_aligned(aligned, [[("vidA0000001", 1.0)]])
    for flag in ("--max-video-seconds", "--max-frame-gap", "--max-video-pixels"):
        assert run(aligned, tmp_path, tmp_path / "out", "--random-weights", flag, "0") == 2
        err = capsys.readouterr().err
        assert flag in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("head,limits,status", [
    (FAR, {}, "too_long"),                                      # 35 days of repeated first frame
    (600.0, {}, "frame_gap"),                                   # 10 minutes of it, over the 300 s gap
    (2.0, {"max_video_seconds": 2.5}, "too_long"),              # the head counts toward the length
    (2.0, {}, None),                                            # an ordinary audio-first file
])
def test_a_first_frame_far_after_the_files_start_is_bounded(head, limits, status):
    """A file whose other stream starts first: rows repeat the first frame from the file's start (as the
    ffmpeg command line does), so that head is bounded like the track itself, before any row exists. Planned
    in a watched child: unbounded, a 35-day head would be 48M planned frames."""
    got = run_bounded(_plan_after_head, head, limits, seconds=60, memory_mb=300)
    assert got == (status, 3 if status is None else None), got


def _plan_after_head(head: float, limits: dict):
    """(failure status or None, rows or None) of planning 16 frames at 16 fps that start `head` s after the
    start of a file of several streams."""
    from features.video import VideoInfo, VideoLimits, plan_rows

    times = head + np.arange(16) / 16.0
    info = VideoInfo(duration=1.0, fps=16.0, width=224, height=224, rotation=0, decoder="pyav", frames=16,
                     first_pts=float(times[0]))
    try:  # S3D, unbounded head of 2 s: 32 repeated ticks + 16 frames = 48 frames, 3 rows
        return None, plan_rows(info, times, head + 1.0, SPECS, VideoLimits(**limits), origin=(0.0, True))
    except DecodeError as exc:
        return exc.status, None

"""--decoder: the choice, what each decoder records, a GPU decoder that would run on the CPU unasked,
and a decoder that hangs in native code holding the interpreter (decord's open report: get_batch looping
for ever on a container that over-reports its frame count)."""
from __future__ import annotations

import ctypes
import json
import sys

import pytest

pytest.importorskip("av")
pytest.importorskip("torch")
pytest.importorskip("decord")

import features.batching  # noqa: E402
from features.decode import DECODERS, DEFAULT_DECODER, DecodedVideo, decode_all  # noqa: E402
from features.extract import ExtractStage, main, stage_from_args  # noqa: E402
from features.extract_flags import build_parser, torchcodec_problem  # noqa: E402
from pipeline.runtime.cli import parse_args  # noqa: E402
from pipeline.runtime.stage import run_stage  # noqa: E402
from shards.feature_spec import R21D, S3D  # noqa: E402

from tests.conftest import read_all_rows, read_all_samples  # noqa: E402
from tests.features import isolated  # noqa: E402
from tests.features.test_decode import cfr, make_video  # noqa: E402
from tests.features.test_extract import write_aligned  # noqa: E402
from tests.watchdog import run_bounded  # noqa: E402


SPECS = [R21D, S3D]


def test_the_default_is_an_exact_decoder_and_every_choice_is_listed_in_help():
    assert DEFAULT_DECODER in ("pyav", "decord") and set(DECODERS) == {"pyav", "decord", "torchcodec"}
    text = build_parser().format_help()
    assert "--decoder {pyav,decord,torchcodec}" in text and "NVDEC" in text
    assert build_parser().parse_args(["--aligned", "a", "--video-dir", ".", "--out", "o"]).decoder == DEFAULT_DECODER


def test_an_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="decoder must be one of pyav, decord, torchcodec"):
        DecodedVideo("v.mp4", SPECS, decoder="nvdec")


def test_torchcodec_without_its_libraries_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # as where it is not installed
    assert "pip install torchcodec" in torchcodec_problem()
    (tmp_path / "aligned").mkdir()
    code = main(["--aligned", str(tmp_path / "aligned"), "--video-dir", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--random-weights", "--decoder", "torchcodec"])
    err = capsys.readouterr().err
    assert code == 2 and "--decoder torchcodec: torchcodec is not installed" in err and "--decoder pyav" in err


class _FallsBackToCpu:
    """torchcodec's VideoDecoder as it is on a GPU whose NVDEC cannot take the stream: it decodes on the
    CPU and says so only in ``cpu_fallback``."""

    real = None  # torchcodec's own class, set by the test

    def __init__(self, path, *, device, **kwargs):
        self.device = device
        self._decoder = self.real(path, device="cpu", **kwargs)

    def __len__(self):
        return len(self._decoder)

    @property
    def cpu_fallback(self):
        return "[CUDA] Fallback status: Falling back due to: Video not supported"

    def get_frames_at(self, indices):
        return self._decoder.get_frames_at(indices)


def _decode_on_a_gpu_that_falls_back(path: str):
    import torchcodec.decoders

    _FallsBackToCpu.real = torchcodec.decoders.VideoDecoder
    torchcodec.decoders.VideoDecoder = _FallsBackToCpu
    try:
        return decode_all(path, SPECS, decoder="torchcodec", device="cuda:0")
    finally:
        torchcodec.decoders.VideoDecoder = _FallsBackToCpu.real


def test_a_gpu_decoder_falling_back_to_the_cpu_is_never_silent(tmp_path):
    path = make_video(tmp_path / "v.mkv", cfr(2.0))
    info, windows = isolated.in_helper(_decode_on_a_gpu_that_falls_back, str(path))
    assert info.decoder == "pyav"  # decoded again, exactly, where the GPU would not
    assert info.fallback_reason.startswith("torchcodec would decode it on the CPU, not on cuda:0: [CUDA] Fallback")
    _, exact = decode_all(str(path), SPECS, decoder="pyav")
    assert all(windows[name].equal(exact[name]) for name in exact)


# ---------------------------------------------------------------- a decoder that hangs

class _HangsOnOne(DecodedVideo):
    """decord stuck in native code on one video, holding the interpreter (no Python thread can stop it)."""

    def chunks(self):
        if "vidHang" in self.path:
            ctypes.PyDLL(None).sleep(600)
        yield from super().chunks()


class _HangingStage(ExtractStage):
    """The stage as the local executor's spawned workers run it, with decoding that hangs on vidHang."""

    def process(self, unit, writer):
        features.batching.DecodedVideo = _HangsOnOne
        return super().process(unit, writer)


def test_a_decoder_hanging_in_native_code_costs_one_row_not_the_worker(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    units = [["vidGood0001", "vidHang0001", "vidGood0002"], ["vidGood0003"]]
    for vid in sum(units, []):
        make_video(src / f"{vid}.mkv", cfr(0.9))
    write_aligned(tmp_path / "aligned", [[(vid, 0.9) for vid in unit] for unit in units])
    out = tmp_path / "mmp"
    args = parse_args(build_parser(), ["--aligned", str(tmp_path / "aligned"), "--video-dir", str(src), "--out",
                                       str(out), "--gpus", "0", "--random-weights", "--backbones", "r21d",
                                       "--decoder", "decord", "--budget-seconds", "2", "--workers", "2"])
    stage = stage_from_args(args)
    stage.__class__ = _HangingStage
    stage.preloaded = {}
    # A clean interpreter: a fork of the test process (its threads) could inherit a lock one of them held.
    summary = run_bounded(run_stage, stage, out, workers=2, progress=False, seconds=240, memory_mb=4000,
                          start="spawn")
    assert summary.units_done == 2 and summary.units_failed == 0
    rows = {r["video_id"]: r for r in read_all_rows(out)}
    hung = rows["vidHang0001"]
    assert hung["status"] == "over_budget" and "stopped by the executor" in hung["error"], hung
    assert {v for v, r in rows.items() if r["status"] == "ok"} == {"vidGood0001", "vidGood0002", "vidGood0003"}
    assert sorted(read_all_samples(out)) == ["vidGood0001", "vidGood0002", "vidGood0003"]
    assert all(json.loads(s["meta.json"])["decoder"] == "decord" for s in read_all_samples(out).values())

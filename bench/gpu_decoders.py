"""bench/gpu_extract.py part (6): ``--decoder`` on a GPU: the stage's own loop with each decoder.

For each decoder (pyav: FFmpeg's chain on the CPU, exact; torchcodec: NVDEC on the same GPU as the
models), the full extraction (``features.batching.extract_videos``, both backbones, random weights)
over the same videos: video-seconds/s per GPU, the decode and model shares of the summed thread
time, how many videos each decoder really decoded (torchcodec's silent CPU fallback is refused by
the stage and shows here as videos decoded by pyav), then what NVDEC changes: the S3D frames of the
first clip against pyav's (mean absolute difference per value, frames equal) and the rows of each
backbone on the same videos (relative L2 error, the minimum cosine per row). Nothing is assumed.
"""
from __future__ import annotations

import time

import numpy as np


def _run(jobs, backbones, device, batch, workers, decoder) -> tuple[dict, list]:
    from features.batching import extract_videos

    start = time.perf_counter()
    results = list(extract_videos(jobs, backbones, device=device, batch_size=batch, decode_workers=workers,
                                  decoder=decoder))
    wall = time.perf_counter() - start
    ok = [r for r in results if r.status == "ok"]
    ran: dict = {}
    for r in ok:
        ran[r.info.decoder] = ran.get(r.info.decoder, 0) + 1
    return {"wall": wall, "seconds": sum(r.info.duration for r in ok), "decode": sum(r.seconds_decode for r in results),
            "model": sum(r.seconds_model for r in results), "ran": ran,
            "failed": sorted({r.status for r in results if r.status != "ok"})}, results


def s3d_frames(path, decoder: str, device: str) -> np.ndarray:
    from features.decode import decode_all
    from shards.feature_spec import S3D

    info, windows = decode_all(str(path), [S3D], decoder=decoder, device=device)
    return windows["s3d"].permute(0, 2, 3, 4, 1).reshape(-1, 224, 224, 3).numpy()[:info.plans["s3d"].frames_out]


def bench_decoder_choice(jobs: list, backbones: dict, device: str, batch: int, workers: int) -> None:
    from features.extract_flags import torchcodec_problem

    print(f"\n(6) --decoder in the stage's loop on {device}: pyav (CPU, exact) vs torchcodec (NVDEC), "
          f"{workers} decode threads, batch {batch}")
    problem = torchcodec_problem()
    if problem:
        print(f"  torchcodec: not run: {problem}")
        return
    runs = {}
    for decoder in ("pyav", "torchcodec"):
        _run(jobs[:1], backbones, device, batch, workers, decoder)  # decoder set-up, untimed
        r, results = _run(jobs, backbones, device, batch, workers, decoder)
        runs[decoder] = results
        busy = r["decode"] + r["model"]
        print(f"  {decoder:10}: {r['seconds'] / r['wall']:8.1f} video-s/s; decode {100 * r['decode'] / busy:3.0f}% / "
              f"model {100 * r['model'] / busy:3.0f}% of thread time; decoded by "
              + ", ".join(f"{k} {n}" for k, n in sorted(r["ran"].items()))
              + (f"; failed: {', '.join(r['failed'])}" if r["failed"] else ""))
    a = s3d_frames(jobs[0].path, "pyav", "cpu")
    b = s3d_frames(jobs[0].path, "torchcodec", device)
    n = min(len(a), len(b))
    equal = sum(bool(np.array_equal(x, y)) for x, y in zip(a[:n], b[:n]))
    mad = float(np.abs(a[:n].astype(np.int16) - b[:n]).mean()) if n else 0.0
    print(f"  S3D frames of {jobs[0].key}: {len(b)} from torchcodec vs {len(a)} from pyav; equal {equal}/{n}; "
          f"mean |diff| {mad:.2f} per value (of 255)")
    for name in backbones:
        errs, cosines = [], []
        for x, y in zip(runs["pyav"], runs["torchcodec"]):
            if x.status != "ok" or y.status != "ok" or len(x.features[name]) != len(y.features[name]):
                continue
            fx, fy = x.features[name].astype(np.float64), y.features[name].astype(np.float64)
            errs.append(np.linalg.norm(fx - fy) / max(np.linalg.norm(fx), 1e-12))
            cos = (fx * fy).sum(1) / np.maximum(np.linalg.norm(fx, axis=1) * np.linalg.norm(fy, axis=1), 1e-12)
            cosines.append(float(cos.min()))
        if errs:
            print(f"  {name} rows, torchcodec vs pyav over {len(errs)} videos: relative L2 error mean {np.mean(errs):.4f}, "
                  f"max {np.max(errs):.4f}; min cosine per row {min(cosines):.5f}")
        else:
            print(f"  {name} rows: no video gave rows with both decoders")

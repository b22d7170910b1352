"""``mmp-import s3d-features``: the released HowTo100M S3D features as training shards.

The release is one ``{video_id}.npy`` per video, float, ``[seconds, 1024]``: S3D's pooled
``mixed_5c`` at one vector per second (16 fps, contiguous 16-frame chunks, 224x224): the
``s3d=released`` recipe of ``mmp-extract-features``, which gives the same rows for the same
video (ceil(frames at 16 fps / 16), the last chunk black-padded).
Each aligned video with a feature file becomes an ``mmp/`` sample: ``s3d.npy`` (float16),
``subs.json`` and ``meta.json`` with the feature spec. Arrays are loaded with
``allow_pickle=False``: a pickle or object array is refused, never run.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from shards.bounded import UnreadableInput, read_regular
from shards.codec import load_npy, npy_bytes
from shards.errors import UserError
from shards.layout import MMP, UnitFiles, completed_units
from shards.storage import as_path
from shards.reader import read_unit
from shards.feature_spec import S3D
from shards.samples import META_JSON, SUBS_JSON, MmpMeta, SubsJson, feature_member
from shards.versions import versions
from shards.writer import UnitWriter

from pipeline.runtime.budget import Budget, OverBudget
from pipeline.runtime.stage import Stage, Unit

log = logging.getLogger("mmp.import")

S3D_DIM = 1024
SCHEMA = pa.schema([("video_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
                    ("duration", pa.float64()), ("feature_rows", pa.int32()), ("feature_seconds", pa.float64()),
                    ("feature_dim", pa.int32()),
                    ("length_mismatch", pa.float64()), ("feature_file", pa.string()), ("aligned_unit", pa.int32())])


# A 3-hour video's features are 10,800 rows of 1024 float32: 44 MB. A file four times the float64
# size of that is no feature file of one video.
MAX_FEATURE_BYTES = 384 * 2**20


def load_feature_file(path: Path) -> tuple[np.ndarray, str]:
    """A ``[T, 1024]`` float array from a ``.npy`` file and the file's sha256, or ValueError saying why not.

    The file is read whole (a regular file of at most ``MAX_FEATURE_BYTES``: a FIFO or a device is
    refused, never read) and its header checked against what follows it before numpy allocates the
    array the header claims."""
    try:
        data = read_regular(path, MAX_FEATURE_BYTES, "feature file")
    except UnreadableInput as exc:
        raise ValueError(str(exc)) from None
    try:
        array = load_npy(data, path.name)
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path.name} is not a .npy array file ({type(exc).__name__}: {exc})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise ValueError(f"{path.name} is a {getattr(array, 'dtype', type(array))} array, not float")
    if array.ndim != 2 or array.shape[1] != S3D_DIM:
        raise ValueError(f"{path.name} has shape {tuple(array.shape)}, expected [seconds, {S3D_DIM}]")
    if array.shape[0] == 0:
        raise ValueError(f"{path.name} has no rows")
    if not np.isfinite(array).all():
        raise ValueError(f"{path.name} holds NaN or infinite values")
    return array, hashlib.sha256(data).hexdigest()  # of the bytes loaded, not of a second read


# The release's documented mapping: one row per second from the start (its README: 1m20s -> 80x1024).
# Extraction with the s3d=released recipe records its own start (n0 / 16 from the first frame,
# within 1/32 s of it) beside the same one-second rows.
RELEASED_ROW_TIMES = {"row_start_s": 0.0, "row_seconds": 1.0}


def s3d_spec() -> dict:
    spec = S3D.to_json()
    spec["weights"] = "s3d_howto100m.pth (MIL-NCE, HowTo100M)"
    spec["source"] = "released HowTo100M S3D features"
    return spec


class S3DFeatureImport(Stage):
    name = "mmp"
    layout = MMP
    schema = SCHEMA

    def __init__(self, features: Path, aligned: Path, out: Path, tolerance: float, hash_files: bool = True,
                 budget: Budget | None = None):
        self.features, self.aligned, self.out = Path(features), as_path(aligned), as_path(out)
        self.tolerance, self.hash_files = tolerance, hash_files
        self.budget = budget
        self._fingerprint: dict | None = None  # asked for twice per run; the files are read once

    def plan(self) -> list[Unit]:
        if not self.features.is_dir():
            raise UserError(f"--features {self.features} is not a directory of VIDEO_ID.npy files")
        units = completed_units(self.aligned, "aligned")
        if not units:
            raise UserError(f"--aligned {self.aligned} holds no completed aligned units; run mmp-align or mmp-import first")
        return [Unit(u.index, [u.index]) for u in units]

    def config(self) -> dict:
        return {"features": str(self.features), "aligned": str(self.aligned), "tolerance_seconds": self.tolerance}

    def built_from(self, unit: Unit) -> dict | None:
        from pipeline.runtime.lineage import unit_identity

        return {"aligned": unit_identity(UnitFiles(self.aligned, "aligned", unit.index))}

    def fingerprint(self) -> dict:
        """The aligned directory by its fingerprint and the feature files by content (each read once;
        on a re-run only the ones changed since, through the digests kept in the output)."""
        from pipeline.runtime.lineage import directory_identity, open_digest_cache, stage_identity

        if self._fingerprint is None:
            features = None
            if self.features.is_dir():  # else plan() says so in one sentence
                with open_digest_cache(self.out) as cache:
                    features = directory_identity(self.features, cache)
            self._fingerprint = {"aligned_identity": stage_identity(self.aligned), "features_identity": features}
        return self._fingerprint

    def process(self, unit: Unit, writer: UnitWriter) -> None:
        files = UnitFiles(self.aligned, "aligned", unit.index)
        rows, samples, tar_error = read_unit(files)
        if tar_error is not None:
            log.error("%s", tar_error)
        spec = s3d_spec()
        for arow in rows:
            vid = arow["video_id"]
            row = {"video_id": vid, "duration": arow.get("duration"), "aligned_unit": unit.index}
            sample = samples.get(vid)
            path = self.features / f"{vid}.npy"
            if sample is None:
                row.update(status="no_subtitles", error=f"no aligned subtitles ({arow.get('status')})")
            elif not path.exists() and not path.is_symlink():
                row.update(status="no_features", error=f"no {path.name} in {self.features}")
            else:
                try:
                    array, digest = self.within_budget(vid, load_feature_file, path)
                except ValueError as exc:
                    row.update(status="bad_features", error=str(exc))
                except OverBudget as exc:
                    row.update(status=exc.status, error=exc.what)
                else:
                    row.update(feature_rows=int(array.shape[0]), feature_dim=int(array.shape[1]),
                               feature_seconds=float(array.shape[0]) * RELEASED_ROW_TIMES["row_seconds"],
                               feature_file=path.name, status="ok")
                    subs = SubsJson.from_member(sample[SUBS_JSON])
                    duration = arow.get("duration")
                    if duration:
                        row["length_mismatch"] = round(array.shape[0] - float(duration), 3)
                        if abs(row["length_mismatch"]) > self.tolerance:
                            row["status"] = "length_mismatch"
                            row["error"] = (f"{array.shape[0]} feature rows for a {float(duration):.1f}s video "
                                            f"(kept; tolerance {self.tolerance:g}s)")
                    else:  # published captions carry no duration: the features must at least cover the speech
                        last = max((c[1] for lang in subs.langs() for c in subs.cues(lang)), default=0)
                        row["length_mismatch"] = round(array.shape[0] - last, 3)
                        if array.shape[0] < last - self.tolerance:
                            row["status"] = "length_mismatch"
                            row["error"] = (f"{array.shape[0]} feature rows but subtitles run to {last:.1f}s "
                                            f"(kept; tolerance {self.tolerance:g}s)")
                    meta = MmpMeta(video_id=vid, duration=duration, fps=None,
                                   features={"s3d": dict(spec, file=path.name,
                                                         sha256=digest if self.hash_files else None,
                                                         rows=int(array.shape[0]), **RELEASED_ROW_TIMES)},
                                   versions=versions())
                    writer.write_sample(vid, {feature_member("s3d"): npy_bytes(array.astype(np.float16)),
                                              SUBS_JSON: subs.to_member(), META_JSON: meta.to_member()})
            writer.add_row(row)
            self.video_done(row["status"])

    def progress_ok(self, status: str) -> bool:
        return status in ("ok", "length_mismatch")

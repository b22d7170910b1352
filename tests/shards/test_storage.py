"""Shards on an object store: a local S3-compatible server (moto) on 127.0.0.1, s3fs pointed at it.

Atomic publish without rename (local temporaries, one PUT per file, stats last),
completion by the stats object, readers, verification, resume and WebDataset, all
over ``s3://`` URLs; and ``mmp-crawl``/``mmp-align`` with their inputs and outputs there.
"""
from __future__ import annotations

import json
import os
import pickle
import uuid
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from pipeline.subtitles import stage as align_stage  # noqa: E402

from pipeline.crawl import stage as crawl
from shards.layout import ALIGNED, UnitFiles, completed_units  # noqa: E402
from shards.reader import iter_samples, iter_stage_samples, read_rows  # noqa: E402
from shards.storage import RemotePath, as_path, is_url, register_webdataset_schemes, staging_dir  # noqa: E402
from shards.verify import main as verify_main, verify_dir  # noqa: E402
from shards.writer import UnitWriter  # noqa: E402

from tests.pipeline.runtime.test_executors_equivalent import comparable_rows, tar_members  # noqa: E402


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 and the environment that points s3fs at it."""
    mp = pytest.MonkeyPatch()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "MMP_S3_ENDPOINT": f"http://{host}:{port}"}.items():
        mp.setenv(key, value)
    mp.delenv("MMP_STORAGE_OPTIONS", raising=False)
    import boto3

    boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1").create_bucket(Bucket="mmp")
    try:
        yield "s3://mmp"
    finally:
        server.stop()
        mp.undo()


@pytest.fixture
def prefix(s3):
    return f"{s3}/{uuid.uuid4().hex[:8]}"


def schema():
    import pyarrow as pa

    return pa.schema([("video_id", pa.string()), ("status", pa.string()), ("error", pa.string())])


def write_unit(directory, index, ids, fail=()):
    with UnitWriter(UnitFiles(directory, "aligned", index), schema(), ALIGNED) as w:
        for vid in ids:
            if vid in fail:
                w.add_row({"video_id": vid, "status": "no_subtitles", "error": "none"})
            else:
                w.write_sample(vid, {"subs.json": {"video_id": vid, "tracks": {}, "segments": []}})
                w.add_row({"video_id": vid, "status": "ok", "error": None})
    return w


def test_locations_local_file_urls_and_remote(tmp_path):
    assert as_path(str(tmp_path)) == tmp_path and as_path(f"file://{tmp_path}") == tmp_path
    assert not is_url(tmp_path) and not is_url(f"file://{tmp_path}") and is_url("s3://b/x")
    r = RemotePath("s3://bucket/data/", {"key": "secret"})
    assert str(r) == "s3://bucket/data" and (r / "crawl").name == "crawl" and (r / "a" / "b").parent == r / "a"
    assert "secret" not in repr(r) and "secret" not in str(r / "x")
    r2 = pickle.loads(pickle.dumps(r))  # travels to Ray workers: URL and options, no filesystem object
    assert r2 == r and r2.options == {"key": "secret"} and r2._fs is None
    assert UnitFiles("s3://bucket/data", "crawl", 3).stats == RemotePath("s3://bucket/data/crawl-000003.stats.json")


def test_unit_published_to_s3_reads_back_and_verifies(prefix):
    directory = as_path(prefix + "/aligned")
    w = write_unit(directory, 0, ["AAAAAAAAAAA", "BBBBBBBBBBB", "CCCCCCCCCCC"], fail={"CCCCCCCCCCC"})
    files = w.files
    assert files.remote and files.is_complete()
    assert [u.index for u in completed_units(prefix + "/aligned", "aligned")] == [0]
    assert [s["__key__"] for s in iter_samples(files.tar)] == ["AAAAAAAAAAA", "BBBBBBBBBBB"]
    assert [r["status"] for r in read_rows(files.parquet)] == ["ok", "ok", "no_subtitles"]
    stats = json.loads(files.stats.read_text())
    assert stats["rows"] == 3 and stats["samples"] == 2 and stats["files"]["tar"]["size"] == files.tar.stat().st_size
    assert files.temporaries() == []  # the local staging files were removed after upload
    report = verify_dir(directory)
    assert report.ok and report.units == 1 and report.samples == 2, report.problems
    assert [k for _, s in iter_stage_samples(prefix + "/aligned", "aligned") for k in [s["__key__"]]] == \
        ["AAAAAAAAAAA", "BBBBBBBBBBB"]


def test_killed_write_leaves_nothing_under_a_final_name_and_verify_catches_damage(prefix, capsys):
    directory = as_path(prefix + "/aligned")
    files = UnitFiles(directory, "aligned", 1)
    with pytest.raises(RuntimeError):
        with UnitWriter(files, schema(), ALIGNED) as w:
            w.write_sample("AAAAAAAAAAA", {"subs.json": {}})
            raise RuntimeError("killed mid-unit")
    assert not files.tar.exists() and not files.parquet.exists() and not files.is_complete()
    assert completed_units(directory, "aligned") == []
    # A crash between the uploads: tar published, stats not. The unit is incomplete, not damaged.
    w = UnitWriter(files, schema(), ALIGNED)
    w.__enter__()
    w.write_sample("AAAAAAAAAAA", {"subs.json": {}})
    w._tar.close()
    files.tar.upload(w._tar_tmp)
    assert files.temporaries(), "a killed attempt's local temporaries are found, for the retry to clear"
    report = verify_dir(directory)
    assert report.ok and any("no stats file" in n for n in report.incomplete)
    for tmp in files.temporaries():
        tmp.unlink()
    # A published unit whose tar is changed afterwards is reported.
    write_unit(directory, 2, ["DDDDDDDDDDD"])
    UnitFiles(directory, "aligned", 2).tar.write_bytes(b"x" * 512)
    assert verify_main([str(directory), "--quick"]) == 1
    assert "aligned-000002.tar size 512" in capsys.readouterr().out


def test_webdataset_reads_shards_from_s3(prefix):
    wds = pytest.importorskip("webdataset")
    write_unit(prefix + "/mmp", 0, ["AAAAAAAAAAA", "BBBBBBBBBBB"])
    write_unit(prefix + "/mmp", 1, ["CCCCCCCCCCC"])
    register_webdataset_schemes()
    urls = [str(u.tar) for u in completed_units(prefix + "/mmp", "aligned")]
    keys = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)]
    assert keys == ["AAAAAAAAAAA", "BBBBBBBBBBB", "CCCCCCCCCCC"]


def test_crawl_and_align_on_s3_resume_and_match_local(sample, tmp_path, prefix, capsys):
    data = prefix + "/data"
    args = sample.crawl_args(data, "--unit-size", "3", "--langs", "en,de")
    assert crawl.main(args) == 0
    crawled = completed_units(data + "/crawl", "crawl")
    assert len(crawled) >= 2 and not Path("s3:").exists()  # nothing written to a local look-alike
    assert verify_dir(data + "/crawl").ok
    # crawl on S3 -> aligned on S3
    aligned = prefix + "/aligned"
    align_args = ["--crawl", data + "/crawl", "--out", aligned, "--langs", "en,de", "--workers", "1", "--no-progress"]
    assert align_stage.main(align_args) == 0
    report = verify_dir(aligned)
    assert report.ok and report.units == len(crawled), report.problems
    # the same crawl, local -> aligned locally: same rows and samples
    local_crawl = tmp_path / "local"
    assert crawl.main(sample.crawl_args(local_crawl, "--unit-size", "3", "--langs", "en,de")) == 0
    local_aligned = tmp_path / "aligned"
    assert align_stage.main(["--crawl", str(local_crawl / "crawl"), "--out", str(local_aligned), "--langs", "en,de",
                             "--workers", "1", "--no-progress"]) == 0
    assert comparable_rows(aligned) == comparable_rows(local_aligned)
    assert tar_members(aligned) == tar_members(local_aligned)
    capsys.readouterr()
    # resume: every unit on S3 is complete, nothing is redone
    assert align_stage.main(align_args) == 0
    assert f"0 units written, {len(crawled)} already complete" in capsys.readouterr().out
    # one stats object gone: only that unit is redone
    UnitFiles(as_path(aligned), "aligned", 1).stats.unlink()
    assert align_stage.main(align_args) == 0
    assert f"1 units written, {len(crawled) - 1} already complete" in capsys.readouterr().out
    assert verify_dir(aligned).ok
    # local crawl -> aligned on S3 also works (mixed storage)
    mixed = prefix + "/aligned-mixed"
    assert align_stage.main(["--crawl", str(local_crawl / "crawl"), "--out", mixed, "--langs", "en,de",
                             "--workers", "1", "--no-progress"]) == 0
    assert comparable_rows(mixed) == comparable_rows(local_aligned)
    assert json.loads(as_path(mixed + "/config.json").read_text())["stage"] == "aligned"


def test_missing_s3_input_is_a_clear_error(prefix, capsys):
    assert align_stage.main(["--crawl", prefix + "/nothing", "--out", prefix + "/o", "--no-progress"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert crawl.main(["--videos", prefix + "/missing.csv", "--out", prefix + "/o"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_staging_dir_is_local(prefix):
    assert staging_dir().is_dir()
    assert UnitFiles(as_path(prefix), "crawl", 0).temp_directory.parent == staging_dir()


def test_ray_workers_publish_to_s3(sample, tmp_path, prefix):
    """Ray tasks (other processes, as on other nodes) write the units; the driver sees them complete."""
    ray = pytest.importorskip("ray")
    from pipeline.runtime.ray_executor import start_local_ray

    local = tmp_path / "local"
    assert crawl.main(sample.crawl_args(local, "--unit-size", "3", "--langs", "en,de")) == 0
    start_local_ray(2)  # started after the S3 environment is set: its workers inherit it, as nodes have theirs
    try:
        out = prefix + "/aligned-ray"
        assert align_stage.main(["--crawl", str(local / "crawl"), "--out", out, "--langs", "en,de",
                                 "--executor", "ray", "--workers", "2", "--no-progress"]) == 0
    finally:
        ray.shutdown()
    assert verify_dir(out).ok
    ref = tmp_path / "aligned"
    assert align_stage.main(["--crawl", str(local / "crawl"), "--out", str(ref), "--langs", "en,de",
                             "--workers", "1", "--no-progress"]) == 0
    assert comparable_rows(out) == comparable_rows(ref) and tar_members(out) == tar_members(ref)
    pids = {json.loads(u.stats.read_text())["pid"] for u in completed_units(out, "aligned")}
    assert pids and os.getpid() not in pids


def test_import_reads_captions_from_s3_and_publishes_there(tmp_path, prefix, monkeypatch):
    """mmp-import: caption files on the object store in, aligned shards out, partitions on local scratch."""
    from pipeline.release import importer

    from tests.pipeline.release.test_import import write_release

    monkeypatch.setenv("MMP_STAGING_DIR", str(tmp_path / "staging"))
    local = write_release(tmp_path / "release")
    remote = RemotePath(f"{prefix}/release")
    for path in sorted(local.glob("*.json")):
        (remote / path.name).upload(path)
    out = f"{prefix}/data"
    argv = ["multi-ht100m", "--captions", str(remote), "--out", f"{out}/aligned", "--partitions", "2", "--workers", "1",
            "--no-progress"]
    assert importer.main(argv) == 0
    assert verify_dir(as_path(f"{out}/aligned")).ok
    remote_rows = sorted((r["video_id"], r["status"], r["n_langs"])
                         for u in completed_units(as_path(f"{out}/aligned"), "aligned") for r in read_rows(u.parquet))
    assert importer.main(["multi-ht100m", "--captions", str(local), "--out", str(tmp_path / "local" / "aligned"),
                          "--partitions", "2", "--workers", "1", "--no-progress"]) == 0
    local_rows = sorted((r["video_id"], r["status"], r["n_langs"])
                        for u in completed_units(tmp_path / "local" / "aligned", "aligned") for r in read_rows(u.parquet))
    assert remote_rows == local_rows and remote_rows
    assert not any(RemotePath(f"{out}/aligned").glob(".import*"))  # scratch stayed local

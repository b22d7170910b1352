"""``--out`` is the stage's own directory in every command; an earlier run's ``--out DATA`` resumes
in ``DATA/crawl`` or ``DATA/aligned``; mmp-crawl and mmp-demo take --version and --config; a crawl
writes nothing under its output before it holds the output's lock."""
import errno
import json
import math
import pathlib
import uuid

import pytest

from pipeline.crawl import stage as crawl

from demo import run as demo

from pipeline.release import importer
from pipeline.runtime.cli import parse_args
from pipeline.crawl.config import build_parser
from pipeline.runtime.out_dir import stage_out
from shards.storage import as_path

from tests.pipeline.release.test_import import write_release
from tests.pipeline.runtime.test_runlock import live_pid, one_sentence, write_lock  # noqa: F401  (live_pid is a fixture)


def crawl_into(sample, out, *extra):
    """``sample.crawl_args`` with ``--out out`` as given, not a dataset root."""
    args = sample.crawl_args(out, *extra)
    args[args.index("--out") + 1] = str(out)
    return args


def unit_names(directory, prefix):
    return sorted(p.name for p in directory.glob(f"{prefix}-*"))


def stats_bytes(directory):
    return {p.name: p.read_bytes() for p in directory.glob("*.stats.json")}


# ---------------------------------------------------------------- mmp-crawl

def test_crawl_writes_its_units_straight_into_out(sample, tmp_path):
    crawl_dir = tmp_path / "d" / "crawl"
    assert crawl.main(crawl_into(sample, crawl_dir, "--langs", "en", "--unit-size", "4")) == 0
    assert unit_names(crawl_dir, "crawl") and (crawl_dir / "config.json").is_file()
    assert not (crawl_dir / "crawl").exists()
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["crawl"]


def test_an_old_dataset_root_resumes_the_crawl_in_it_with_one_note(sample, tmp_path, capsys):
    data = tmp_path / "d"
    assert crawl.main(crawl_into(sample, data / "crawl", "--langs", "en", "--unit-size", "4")) == 0
    before = stats_bytes(data / "crawl")
    (data / "crawl" / sorted(before)[0]).unlink()  # one unit left to do
    capsys.readouterr()
    assert crawl.main(crawl_into(sample, data, "--langs", "en", "--unit-size", "4")) == 0
    printed = capsys.readouterr()
    notes = [l for l in printed.err.splitlines() if "note:" in l]
    assert notes == [f"mmp-crawl: note: --out is the crawl directory itself now; resuming the crawl in "
                     f"{data / 'crawl'} (give --out {data / 'crawl'})"]
    assert f"1 units written, {len(before) - 1} already complete" in printed.out
    assert sorted(stats_bytes(data / "crawl")) == sorted(before)
    assert sorted(p.name for p in data.iterdir()) == ["crawl"]  # no new crawl in the root


def test_a_root_holding_its_own_run_or_nothing_is_used_as_given(tmp_path, capsys):
    fresh = tmp_path / "fresh"
    assert stage_out(fresh, "crawl", "mmp-crawl") == fresh
    both = tmp_path / "both"
    for d in (both, both / "crawl"):
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"stage": "crawl"}))
    assert stage_out(both, "crawl", "mmp-crawl") == both
    other = tmp_path / "other"  # OUT/aligned holds an align run, not a crawl
    (other / "crawl").mkdir(parents=True)
    (other / "crawl" / "config.json").write_text(json.dumps({"stage": "aligned"}))
    assert stage_out(other, "crawl", "mmp-crawl") == other
    assert capsys.readouterr().err == ""


def test_the_old_spelling_is_understood_on_an_fsspec_url(capsys):
    pytest.importorskip("fsspec")
    root = f"memory://mmp-{uuid.uuid4().hex[:8]}/data"
    (as_path(root) / "crawl" / "config.json").write_text(json.dumps({"stage": "crawl"}))
    assert str(stage_out(root, "crawl", "mmp-crawl")) == f"{root}/crawl"
    assert f"resuming the crawl in {root}/crawl" in capsys.readouterr().err


def test_an_out_that_is_a_file_is_one_sentence_naming_it(sample, tmp_path, capsys):
    path = tmp_path / "crawl"
    path.write_text("not a directory")
    assert crawl.main(crawl_into(sample, path, "--langs", "en")) == 2
    line = one_sentence(capsys.readouterr().err)
    assert line.startswith("mmp-crawl: error:") and str(path) in line and "not a directory" in line
    assert path.read_text() == "not a directory"


def test_a_read_only_out_is_one_sentence_naming_it(sample, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ro" / "crawl"
    real_mkdir = pathlib.Path.mkdir

    def read_only(self, *a, **kw):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    assert crawl.main(crawl_into(sample, out, "--langs", "en")) == 2
    line = one_sentence(capsys.readouterr().err)
    assert str(out) in line and "read-only" in line


def test_a_locked_crawl_is_refused_before_retry_failed_reopens_anything(sample, tmp_path, live_pid, capsys):
    crawl_dir = tmp_path / "d" / "crawl"
    sample.server.fault("/subs/smplPancak1/de.vtt", "429", sticky=True)
    assert crawl.main(crawl_into(sample, crawl_dir, "--langs", "en,de", "--unit-size", "3", "--retries", "0")) == 0
    before = stats_bytes(crawl_dir)
    assert before
    write_lock(crawl_dir, live_pid)
    capsys.readouterr()
    assert crawl.main(crawl_into(sample, crawl_dir, "--langs", "en,de", "--unit-size", "3", "--retries", "0",
                                 "--retry-failed")) == 2
    printed = capsys.readouterr()
    line = one_sentence(printed.err)
    assert f"pid {live_pid}" in line and "transient failures" not in printed.out
    assert stats_bytes(crawl_dir) == before and not list(crawl_dir.glob(".*.retry.json"))


def test_crawl_version_and_demo_version(capsys):
    for main, prog in ((crawl.main, "mmp-crawl"), (demo.main, "mmp-demo")):
        with pytest.raises(SystemExit) as exc:
            main(["--version"])
        assert exc.value.code == 0 and capsys.readouterr().out.startswith(f"{prog} (multi-howto100m) ")


def test_crawl_config_file_gives_switches_and_lists_and_flags_override_it(sample, tmp_path):
    args = crawl_into(sample, tmp_path / "x", "--langs", "en")
    for flag in ("--allow-host", "--no-request-limit"):
        i = args.index(flag)
        del args[i:i + (2 if flag == "--allow-host" else 1)]
    run = tmp_path / "run.yaml"
    run.write_text(f"unit-size: 2\nallow-host: ['{sample.host}']\nno-request-limit: true\n")
    for name, extra, size in (("two", [], 2), ("three", ["--unit-size", "3"], 3)):
        out = tmp_path / name
        argv = [*args, "--config", str(run), *extra]
        argv[argv.index("--out") + 1] = str(out)
        assert crawl.main(argv) == 0
        cfg = json.loads((out / "config.json").read_text())["config"]
        assert cfg["unit_size"] == size and cfg["allow_hosts"] == [sample.host]
        assert cfg["max_requests_per_second"] is None
        rows = _rows(out)  # one per distinct video
        assert len(list(out.glob("crawl-*.stats.json"))) == math.ceil(len(rows) / size)
        assert any(r["en_status"] == "ok" for r in rows)  # the stand-in was allowed
        assert all(r["en_status"] != "refused_url" for r in rows)


def _rows(directory):
    from tests.conftest import read_all_rows

    return read_all_rows(directory)


def test_crawl_config_file_takes_repeatable_flags_as_lists(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("proxy: ['http://p1:1', 'http://p2:2']\nextractor-args: ['youtube:player_client=mweb']\n"
                   "allow-host: [127.0.0.1:9]\nretry-failed: true\nno-adaptive-rate: true\n")
    args = parse_args(build_parser(), ["--videos", "v.txt", "--out", "o", "--config", str(run)])
    assert args.proxy == ["http://p1:1", "http://p2:2"] and args.extractor_args == ["youtube:player_client=mweb"]
    assert args.allow_host == ["127.0.0.1:9"] and args.retry_failed is True and args.adaptive_rate is False
    run.write_text("unit-sise: 2\n")
    with pytest.raises(SystemExit) as exc:
        parse_args(build_parser(), ["--config", str(run)])
    assert exc.value.code == 2


def test_demo_takes_a_config_file(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("steps: 3\nskip-model: true\n")
    args = parse_args(demo.build_parser(), ["--config", str(run), "--workers", "1"])
    assert args.steps == 3 and args.skip_model is True and args.workers == 1


# ---------------------------------------------------------------- mmp-import

def import_args(caps, out):
    return ["multi-ht100m", "--captions", str(caps), "--out", str(out), "--partitions", "3", "--workers", "1",
            "--no-progress"]


def test_import_writes_straight_into_out_and_an_old_root_resumes_there(tmp_path, capsys):
    caps = write_release(tmp_path / "release")
    data = tmp_path / "data"
    aligned = data / "aligned"
    assert importer.main(import_args(caps, aligned)) == 0
    assert unit_names(aligned, "aligned") and (aligned / ".import").is_dir() and not (aligned / "aligned").exists()
    before = stats_bytes(aligned)
    (aligned / sorted(before)[0]).unlink()
    capsys.readouterr()
    assert importer.main(import_args(caps, data)) == 0
    printed = capsys.readouterr()
    notes = [l for l in printed.err.splitlines() if "note:" in l]
    assert notes == [f"mmp-import: note: --out is the aligned directory itself now; resuming the import in "
                     f"{aligned} (give --out {aligned})"]
    assert f"1 units written, {len(before) - 1} already complete" in printed.out
    assert sorted(p.name for p in data.iterdir()) == ["aligned"]


def test_a_locked_import_is_refused_before_partitioning(tmp_path, live_pid, capsys):
    caps = write_release(tmp_path / "release")
    aligned = tmp_path / "aligned"
    write_lock(aligned, live_pid)
    assert importer.main(import_args(caps, aligned)) == 2
    assert f"pid {live_pid}" in one_sentence(capsys.readouterr().err)
    assert not (aligned / ".import").exists() and not unit_names(aligned, "aligned")

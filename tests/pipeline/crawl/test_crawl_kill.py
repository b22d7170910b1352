"""SIGKILL in the middle of a crawl, then a re-run: nothing lost, nothing twice, nothing partial."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shards.layout import UNIT_RE
from shards.verify import verify_dir

from tests.conftest import assert_final_files_whole, read_all_rows


def test_sigkill_then_rerun_loses_nothing(sample, tmp_path):
    ids, videos = sample.many_videos(48, "kill")
    out = tmp_path / "data"
    crawl_dir = out / "crawl"
    cmd = [sys.executable, "-m", "pipeline.crawl.stage", "--videos", str(videos), "--out", str(crawl_dir),
           "--info-json", str(sample.info), "--budget-dir", str(tmp_path / "budget"), "--langs", "en,de,fr",
           "--unit-size", "4", "--workers", "2", "--sleep-subtitles", "0.03", "--no-progress",
           "--no-request-limit", "--allow-host", sample.host]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parents[3])
    deadline = time.time() + 60
    while time.time() < deadline and len(list(crawl_dir.glob("*.stats.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_first = {p.name: p.read_bytes() for p in crawl_dir.glob("*.stats.json")}
    assert 3 <= len(done_first) < 12, "the kill should land mid-run"
    # no partial file under a final name: complete units verify, and a unit the kill caught between
    # its renames (tar or parquet in place, stats.json not yet) holds whole files and is redone below
    report = verify_dir(crawl_dir)
    assert report.ok, report.problems
    assert_final_files_whole(crawl_dir)

    result = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[3], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stdout
    rows = read_all_rows(crawl_dir)
    assert sorted(r["video_id"] for r in rows) == sorted(ids)  # each exactly once
    assert all(r["status"] == "ok" for r in rows)
    for name, content in done_first.items():  # completed units were not redone
        assert (crawl_dir / name).read_bytes() == content
    assert len([p for p in crawl_dir.glob("*.stats.json") if UNIT_RE.match(p.name)]) == 12
    assert verify_dir(crawl_dir).ok
    assert not [p for p in crawl_dir.iterdir() if ".tmp" in p.name]

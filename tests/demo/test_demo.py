"""`make demo` runs every stage, end to end, offline: crawl -> align -> import -> extract ->
prepare -> pre-train -> fine-tune -> eval -> stats. Here with one backbone (the CPU cost
of S3D is the demo's largest) and a few steps; `make demo` runs both backbones."""
import json

from demo import run as demo
from shards.verify import verify_dir


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--fresh", "--workers", "2", "--backbones", "r21d", "--steps", "4"]) == 0
    printed = capsys.readouterr().out
    assert "[demo] done" in printed and str(out / "aligned") in printed
    assert "RANDOM WEIGHTS" in printed and "TINY RANDOM BERT" in printed
    for stage in ("crawl", "aligned", "imported/aligned", "mmp", "msrvtt"):
        report = verify_dir(out / stage)
        assert report.ok and report.units >= 1, (stage, report.problems)
    results = json.loads((out / "runs" / "eval.json").read_text())
    assert set(results["languages"]) >= {"en", "de", "zh"}
    assert all(0 <= v["R@1"] <= 100 for v in results["languages"].values())
    html = (out / "reports" / "report.html").read_text()
    assert "Table 8" in html and "<img" in html and "http://" not in html.split("<body", 1)[1][:200]
    assert f"[demo] report: {out / 'reports' / 'report.html'}" in printed

    assert demo.main(["--out", str(out), "--workers", "1", "--backbones", "r21d", "--steps", "4"]) == 0  # resumes
    assert "already complete" in capsys.readouterr().out


def test_demo_stops_at_a_failing_stage_and_says_which(tmp_path, capsys, monkeypatch):
    from pipeline.subtitles import stage as align_stage

    monkeypatch.setattr(align_stage, "main", lambda argv: 3)
    assert demo.main(["--out", str(tmp_path / "demo"), "--fresh", "--workers", "1", "--skip-model"]) == 3
    captured = capsys.readouterr()
    assert "[demo] mmp-align failed with exit code 3" in captured.err
    assert "[demo] done" not in captured.out
    assert not (tmp_path / "demo" / "reports").exists()

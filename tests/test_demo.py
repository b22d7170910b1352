"""`make demo` runs every stage that exists, end to end, offline."""
from pipeline import demo
from shards.verify import verify_dir


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--fresh", "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "[demo] done" in printed and str(out / "aligned") in printed
    for stage in ("crawl", "aligned", "imported/aligned"):
        report = verify_dir(out / stage)
        assert report.ok and report.units >= 1, (stage, report.problems)
    assert demo.main(["--out", str(out), "--workers", "1"]) == 0  # a second run resumes
    assert "already complete" in capsys.readouterr().out

"""mmp-stats over damaged or partial input: a stage still running, missing or corrupt files, old schemas, wrong types."""
from __future__ import annotations

import json
import os
import re

import pytest

pytest.importorskip("matplotlib")

from pipeline.stats import stage as mstats  # noqa: E402
from shards.rows import aligned_schema  # noqa: E402
from shards.layout import ALIGNED, UnitFiles  # noqa: E402
from tests.pipeline.stats.test_stats import (LANGS, aligned_row, issue_text, run_stats,  # noqa: E402,F401
                                             synthetic, write_unit)


def test_partial_dataset_while_a_stage_runs(synthetic, tmp_path):
    crawl = synthetic / "crawl"
    UnitFiles(crawl, "crawl", 1).stats.unlink()  # unit 1 still being written
    (crawl / ".crawl-000002.tar.tmp-1234abcd").write_bytes(b"half a tar")
    _, doc = run_stats(synthetic, tmp_path)
    warnings = issue_text(doc, "warning")
    assert "1 unit without a stats file" in warnings and "crawl-000001" in warnings
    assert "1 temporary file of units being written" in warnings
    assert doc["crawl"][0]["videos"] == 4  # only the completed unit counts
    assert not [i for i in doc["issues"] if i["level"] == "error"]


def test_missing_parquet_beside_its_tar(synthetic, tmp_path):
    UnitFiles(synthetic / "aligned", "aligned", 1).parquet.unlink()
    out, doc = run_stats(synthetic, tmp_path)
    errors = issue_text(doc, "error")
    assert "1 complete unit without a parquet file beside the tar" in errors and "aligned-000001" in errors
    assert doc["aligned"][0]["videos"] == 4
    assert "aligned-000001" in (out / "report.html").read_text()


def test_corrupt_parquet(synthetic, tmp_path):
    path = UnitFiles(synthetic / "crawl", "crawl", 0).parquet
    path.write_bytes(b"PAR1" + os.urandom(200))
    out, doc = run_stats(synthetic, tmp_path)
    errors = issue_text(doc, "error")
    assert "1 unreadable parquet file" in errors and "crawl-000000.parquet" in errors and "4 rows lost" in errors
    assert doc["crawl"][0]["videos"] == 2
    assert "crawl-000000.parquet" in (out / "report.md").read_text()


def test_truncated_parquet(synthetic, tmp_path):
    path = UnitFiles(synthetic / "mmp", "mmp", 0).parquet
    path.write_bytes(path.read_bytes()[:-40])
    _, doc = run_stats(synthetic, tmp_path)
    assert "mmp-000000.parquet" in issue_text(doc, "error")
    assert doc["mmp"][0]["videos"] == 0


def test_schema_from_an_older_version(synthetic, tmp_path):
    """An aligned unit without coverage columns and a crawl unit with attempts as text still count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    old = [f for f in aligned_schema(LANGS) if not f.name.endswith(("_coverage", "_seconds"))]
    write_unit(synthetic / "aligned", "aligned", 2, pa.schema(old), ALIGNED,
               [{k: v for k, v in aligned_row("vidCCCCCCC1", LANGS).items() if not k.endswith(("_coverage", "_seconds"))}])
    files = UnitFiles(synthetic / "crawl", "crawl", 1)
    table = pq.read_table(files.parquet)
    table = table.set_column(table.schema.get_field_index("attempts"), "attempts",
                             pa.array(["two", "one"], pa.string()))
    pq.write_table(table, files.parquet)
    out, doc = run_stats(synthetic, tmp_path)
    warnings = issue_text(doc, "warning")
    assert "older schema" in warnings and "en_coverage" in warnings and "aligned-000002" in warnings
    assert "attempts (type string)" in warnings
    en = doc["aligned"][0]["per_lang"]["en"]
    assert en["videos"] == 5 and en["coverage"]["n"] == 4  # the old unit counts, without coverage
    assert doc["crawl"][0]["videos"] == 6


def test_empty_dataset(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out, doc = run_stats(empty, tmp_path)
    assert "no stage outputs found" in issue_text(doc, "error")
    assert doc["crawl"] == doc["aligned"] == doc["mmp"] == []
    assert "no stage outputs found" in (out / "report.html").read_text()


def test_stage_directory_without_completed_units(tmp_path):
    crawl = tmp_path / "data" / "crawl"
    crawl.mkdir(parents=True)
    (crawl / "crawl-000000.tar").write_bytes(b"")
    (crawl / "crawl-000000.parquet").write_bytes(b"")
    _, doc = run_stats(tmp_path / "data", tmp_path)
    assert "no completed crawl unit yet" in issue_text(doc, "warning")


def test_unreadable_stats_file_and_missing_tar(synthetic, tmp_path):
    UnitFiles(synthetic / "mmp", "mmp", 0).stats.write_text("{oops")
    UnitFiles(synthetic / "crawl", "crawl", 0).tar.unlink()
    _, doc = run_stats(synthetic, tmp_path)
    errors = issue_text(doc, "error")
    assert "1 unreadable stats file" in errors and "mmp-000000" in errors
    assert "without a tar file" in errors and "crawl-000000" in errors
    assert doc["mmp"][0]["videos"] == 3


def test_stats_file_with_fields_of_the_wrong_type(synthetic, tmp_path):
    files = UnitFiles(synthetic / "crawl", "crawl", 1)
    doc = json.loads(files.stats.read_text())
    doc.update(files=[], counts={"status/ok": "many", "requests": 3}, started="yesterday", rows=-1)
    files.stats.write_text(json.dumps(doc))
    _, doc = run_stats(synthetic, tmp_path)
    warnings = issue_text(doc, "warning")
    assert re.search(r"crawl-000001 \((files|counts|rows|started)(, (files|counts|rows|started)){3}\)", warnings), warnings
    assert len(doc["crawl"][0]["runs"]) == 1 and doc["crawl"][0]["videos"] == 6  # rows still come from the parquet
    assert doc["shards"][0]["units_complete"] == 2


def test_user_errors_are_one_line(tmp_path, capsys):
    assert mstats.main(["--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and "Traceback" not in err
    assert mstats.main(["--data", str(tmp_path), "--tokenizer", str(tmp_path / "missing")]) == 2
    assert mstats.main(["--data", "s3://bucket/data"]) == 2
    assert "local (or mounted) directory" in capsys.readouterr().err

"""mmp-import on hostile release files: a bad record is that video's row, memory stays flat."""
import json

from pipeline.release import importer
from pipeline.release.captions import StreamReport, iter_release
from tests.conftest import read_all_rows
from tests.watchdog import call_main, run_bounded

from tests.pipeline.release.test_import import args, release_doc


def _above_now(mb: float) -> float:
    """A memory bound ``mb`` above what this process holds now: the watched child is a fork of it
    and starts with its pages resident (torch, once another test imported it, is hundreds of MB)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20 + mb


def _write(path, doc_text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc_text)
    return path


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_value_nested_50000_deep_is_its_videos_row_and_memory_stays_flat(tmp_path):
    good = release_doc("en", ["goodVideo01", "goodVideo02"])
    body = json.dumps(good)[1:-1]
    text = '{"deepVideo01": {"text": ' + _deep(50_000) + ', "start": [], "end": []}, ' + body + "}"
    caps = _write(tmp_path / "release" / "how2_en.json", text).parent
    code, out, err = call_main(importer.main, ["multi-ht100m", "--captions", str(caps), "--langs", "en",
                                               "--out", str(tmp_path / "aligned"), *args()],
                               seconds=60, memory_mb=_above_now(400))
    assert code == 0, err
    rows = {r["video_id"]: r for r in read_all_rows(tmp_path / "aligned")}
    assert rows["goodVideo01"]["status"] == "ok" and rows["goodVideo02"]["status"] == "ok"
    assert rows["deepVideo01"]["status"] == "parse_error"
    assert "nested deeper than" in rows["deepVideo01"]["en_error"]


def test_a_file_whose_nesting_never_closes_is_one_error_for_that_file(tmp_path):
    path = _write(tmp_path / "how2_en.json", '{"goodVideo01": {"text": ["a"], "start": [0], "end": [1]}, '
                  '"deepVideo01": ' + "[" * 200_000)

    def stream():
        report = StreamReport()
        videos = [vid for vid, _ in iter_release(path, report)]
        return videos, report.truncated, report.error

    videos, truncated, error = run_bounded(stream, seconds=30, memory_mb=_above_now(300))
    assert videos == ["goodVideo01"] and truncated
    assert "how2_en.json" in error


def test_bad_ids_and_values_are_rows_and_the_rest_of_the_unit_lands(tmp_path):
    doc = release_doc("en", ["goodVideo01", "goodVideo02"])
    doc["../../etc/x"] = doc["goodVideo01"]
    doc["goodVideo0\n"] = doc["goodVideo01"]
    doc["numbVideo01"] = {"text": ["a", "b"], "start": ["x", 1.0], "end": [{"a": 1}, 2.0]}
    doc["listVideo01"] = [1, 2, 3]
    doc["textVideo01"] = {"text": [["nested"], {"o": 1}, 3, "fine"], "start": [0, 1, 2, 3], "end": [1, 2, 3, 4]}
    doc["hugeVideo01"] = {"text": ["a"], "start": [1e308 * 10], "end": [10 ** 400]}
    doc["farVideo001"] = {"text": ["a", "b"], "start": [0, 1e300], "end": [1, 1e300]}
    doc["goodVideo03"] = doc["goodVideo01"]  # after the number the parser cannot hold
    caps = _write(tmp_path / "release" / "how2_en.json", json.dumps(doc)).parent
    code, out, err = call_main(importer.main, ["multi-ht100m", "--captions", str(caps), "--langs", "en",
                                               "--out", str(tmp_path / "aligned"), "--partitions", "1",
                                               "--workers", "1", "--no-progress"],
                               seconds=60, memory_mb=_above_now(600))
    assert code == 0, err
    rows = {r["video_id"]: r for r in read_all_rows(tmp_path / "aligned")}
    assert rows["goodVideo01"]["status"] == "ok" and rows["goodVideo02"]["status"] == "ok"
    for bad in ("../../etc/x", "goodVideo0\n"):
        assert rows[bad]["status"] == "invalid_id" and "11 characters" in rows[bad]["error"]
    assert rows["listVideo01"]["status"] == "parse_error"
    assert rows["numbVideo01"]["status"] == "ok"  # the one good cue kept, the bad one recorded
    assert rows["textVideo01"]["status"] == "ok"
    assert rows["hugeVideo01"]["status"] == "no_text"  # its one cue had no readable time
    assert rows["farVideo001"]["status"] == "ok" and rows["goodVideo03"]["status"] == "ok"
    assert "ends early" not in err


def test_a_number_too_large_to_parse_costs_only_its_value(tmp_path):
    path = _write(tmp_path / "how2_en.json", '{"bigVideo001": {"text": ["a"], "start": [' + "9" * 400 + '], '
                  '"end": [1e999]}, "goodVideo01": {"text": ["b"], "start": [0], "end": [1]}}')
    report = StreamReport()
    got = dict(iter_release(path, report))
    assert not report.truncated and report.videos == 2
    assert got["bigVideo001"] == {"text": ["a"], "start": [None], "end": [None]}
    assert got["goodVideo01"]["text"] == ["b"]


def test_feature_files_that_lie_or_never_end_are_their_videos_rows(tmp_path):
    import os

    import numpy as np

    from tests.pipeline.release.test_import import write_release
    from tests.conftest import read_all_rows as rows_of

    ids = ["goodVideo01", "fifoVideo01", "zeroVideo01", "lyingVideo1", "hugeVideo01"]
    caps = write_release(tmp_path / "release", langs=["en"], ids=ids)
    aligned = tmp_path / "data" / "aligned"
    assert importer.main(["multi-ht100m", "--captions", str(caps), "--langs", "en", "--out", str(aligned),
                          *args()]) == 0
    feats = tmp_path / "feats"
    feats.mkdir()
    np.save(feats / "goodVideo01.npy", np.zeros((20, 1024), np.float32))
    os.mkfifo(feats / "fifoVideo01.npy")
    os.symlink("/dev/zero", feats / "zeroVideo01.npy")
    header = {"descr": "<f2", "fortran_order": False, "shape": (10**9, 1024)}  # 2 TB claimed, 64 bytes given
    with open(feats / "lyingVideo1.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(64))
    with open(feats / "hugeVideo01.npy", "wb") as f:  # sparse: larger than any video's features
        f.truncate(3 << 30)
    mmp = tmp_path / "data" / "mmp"
    code, out, err = call_main(importer.main, ["s3d-features", "--features", str(feats), "--aligned", str(aligned),
                                               "--out", str(mmp), "--workers", "1", "--no-progress"],
                               seconds=60, memory_mb=_above_now(600))
    assert code == 0, err
    rows = {r["video_id"]: r for r in rows_of(mmp)}
    assert rows["goodVideo01"]["status"] in ("ok", "length_mismatch")
    assert rows["fifoVideo01"]["status"] == "bad_features" and "FIFO" in rows["fifoVideo01"]["error"]
    assert rows["zeroVideo01"]["status"] == "bad_features" and "character device" in rows["zeroVideo01"]["error"]
    assert rows["lyingVideo1"]["status"] == "bad_features" and "claims" in rows["lyingVideo1"]["error"]
    assert rows["hugeVideo01"]["status"] == "bad_features" and "larger than" in rows["hugeVideo01"]["error"]


def test_a_feature_file_rewritten_at_the_same_size_is_noticed(tmp_path, capsys):
    import os
    import time

    import numpy as np

    from tests.pipeline.release.test_import import write_release

    caps = write_release(tmp_path / "release", langs=["en"], ids=["goodVideo01", "goodVideo02"])
    aligned = tmp_path / "data" / "aligned"
    assert importer.main(["multi-ht100m", "--captions", str(caps), "--langs", "en", "--out", str(aligned),
                          *args()]) == 0
    feats = tmp_path / "feats"
    feats.mkdir()
    for vid in ("goodVideo01", "goodVideo02"):
        np.save(feats / f"{vid}.npy", np.zeros((20, 1024), np.float32))
    argv = ["s3d-features", "--features", str(feats), "--aligned", str(aligned), "--out", str(tmp_path / "mmp"),
            "--workers", "1", "--no-progress"]
    assert importer.main(argv) == 0
    assert importer.main(argv) == 0  # nothing changed: resumes
    path = feats / "goodVideo02.npy"
    st = path.stat()
    time.sleep(0.05)
    np.save(path, np.ones((20, 1024), np.float32))  # same size, and the old mtime put back
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    capsys.readouterr()
    assert importer.main(argv) == 2
    assert "different features (by content)" in capsys.readouterr().err


def test_a_lone_surrogate_escape_costs_only_its_string(tmp_path):
    path = _write(tmp_path / "how2_en.json",
                  r'{"\ud800VideoAAAA": {"text": ["a"], "start": [0], "end": [1]}, '
                  r'"goodVideo01": {"text": ["x \udfff y", "\ud83d\ude00 pair", "\\ud800 not an escape"], '
                  r'"start": [0, 1, 2], "end": [1, 2, 3]}, '
                  '"goodVideo02": {"text": ["b"], "start": [0], "end": [1]}}')
    report = StreamReport()
    got = dict(iter_release(path, report))
    assert not report.truncated and report.videos == 3
    assert [k for k in got if k.endswith("VideoAAAA")]  # its key read with a stand-in character
    assert got["goodVideo01"]["text"] == ["x \ufffd y", "\U0001F600 pair", "\\ud800 not an escape"]
    assert got["goodVideo02"]["text"] == ["b"]


def test_a_fifo_among_the_caption_files_is_one_sentence(tmp_path):
    import os

    from tests.pipeline.release.test_import import write_release

    caps = write_release(tmp_path / "release", langs=["en"], ids=["goodVideo01"])
    os.mkfifo(caps / "how2_de.json")
    code, out, err = call_main(importer.main, ["multi-ht100m", "--captions", str(caps), "--langs", "en,de",
                                               "--out", str(tmp_path / "aligned"), *args()],
                               seconds=30, memory_mb=_above_now(300))
    assert code == 2 and "how2_de.json is a FIFO" in err and "Traceback" not in err


def test_values_are_built_as_json_has_them_and_a_bounded_one_is_skipped_whole():
    import io

    import ijson

    from pipeline.release.stream import Unusable, build_value

    def events(doc):
        return ijson.basic_parse(io.BytesIO(json.dumps(doc).encode()), use_float=True)

    for doc in ({"a": [1.5, {"b": [None, True, "x"]}, []], "c": {}}, [], {}, 3.5, "s", [[[]]], {"k": {"k": {"k": 1}}}):
        assert build_value(events(doc)) == doc
    stream = events([[[[1]]], 2])
    assert build_value(stream, max_depth=3) == Unusable("the value is nested deeper than 3 levels")
    assert list(stream) == []  # consumed to its end, the stream goes on after it
    stream = events([[1, 2, 3], [4]])
    assert build_value(stream, max_scalars=3) == Unusable("the value holds more than 3 numbers and strings")
    assert list(stream) == []

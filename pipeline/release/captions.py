"""Reading the published caption files as streams, and splitting them by video.

The Multi-HT100M release is nine ``how2_{lang}.json`` files and HowTo100M's English
is ``caption.json`` / ``raw_caption.json``, each one JSON object
``{video_id: {"text": [...], "start": [...], "end": [...]}}`` of up to tens of GB.
They are never loaded whole: ``iter_release`` (``pipeline.release.stream``) walks one
and yields a video at a time, each value bounded in depth and size; ``partition_language``
writes each video's cues to one of P parquet partitions chosen by a hash of its id, a row
group at a time. A join then reads one
partition of every language at once: memory is bounded by one partition, whatever
the files' sizes and key orders.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from shards.storage import as_path
from shards.writer import atomic_write_json

from pipeline.release.stream import ReleaseError, StreamReport, Unusable, _NanAsNull, iter_release  # noqa: F401

log = logging.getLogger("mmp.release")

PART_SCHEMA = pa.schema([("video_id", pa.string()), ("start", pa.list_(pa.float64())),
                         ("end", pa.list_(pa.float64())), ("text", pa.list_(pa.string())),
                         ("problem", pa.string())])
# A few very common words per language: enough to notice a file labelled with the wrong
# language (an early release labelled its Spanish file "sw").
_STOPWORDS = {
    "en": {"the", "and", "to", "you", "of", "it", "is"}, "de": {"und", "die", "der", "das", "ist", "nicht", "zu"},
    "fr": {"le", "la", "et", "les", "de", "vous", "est"}, "es": {"el", "la", "que", "de", "y", "los", "es"},
    "cs": {"a", "je", "to", "na", "se", "že", "v"}, "sw": {"na", "ya", "kwa", "wa", "ni", "za", "hii"},
    "vi": {"và", "là", "của", "có", "không", "một", "các"}, "ru": {"и", "в", "не", "на", "что", "я", "это"},
}
_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORD_LANGS: dict[str, list] = {}
for _lang, _words in _STOPWORDS.items():
    for _w in _words:
        _STOPWORD_LANGS.setdefault(_w, []).append(_lang)
_ONLY_STR = {str}


PARTITION_BYTES = 64 * 1024 * 1024
MAX_PARTITIONS = 4096


def auto_partitions(files: list, target_bytes: int = PARTITION_BYTES) -> int:
    """Partitions for a set of caption files: one per ``target_bytes`` of JSON (all languages).

    A partition is one join unit, so this keeps a unit's memory near what ~64 MB of
    captions needs (a few hundred MB of Python objects) whatever the release's size:
    a 2 GB import gets 30 units, the full release (tens of GB) a few hundred to a thousand.
    """
    total = sum(as_path(f).stat().st_size for f in files if as_path(f).is_file())
    return max(1, min(MAX_PARTITIONS, math.ceil(total / target_bytes)))


def partition_of(video_id: str, partitions: int) -> int:
    """Stable across runs and machines (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.blake2b(video_id.encode(), digest_size=8).digest(), "big") % partitions


def check_cues(value) -> tuple[list, list, list, str | None]:
    """Validate one video's ``{"text", "start", "end"}``; keep what can be kept, say what was not.

    A value with nothing to keep (not an object of three lists, or ``Unusable``) gives ``None`` lists
    and the reason: that video's track is a ``parse_error``.
    """
    if isinstance(value, Unusable):
        return None, None, None, value.reason
    if not isinstance(value, dict):
        return None, None, None, f"the value is a {_json_type(value)}, not an object with text, start and end"
    text, start, end = value.get("text"), value.get("start"), value.get("end")
    if not all(isinstance(x, list) for x in (text, start, end)):
        return None, None, None, "text, start and end must all be lists"
    if len(text) == len(start) == len(end):
        # the common case, checked in C: every time a finite, non-negative number, every text a string
        import numpy as np

        try:
            times = np.array([start, end], dtype=np.float64)
        except (TypeError, ValueError):
            times = None
        if times is not None and np.isfinite(times).all() and (times >= 0).all() \
                and (not text or set(map(type, text)) == _ONLY_STR):
            return start, end, text, None
    problems = []
    n = min(len(text), len(start), len(end))
    if not (len(text) == len(start) == len(end)):
        problems.append(f"lists of different lengths (text {len(text)}, start {len(start)}, end {len(end)}); "
                        f"kept the first {n}")
    out_s, out_e, out_t = [], [], []
    bad_times = 0
    for s, e, t in zip(start[:n], end[:n], text[:n]):
        try:
            s, e = float(s), float(e)
        except (TypeError, ValueError):
            bad_times += 1
            continue
        if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e < 0:
            bad_times += 1
            continue
        out_s.append(s)
        out_e.append(e)
        out_t.append(t if isinstance(t, str) else ("" if t is None else str(t)))
    if bad_times:
        problems.append(f"{bad_times} cues with negative, NaN or non-numeric times dropped")
    return out_s, out_e, out_t, "; ".join(problems) or None


def _json_type(value) -> str:
    return {list: "list", str: "string", float: "number", int: "number", bool: "boolean"}.get(type(value), "null")


@dataclass
class LanguageReport:
    lang: str
    files: list
    videos: int = 0
    problems: int = 0
    truncated: list = field(default_factory=list)
    script_doubt: str | None = None
    stopword_votes: dict = field(default_factory=dict)
    words_sampled: int = 0
    input: str | None = None  # the files' content identity (pipeline.runtime.lineage)
    language_check: str = "stop words"


def _vote_language(texts: list, votes: dict) -> int:
    """Count the common words of each language in a video's first texts; returns the words read."""
    words = _WORD.findall(" ".join(texts[:20]).lower())
    for word in words:
        for lang in _STOPWORD_LANGS.get(word, ()):
            votes[lang] = votes.get(lang, 0) + 1
    return len(words)


# A language's few most common words are a tenth or more of its running text. Text with under
# MIN_OWN_SHARE of its own language's and under MIN_DOUBT_SHARE of any other's has lost its stop
# words (HowTo100M's caption.json): the few left ("die" in "die cast") say nothing.
MIN_OWN_SHARE = 0.01
MIN_DOUBT_SHARE = 0.05


def check_language(report: LanguageReport) -> None:
    """Set ``report.script_doubt`` when the sampled text reads like another language, or record in
    ``report.language_check`` that the check could not be made."""
    lang, votes, words = report.lang, report.stopword_votes, max(1, report.words_sampled)
    if lang not in _STOPWORDS or not report.words_sampled:
        report.language_check = "not checked: no common-word list for this language" if report.words_sampled \
            else "not checked: no text sampled"
        return
    own = votes.get(lang, 0)
    if own < MIN_OWN_SHARE * words and max(votes.values(), default=0) < MIN_DOUBT_SHARE * words:
        report.language_check = (f"not checked: {sum(votes.values())} common words of any language in "
                                 f"{report.words_sampled} sampled, so the text has lost its stop words "
                                 "(as HowTo100M's caption.json has)")
        log.info("%s: %s", lang, report.language_check)
        return
    best = max(votes, key=votes.get)
    if best != lang and votes[best] > 3 * max(1, own) and votes[best] >= MIN_DOUBT_SHARE * words:
        report.script_doubt = (f"the {lang} captions read like {best} (common {best} words "
                               f"{votes[best]} times, {lang} words {own} times, in {report.words_sampled})")
        log.warning("%s", report.script_doubt)


def partition_language(lang: str, files: list[Path], directory: Path, partitions: int,
                       rows_per_group: int = 2000, max_buffered_cues: int = 1_000_000,
                       progress=None, identity: str | None = None) -> LanguageReport:
    """Pass 1 for one language: stream its files into ``directory/{lang}/part-NNNNN.arrow``.

    Partitions are scratch files read once by the join, so they are Arrow IPC files (no
    encoding or compression to pay for). Each partition gets its own writer; rows are
    buffered per partition and written a record batch at a time, and every buffer is
    flushed whenever ``max_buffered_cues`` cues are held, so memory does not grow with
    the file.
    Finished when ``directory/{lang}.done.json`` exists (written last).
    """
    out = Path(directory) / lang
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*"):
        stale.unlink()
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    sinks: dict[int, pa.OSFile] = {}
    # Per partition, one list per column (cheaper to hand to Arrow than a dict per row).
    buffers: dict[int, tuple[list, list, list, list, list]] = {}
    held: dict[int, int] = {}  # cues buffered per partition
    report = LanguageReport(lang, [str(f) for f in files], input=identity)

    def flush(p: int) -> None:
        columns = buffers.pop(p, None)
        held.pop(p, None)
        if not columns or not columns[0]:
            return
        if p not in writers:
            sinks[p] = pa.OSFile(str(out / f".part-{p:05d}.arrow.tmp"), "wb")
            writers[p] = pa.ipc.new_file(sinks[p], PART_SCHEMA)
        arrays = [pa.array(col, type=f.type) for col, f in zip(columns, PART_SCHEMA)]
        writers[p].write_table(pa.Table.from_arrays(arrays, schema=PART_SCHEMA))

    # The buffers hold up to max_buffered_cues cues as Python objects. With the cyclic GC
    # on, every few thousand allocations would rescan them all; nothing here makes
    # reference cycles, so it is off for the pass (and back on whatever happens).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _stream_files(files, report, buffers, held, flush, partitions, rows_per_group, max_buffered_cues, progress)
    finally:
        if gc_was_enabled:
            gc.enable()
    for p in list(buffers):
        flush(p)
    for p, writer in writers.items():
        writer.close()
        sinks[p].close()
        os.replace(out / f".part-{p:05d}.arrow.tmp", out / f"part-{p:05d}.arrow")
    check_language(report)
    atomic_write_json(Path(directory) / f"{lang}.done.json", report.__dict__)
    return report


def _stream_files(files, report, buffers, held, flush, partitions, rows_per_group, max_buffered_cues, progress):
    sampled = 0
    buffered = 0
    for path in files:
        stream = StreamReport()
        for video_id, value in iter_release(path, stream):
            s, e, t, problem = check_cues(value)
            if problem:
                report.problems += 1
            if sampled < 200 and t:
                report.words_sampled += _vote_language(t, report.stopword_votes)
                sampled += 1
            p = partition_of(video_id, partitions)
            columns = buffers.get(p)
            if columns is None:
                columns = buffers[p] = ([], [], [], [], [])
            columns[0].append(video_id)
            columns[1].append(s)
            columns[2].append(e)
            columns[3].append(t)
            columns[4].append(problem)
            held[p] = held.get(p, 0) + len(t or ())
            buffered += len(t or ())
            if len(columns[0]) >= rows_per_group:
                buffered -= held[p]
                flush(p)
            if buffered >= max_buffered_cues:
                for q in list(buffers):
                    flush(q)
                buffered = 0
            report.videos += 1
            if progress is not None:
                progress(1)
        if stream.truncated:
            report.truncated.append(stream.error)
            log.warning("%s", stream.error)


def read_partition(directory: Path, lang: str, partition: int) -> dict:
    """``{video_id: (start, end, text, problem)}`` of one language in one partition."""
    path = Path(directory) / lang / f"part-{partition:05d}.arrow"
    if not path.exists():
        return {}
    with pa.OSFile(str(path), "rb") as f:
        table = pa.ipc.open_file(f).read_all()
    out = {}
    for row in table.to_pylist():
        out[row["video_id"]] = (row["start"], row["end"], row["text"], row["problem"])
    return out


def language_report(directory: Path, lang: str) -> dict | None:
    path = Path(directory) / f"{lang}.done.json"
    return json.loads(path.read_text()) if path.exists() else None

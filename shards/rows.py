"""The parquet rows of the crawl and aligned stages: their schemas and per-language columns.

A row holds one input video. Beside its own columns it holds, per language the stage
works on, columns named ``<lang>_<field>`` (``en_status``, ``de_cues``): ``lang_column``
is that one spelling, and ``CRAWL_LANG_FIELDS`` / ``ALIGNED_LANG_FIELDS`` the fields.
"""
from __future__ import annotations

import pyarrow as pa

# Per language, what the crawl records of its track.
CRAWL_LANG_FIELDS = (("kind", pa.string()), ("source", pa.string()), ("bytes", pa.int64()),
                     ("error", pa.string()), ("status", pa.string()))

# Per language, what alignment records of its cleaned track.
ALIGNED_LANG_FIELDS = (("kind", pa.string()), ("source", pa.string()), ("status", pa.string()), ("error", pa.string()),
                       ("cues", pa.int32()), ("tokens", pa.int64()), ("chars", pa.int64()), ("seconds", pa.float64()),
                       ("coverage", pa.float64()), ("rolling", pa.bool_()), ("parser", pa.string()),
                       ("repairs", pa.string()), ("flags", pa.string()))


def lang_column(lang: str, name: str) -> str:
    """The column holding one language's ``name`` field: ``lang_column("en", "status")`` is ``en_status``."""
    return f"{lang}_{name}"


def lang_columns(lang: str, fields=CRAWL_LANG_FIELDS) -> list[str]:
    """Every column a stage keeps for one language, in schema order."""
    return [lang_column(lang, name) for name, _ in fields]


def _lang_fields(langs, fields) -> list:
    return [(lang_column(lang, name), typ) for lang in langs for name, typ in fields]


def crawl_schema(langs) -> pa.Schema:
    fields = [
        ("video_id", pa.string()), ("input", pa.string()), ("status", pa.string()), ("error", pa.string()),
        ("attempts", pa.int32()), ("crawled_at", pa.float64()), ("seconds", pa.float64()),
        ("title", pa.string()), ("duration", pa.float64()), ("channel", pa.string()),
        ("language", pa.string()), ("upload_date", pa.string()),
        ("category_1", pa.string()), ("category_2", pa.string()), ("rank", pa.string()), ("task_id", pa.string()),
        ("n_tracks", pa.int32()), ("video_ext", pa.string()), ("video_bytes", pa.int64()),
        ("video_status", pa.string()), ("video_error", pa.string()), ("ytdlp_warnings", pa.string()),
    ]
    return pa.schema(fields + _lang_fields(langs, CRAWL_LANG_FIELDS))


def aligned_schema(langs) -> pa.Schema:
    fields = [("video_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
              ("crawl_status", pa.string()), ("crawl_unit", pa.int32()), ("duration", pa.float64()),
              ("language", pa.string()), ("n_langs", pa.int32()), ("langs", pa.string()),
              ("timeline", pa.string()), ("timeline_kind", pa.string()), ("n_segments", pa.int32()),
              ("seconds", pa.float64())]
    return pa.schema(fields + _lang_fields(langs, ALIGNED_LANG_FIELDS))

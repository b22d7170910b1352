"""The crawl's per-video work: one info dict, one track per language, each fetched once.

``crawl_video`` turns a video id into a parquet row and a sample (``info.json`` plus a
``<lang>.vtt`` (or ``.srt``) per track fetched). Every language ends with a ``{lang}_status``;
a track that failed transiently is marked so, and the tracks fetched before it are kept,
so ``--retry-failed`` (``Held``) asks YouTube only for what is missing. Nothing here
knows about units or executors (``pipeline.crawl.stage`` maps this over a unit).
"""
from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field, replace

from shards.rows import CRAWL_LANG_FIELDS, lang_column
from shards.samples import ABSENT, INFO_JSON, InfoJson, TrackRecord, find_track_member, is_track_member

from pipeline.crawl import errors
from pipeline.crawl.fetch import FetchError
from pipeline.crawl.info import normalize_info
from pipeline.crawl.track_fetch import TrackFetch
from pipeline.crawl.tracks import NONE, TRANSLATED, select_tracks
from pipeline.crawl.url_policy import REFUSED_URL, allowed_later
from pipeline.crawl.videolist import VideoEntry

INFO_KEYS = ("id", "title", "duration", "channel", "channel_id", "upload_date", "language",
             "categories", "availability", "webpage_url")
META_COLUMNS = ("category_1", "category_2", "rank", "task_id")
_TEXT_FIELDS = ("id", "title", "channel", "channel_id", "uploader", "upload_date", "language", "availability",
                "webpage_url")
_FORMAT_TEXT = ("url", "ext", "protocol", "name")
# A SubRip file opens with its first cue: a number, then a timing line (the reader takes "." for ",").



def info_problem(info: dict) -> str | None:
    """Why an info dict cannot be crawled (a field of the wrong type), else None.

    An info dict may come from any file; what the crawl reads of it (the row's columns,
    ``info.json``, the track lists) must have yt-dlp's types, so that one bad dict fails
    its own video and never the unit.
    """
    for key in _TEXT_FIELDS:
        if info.get(key) is not None and not isinstance(info[key], str):
            return f"{key!r} is not a string"
    duration = info.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))):
        return "'duration' is not a number"
    categories = info.get("categories")
    if categories is not None and not (isinstance(categories, list) and all(isinstance(c, str) for c in categories)):
        return "'categories' is not a list of strings"
    for key in ("subtitles", "automatic_captions"):
        tracks = info.get(key)
        if tracks is None:
            continue
        if not isinstance(tracks, dict):
            return f"{key!r} is not an object"
        for lang, formats in tracks.items():
            if formats is None:
                continue
            if not isinstance(formats, list) or not all(isinstance(f, dict) for f in formats):
                return f"{key}[{lang!r}] is not a list of formats"
            for fmt in formats:
                bad = next((k for k in _FORMAT_TEXT if fmt.get(k) is not None and not isinstance(fmt[k], str)), None)
                if bad:
                    return f"{key}[{lang!r}] has a format whose {bad!r} is not a string"
    return None


def needs_retry(row: dict, langs, runtime_ready: bool = False) -> bool:
    """Whether ``--retry-failed`` asks YouTube again for (part of) this video: a transient failure, a
    URL refused only because its host was not allowed (``allowed_later``), or, when a JavaScript
    runtime is usable now (``runtime_ready``), tracks missing from an extraction yt-dlp warned had none."""
    if _again(row.get("status"), row.get("error")) or _again(row.get("video_status"), row.get("video_error")):
        return True
    if any(_again(row.get(lang_column(l, "status")), row.get(lang_column(l, "error"))) for l in langs):
        return True
    return runtime_ready and _without_runtime(row) and any(
        row.get(lang_column(l, "status")) not in (None, errors.TRACK_OK) for l in langs)


def _again(status, error) -> bool:
    return status in errors.TRANSIENT or status == errors.REFUSED_URL and allowed_later(error)


def lacks_video(row: dict) -> bool:
    """Whether a video whose metadata was read has never had its download tried (a crawl run without
    ``--download-video``): a run with it fetches the video and keeps the tracks."""
    return row.get("status") in errors.WITH_SAMPLE and row.get("video_status") is None


def _without_runtime(row: dict) -> bool:
    return "js_runtime" in (row.get("ytdlp_warnings") or "").split(",")


def trim_info(info: dict, entry: VideoEntry) -> InfoJson:
    """What ``info.json`` keeps of yt-dlp's info dict (its ``tracks`` are added by ``crawl_video``)."""
    trimmed = InfoJson.from_dict({k: info.get(k) for k in INFO_KEYS})
    return replace(trimmed, id=entry.video_id, input_meta=entry.meta or ABSENT)


@dataclass
class Held:
    """What an earlier version of a unit holds for one video (``--retry-failed``): its row,
    info.json and members. Tracks with a final outcome there are kept as they are; only
    the languages that failed transiently are asked again."""

    row: dict
    info: InfoJson | None = None
    members: dict = field(default_factory=dict)  # the tracks and video, info.json apart
    info_member: bytes | None = None             # the earlier info.json as stored
    runtime_ready: bool = False                  # a JavaScript runtime is usable now (needs_retry)

    def sample(self) -> dict | None:
        """The earlier sample as it was (None when it had no readable info.json)."""
        if self.info_member is None:
            return None
        return {**self.members, INFO_JSON: self.info_member}

    def final_langs(self, langs) -> list[str]:
        """The languages kept as they are: those with a final outcome (only the fetched ones when the
        extraction had no JavaScript runtime and one is usable now: what it did not offer may exist)."""
        if self.runtime_ready and _without_runtime(self.row):
            return [l for l in langs if self.row.get(lang_column(l, "status")) == errors.TRACK_OK]
        return [l for l in langs if self.row.get(lang_column(l, "status")) is not None
                and not _again(self.row.get(lang_column(l, "status")), self.row.get(lang_column(l, "error")))]

    def has_work(self) -> bool:
        return any(is_track_member(k) for k in self.members)


TRACK_COLUMNS = tuple(name for name, _ in CRAWL_LANG_FIELDS)


def _carry_track(lang: str, held: Held, row: dict, tracks: dict, members: dict) -> None:
    for name in TRACK_COLUMNS:
        row[lang_column(lang, name)] = held.row.get(lang_column(lang, name))
    old = held.info.declared().get(lang) if held.info is not None else None
    tracks[lang] = (old.to_dict() if old is not None else {}) or TrackRecord(
        kind=row[lang_column(lang, "kind")], source_lang=row[lang_column(lang, "source")]).to_dict()
    tracks[lang]["status"] = row[lang_column(lang, "status")]
    member = find_track_member(held.members, lang)  # <lang>.vtt, or .srt as it was fetched
    if member is not None:
        members[member] = held.members[member]


def crawl_video(entry: VideoEntry, ctx, held: Held | None = None) -> tuple[dict, dict | None]:
    """Crawl one video: (parquet row, sample members or None); see ``_crawl_video``. A downloaded video
    is a scratch file the stage streams into its sample and removes; one that does not reach the
    sample (its tracks all failed transiently, a bug) is removed here."""
    scratch: list[Path] = []
    try:
        row, members = _crawl_video(entry, ctx, held, scratch)
    except BaseException:
        _remove(scratch)
        raise
    kept = {id(v) for v in (members or {}).values()}
    _remove(p for p in scratch if id(p) not in kept)
    return row, members


def _remove(paths) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _crawl_video(entry: VideoEntry, ctx, held: Held | None, scratch: list) -> tuple[dict, dict | None]:
    """Crawl one video: (parquet row, sample members or None). Failures are values; bugs raise.

    Every language ends with a ``{lang}_status``: ``ok``, ``none``, ``no_url``, or why it
    failed; a transient one (``rate_limited``, ``po_token_required``...) is asked again by
    ``--retry-failed`` while the tracks already fetched are kept. The video's own tracks (manual,
    original ASR) are fetched first, then its machine translations through their own budget
    (``track_fetch.TrackFetch``): a refusal of an own track holds back the rest of the video, a refusal or a
    deferral of a translation only the video's other translations.
    """
    cfg = ctx.cfg
    started = time.time()
    row = {"video_id": entry.video_id if entry.valid else None, "input": entry.raw, "attempts": 1,
           "crawled_at": started}
    for col in META_COLUMNS:
        if col in entry.meta:
            row[col] = str(entry.meta[col])

    def finish(status, error=None, members=None):
        row.update(status=status, error=error, seconds=round(time.time() - started, 4))
        return row, members

    if not entry.valid:
        row["video_id"] = entry.raw
        return finish(errors.INVALID_ID, f"not a YouTube video id (11 characters of A-Z a-z 0-9 _ -): {entry.raw!r}")
    try:
        info = ctx.info_source.get(entry.video_id)
    except FetchError as exc:
        if held is not None and held.sample() is not None:  # keep what the earlier run had, as it was
            kept = dict(held.row, error=f"retry failed ({exc.status}: {exc.message}); earlier sample kept")
            if cfg.download_video and lacks_video(held.row):  # its own status: not reopened for it again
                kept.update(video_status=exc.status, video_error=f"not downloaded: the video's page failed "
                            f"({exc.message})")
            return kept, held.sample()
        return finish(exc.status, exc.message)
    kind = info.get("_type", "video")
    if kind != "video":  # it would have yt-dlp fetch what it points to (another page, playlist entries)
        return finish(REFUSED_URL, f"the info dict is of _type {str(kind)[:40]!r}, not a video: nothing it points "
                      "to is requested")
    info = normalize_info(info)  # what youtube-dl wrote, in yt-dlp's types
    problem = info_problem(info)
    if problem is not None:
        return finish(errors.ERROR, f"unusable info dict: {problem}")
    warnings = ctx.info_source.take_warnings()
    row["ytdlp_warnings"] = ",".join(sorted({errors.warning_kind(w) for w in warnings})) or None
    pot_dropped, pot_langs = False, set()  # pot_langs None: every language may have been dropped
    for w in warnings:
        dropped, named = errors.pot_missing_languages(w)
        if dropped:
            pot_dropped = True
            pot_langs = None if named is None or pot_langs is None else pot_langs | named
    row.update(title=info.get("title"), channel=info.get("channel") or info.get("uploader"),
               language=info.get("language"), upload_date=info.get("upload_date"))
    duration = info.get("duration")
    row["duration"] = float(duration) if isinstance(duration, (int, float)) else None

    choices = select_tracks(info, cfg.langs, cfg.lang_variants, cfg.translated_format)
    carried = set(held.final_langs(cfg.langs)) if held is not None else set()
    members: dict = {}
    tracks: dict = {}

    def outcome(lang, status, error=None):
        row[lang_column(lang, "status")] = status
        tracks[lang]["status"] = status
        if error:
            row[lang_column(lang, "error")] = tracks[lang]["error"] = error

    wanted = {}  # lang -> choice, for the tracks to fetch now
    for lang, choice in choices.items():
        if lang in carried:
            _carry_track(lang, held, row, tracks, members)
            continue
        tracks[lang] = choice.record()
        row[lang_column(lang, "kind")] = choice.kind
        row[lang_column(lang, "source")] = choice.source_lang
        if choice.kind == NONE:
            if pot_dropped and (pot_langs is None or lang in pot_langs):
                outcome(lang, errors.PO_TOKEN_REQUIRED, "yt-dlp dropped this video's subtitles: a PO token was "
                        "not provided (see mmp-crawl --check and the README on PO-token providers)")
            else:
                outcome(lang, errors.TRACK_NONE)
        elif not choice.url:
            outcome(lang, errors.TRACK_NO_URL, "no fetchable WebVTT (or timedtext) format offered for this track")
        else:
            wanted[lang] = choice
    # The video's own tracks first, with the session's own budget; then its machine translations, with
    # theirs (sessions.py): a refused translation never costs an own track.
    own = {l: c for l, c in wanted.items() if c.kind != TRANSLATED}
    translated = {l: c for l, c in wanted.items() if c.kind == TRANSLATED}
    fetch = TrackFetch(ctx, cfg, outcome, members, row, tracks)
    stopped = fetch.group(own, ctx.fetcher)
    fetch.group(translated, getattr(ctx, "translation_fetcher", ctx.fetcher), stopped)

    if held is not None and held.row.get("video_ext") and held.row["video_ext"] in held.members:
        ext = held.row["video_ext"]
        members[ext] = held.members[ext]
        row["video_ext"], row["video_bytes"], row["video_status"] = ext, held.row.get("video_bytes"), errors.TRACK_OK
    elif cfg.download_video:
        try:
            ext, path = ctx.download_video(info)  # a file, streamed into the sample by the stage
            scratch.append(path)
            members[ext] = path
            row["video_ext"], row["video_bytes"], row["video_status"] = ext, path.stat().st_size, errors.TRACK_OK
        except FetchError as exc:
            row["video_status"], row["video_error"] = exc.status, exc.message

    fetched = sum(1 for m in members if is_track_member(m))
    row["n_tracks"] = fetched
    trimmed = replace(trim_info(info, entry), tracks={l: TrackRecord.from_dict(t) for l, t in tracks.items()})
    members[INFO_JSON] = trimmed.to_member()
    failed = {l: row[lang_column(l, "status")] for l in cfg.langs
              if row.get(lang_column(l, "status")) != errors.TRACK_OK}
    transient = {l: st for l, st in failed.items() if st in errors.TRANSIENT}
    video_transient = row.get("video_status") in errors.TRANSIENT
    if not failed and not video_transient:
        return finish(errors.OK, None, members)
    missing = "missing: " + ", ".join(f"{l} ({st})" for l, st in failed.items())
    if video_transient:
        missing = "; ".join(x for x in (failed and missing, f"video: {row.get('video_error')}") if x)
    if fetched or (video_transient and not transient):
        return finish(errors.PARTIAL, missing, members)
    if transient:  # nothing fetched yet: the whole video is retried later
        first = next(iter(transient))
        return finish(transient[first], f"{first} track: {row.get(lang_column(first, 'error'))}")
    offered = {l: st for l, st in failed.items() if st != errors.TRACK_NONE}
    if offered and all(st == REFUSED_URL for st in offered.values()):
        return finish(REFUSED_URL, "every offered track's URL was refused: " + "; ".join(
            f"{l}: {row.get(lang_column(l, 'error'))}" for l in offered), members)
    if offered:
        return finish(errors.ERROR, "every offered track failed: " + "; ".join(
            f"{l}: {row.get(lang_column(l, 'error'))}" for l, st in failed.items() if st != errors.TRACK_NONE), members)
    return finish(errors.NO_SUBTITLES, "YouTube offers no subtitles in the requested languages", members)


def held_from(row: dict, sample: dict | None, runtime_ready: bool = False) -> Held:
    """An earlier row and sample as a ``Held`` (the sample's info.json read; None when unusable)."""
    sample = {k: v for k, v in (sample or {}).items() if not k.startswith("__")}
    info = member = None
    if INFO_JSON in sample:
        raw = sample.pop(INFO_JSON)
        try:
            if isinstance(raw, (bytes, str)):
                member = raw.encode("utf-8") if isinstance(raw, str) else raw
                info = InfoJson.from_member(member)
            elif isinstance(raw, dict):
                info = InfoJson.from_dict(raw)
                member = info.to_member()
        except ValueError:
            info = None
    return Held(row, info, sample, member, runtime_ready)

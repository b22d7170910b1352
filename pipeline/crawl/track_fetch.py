"""Fetching one video's tracks: what an answer must be to count as the track, and the fetch of a group of
tracks, each file once (``TrackFetch``). ``pipeline.crawl.video`` runs the groups: the video's own tracks,
then its machine translations through their own budget.
"""
from __future__ import annotations

import re
import time

from shards.members import TRACK_MAX_BYTES
from shards.rows import lang_column
from shards.samples import track_member

from pipeline.crawl import errors
from pipeline.crawl.fetch import FetchError
from pipeline.crawl.sessions import Deferred

_SRT_START = re.compile(rb"\d+[ \t]*\r?\n[ \t]*\d+:\d{1,2}:\d{1,2}[,.]\d+[ \t]*-->")


def vtt_problem(body: bytes, needs_po_token: bool = False):
    """None if ``body`` is a WebVTT file, else a FetchError saying why not.

    YouTube answers a request it will not serve with a 200: an empty body when a PO token
    is missing (or the client is throttled), an HTML page for a consent or bot check.
    Those are transient (retried with backoff, seen by the breaker); a body that is some
    other file is final.
    """
    head = body.lstrip(b"\xef\xbb\xbf").lstrip()[:512]
    if not head:
        if needs_po_token:
            return FetchError(errors.PO_TOKEN_REQUIRED, "an empty 200 response for a track that needs a PO token "
                              "(see mmp-crawl --check and the README on PO-token providers)")
        return FetchError(errors.BAD_RESPONSE, "an empty 200 response where WebVTT was expected "
                          "(YouTube sends this when a PO token is missing or requests are throttled)")
    if head.startswith(b"WEBVTT"):
        return None
    lowered = head.lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered:
        status = errors.BOT_CHECK if errors.classify_message(head.decode("utf-8", "replace")) == errors.BOT_CHECK \
            else errors.BAD_RESPONSE
        return FetchError(status, "an HTML page where WebVTT was expected")
    return FetchError(errors.ERROR, "not a WebVTT file (no WEBVTT header)")


def srt_problem(body: bytes, needs_po_token: bool = False):
    """None if ``body`` is a SubRip file (``mmp-crawl --translated-format srt``), else a FetchError.

    An empty 200 and an HTML page are what they are for WebVTT (``vtt_problem``: transient). A WebVTT
    file is the track too, served in the other format: it is kept, as WebVTT (``TrackFetch.keep``
    stores it under its own format). Any other file is final. A translation without a single cue
    would be an empty file in SRT, and reads as an empty 200.
    """
    head = body.lstrip(b"\xef\xbb\xbf").lstrip()[:512]
    if _SRT_START.match(head) or head.startswith(b"WEBVTT"):
        return None
    refused = vtt_problem(body, needs_po_token)  # an empty body or an HTML page, whatever was asked for
    if refused is not None and refused.status != errors.ERROR:
        return FetchError(refused.status, refused.message.replace("WebVTT", "SRT"))
    return FetchError(errors.ERROR, "not an SRT file (it does not open with a cue number and a timing line)")


def track_problem(body: bytes, ext: str | None, needs_po_token: bool = False):
    """``vtt_problem`` or ``srt_problem``, by the format the track was asked for."""
    return srt_problem(body, needs_po_token) if ext == "srt" else vtt_problem(body, needs_po_token)


class TrackFetch:
    """Fetches one video's tracks, a group at a time, each file once; records each outcome."""

    def __init__(self, ctx, cfg, outcome, members: dict, row: dict, tracks: dict):
        self.ctx, self.cfg, self.outcome = ctx, cfg, outcome
        self.members, self.row, self.tracks = members, row, tracks
        self.by_url: dict = {}  # the same file may serve two languages: fetched once

    def group(self, choices: dict, fetcher, stopped: tuple | None = None) -> tuple | None:
        """Fetch ``choices`` in order. After a refusal (429, bot check, a 200 that is not the file) or a
        deferral, the group's remaining tracks are not requested: they get that transient status and
        why, for the next run. Returns (status, why) the group stopped (None if it did not), which, given
        as ``stopped``, holds a later group back from the start."""
        held_back = stopped
        for lang, choice in choices.items():
            if held_back is not None:
                self.outcome(lang, held_back[0], f"not requested: {held_back[1]}; --retry-failed fetches it")
                continue
            body = self.by_url.get(choice.url)
            if body is None:
                if self.cfg.sleep_subtitles > 0:
                    time.sleep(self.cfg.sleep_subtitles)
                try:
                    body = fetcher.get(choice.url, check=lambda b, c=choice: track_problem(b, c.ext, c.po_token))
                except Deferred as exc:
                    why = f"translations from this session are held back ({exc})"
                    self.outcome(lang, errors.RATE_LIMITED, f"not requested: {why}; --retry-failed fetches it")
                    held_back = (errors.RATE_LIMITED, why)
                    continue
                except FetchError as exc:
                    self.outcome(lang, exc.status, exc.message)
                    if exc.status in errors.REFUSALS:
                        held_back = (exc.status, f"the {lang} track was refused ({exc.status}) just before")
                    continue
                self.by_url[choice.url] = body
            self.keep(lang, choice.ext, body)
        return held_back

    def keep(self, lang: str, ext: str | None, body: bytes) -> None:
        if ext != "vtt" and body.lstrip(b"\xef\xbb\xbf").lstrip().startswith(b"WEBVTT"):
            self.tracks[lang]["ext"] = "vtt"  # asked for as SRT, served as WebVTT: stored as what it is
            self.tracks[lang]["warning"] = f"asked for as {ext}, served as WebVTT"
            ext = "vtt"
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = sum(1 for _ in body.decode("utf-8", "replace") if _ == "\ufffd")
            body = body.decode("utf-8", "replace").encode("utf-8")
            self.tracks[lang]["warning"] = f"invalid UTF-8 ({bad} characters replaced, first at byte {exc.start})"
            if len(body) > TRACK_MAX_BYTES:  # each replacement takes 3 bytes: what readers take is the cap
                self.outcome(lang, errors.ERROR, f"{len(body):,} bytes once its invalid UTF-8 is replaced, over the "
                             f"{TRACK_MAX_BYTES:,} a track may have")
                return
        self.members[track_member(lang, ext)] = body
        self.row[lang_column(lang, "bytes")] = len(body)
        self.outcome(lang, errors.TRACK_OK)

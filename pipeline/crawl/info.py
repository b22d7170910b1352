"""Reading an info dict as yt-dlp types it today, whichever youtube-dl or yt-dlp wrote it.

``normalize_info`` runs before ``video.info_problem`` judges a dict, so a dict from 2010-2014
is crawled like a new one instead of failing as "unusable". What older dicts hold, as read
from youtube-dl's YouTube extractor of those years and from saved dicts (``tests/data/infojson``:
a December 2013 dict holds ``"duration": "15"``, ``"upload_date": "20101004"``, ``"subtitles":
null`` and no ``language``, ``channel``, ``categories`` or ``automatic_captions``):

- ``duration`` as text: youtube-dl copied YouTube's ``length_seconds`` query value as it came
  (``"15"``), and wrote ``""`` when the page had none. yt-dlp has always written a number.
- ``subtitles`` mapping a language to the subtitle text itself: youtube-dl before 2015
  downloaded the tracks while extracting and kept their text, manual and automatic tracks merged
  under one key each; the lists of ``{ext, url}`` formats came in 2015.
- ``categories``, ``language``, ``channel``, ``automatic_captions``, ``title`` may be absent:
  every reader of a dict already takes a missing field as None.
- Shapes no youtube-dl release is known here to have written, but a dict re-saved by another
  tool may hold: ``upload_date`` as a number (``20110312``, ``YYYYMMDD`` read as an integer),
  ``categories`` as one string instead of a list.

The counts youtube-dl and yt-dlp write (``view_count``, ``like_count``...) are not read by the
crawl (``video.INFO_KEYS``), so they are left as they are.
"""
from __future__ import annotations

import logging
import math

log = logging.getLogger("mmp.crawl")


def normalize_info(info: dict) -> dict:
    """``info`` with what youtube-dl wrote turned into yt-dlp's types where its meaning is clear
    (a copy; ``info`` itself is not changed). Each value read as missing is logged.

    - ``duration``: a number in text (``"15"``, ``"15.5"``) becomes that number (a float). A value
      that is no positive, finite number of seconds (``""``, ``"abc"``, ``"nan"``, ``-3``, ``0``,
      ``inf``) becomes None, a missing duration, as yt-dlp reads one: the duration is a
      description of the video, the tracks do not depend on it, so a bad one costs the video
      nothing else. A value of another type (a list, an object, true) is left for
      ``info_problem``, which fails that video with the reason: no tool ever wrote one.
    - ``upload_date``: a whole number of 8 digits becomes its text (``20110312`` ->
      ``"20110312"``); any other number becomes None.
    - ``categories``: one string becomes a list of it; null entries of a list are dropped.
    - ``subtitles`` and ``automatic_captions``: an entry holding the subtitle text instead of a
      list of formats (youtube-dl before 2015) is dropped: it names no URL to fetch and not which
      kind of track it was. Its language then reads as not offered by this dict.
    """
    out = dict(info)
    video = str(info.get("id"))[:40]
    if "duration" in out:
        out["duration"] = _duration(out["duration"], video)
    date = out.get("upload_date")
    if isinstance(date, float) and date.is_integer():
        date = int(date)
    if isinstance(date, int) and not isinstance(date, bool):
        out["upload_date"] = str(date) if 10_000_000 <= date <= 99_999_999 else None
        if out["upload_date"] is None:
            log.info("%s: upload_date %r is not a date YYYYMMDD; read as missing", video, date)
    categories = out.get("categories")
    if isinstance(categories, str):
        out["categories"] = [categories]
    elif isinstance(categories, list) and None in categories:
        out["categories"] = [c for c in categories if c is not None]
    for key in ("subtitles", "automatic_captions"):
        tracks = out.get(key)
        if isinstance(tracks, dict) and any(isinstance(v, str) for v in tracks.values()):
            dropped = sorted(str(k) for k, v in tracks.items() if isinstance(v, str))
            log.info("%s: %s holds the text of %d tracks (youtube-dl before 2015), not their URLs: %s not "
                     "fetched", video, key, len(dropped), ",".join(dropped)[:200])
            out[key] = {k: v for k, v in tracks.items() if not isinstance(v, str)}
    return out


def _duration(value, video: str):
    """A duration in seconds as yt-dlp types it: a positive finite number, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return value  # no tool wrote this: info_problem says so
    try:  # an int too large for a float (a 400-digit "duration") is no duration either
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (ValueError, OverflowError):
        number = None
    if number is None or not math.isfinite(number) or number <= 0:
        log.info("%s: duration %r is not a number of seconds; read as missing", video, str(value)[:40])
        return None
    return number if isinstance(value, str) else value

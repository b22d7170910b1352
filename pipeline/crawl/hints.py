"""What a crawl says when it ends, beyond its summary: one line each for what the user should do next."""
from __future__ import annotations

from pipeline.crawl import errors


def video_hint(cfg, summary) -> str | None:
    """One line for a crawl that leaves mmp-extract-features nothing to read, else None."""
    if not cfg.download_video:
        return ("mmp-crawl: no video was downloaded (subtitles only); mmp-extract-features needs the videos: "
                "crawl with --download-video to fetch them")
    if summary.units_done and not summary.counts.get("videos_downloaded"):
        return ("mmp-crawl: --download-video fetched no video in this run; the video_status and video_error "
                "columns of the parquet rows say why")
    return None


def refused_hint(summary) -> str | None:
    """One line when the URL policy refused what this run would have fetched (a setting, not YouTube)."""
    videos = summary.counts.get(f"status/{errors.REFUSED_URL}", 0)
    tracks = summary.counts.get(f"track_status/{errors.REFUSED_URL}", 0)
    if not videos and not tracks:
        return None
    return (f"mmp-crawl: the URL policy refused {videos} videos and {tracks} tracks (their error columns say "
            f"why); where it names a host that is not allowed, re-run with --allow-host HOST --retry-failed")


def deferred_hint(summary) -> str | None:
    """One line when translations were held back: YouTube refused them, the own tracks went on."""
    n = summary.counts.get("translations_deferred", 0)
    if not n:
        return None
    return (f"mmp-crawl: {n} videos had their machine translations held back (YouTube refused translations; "
            f"their budget paused or halted); they are rate_limited: run --retry-failed later to fetch them")

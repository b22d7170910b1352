"""Whose budget a request spends: the session it is sent in, and the egress it leaves from.

YouTube limits sessions, not machines. yt-dlp's wiki (Extractors, "this is the rate limit for
guest sessions is ~300 videos/hour (~1000 webpage/player requests per hour). For accounts, it
is ~2000 videos/hour"; an edit of 2025-04-25 removed "per IP") puts the limit on the session:
the account of the cookies, or an anonymous (guest) session, as seen from one egress address.
So each budget is keyed on both (``SessionKey``): the account (a digest of its login cookies,
never a value) or ``anonymous``, and the egress (an ``--egress`` label, the ``--proxy`` set, the
Ray node, or this machine).

A session has three budgets, each shared by every process that sends in it:

- ``videos``: one slot per video's extraction (its watch page and player requests), at
  ``--videos-per-hour`` (by default the wiki's figures: 300 anonymous, 2,000 signed in);
- ``own``: the video's own tracks (manual and original ASR), the extraction's requests and the
  video downloads, at ``--max-requests-per-second``, with the breaker that pauses and halts
  the crawl;
- ``translations``: YouTube's machine translations, which it refuses first (yt-dlp #13831:
  the original ASR downloads fine while every translation gets 429), with their own rate and
  breaker. Their refusals never touch ``own``, and a translation whose turn is further away
  than ``--translation-max-wait`` (a pause of their breaker, a halt, a rate they slowed to) is
  not requested but recorded as ``rate_limited`` for ``--retry-failed``: own-track work never
  waits behind them.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.crawl import errors
from pipeline.crawl.politeness import RequestBudget, default_budget_dir
from pipeline.crawl.ray_budget import RayRequestBudget

ANONYMOUS = "anonymous"
# yt-dlp's wiki figures (Extractors page): what one session may extract per hour.
GUEST_VIDEOS_PER_HOUR = 300
ACCOUNT_VIDEOS_PER_HOUR = 2000
KINDS = ("videos", "own", "translations")
# The cookies that name a signed-in account (their values are digested, never kept).
_ACCOUNT_COOKIES = ("SID", "__Secure-1PSID", "__Secure-3PSID", "LOGIN_INFO")


def account_of(cookies: str | None) -> str:
    """The session a cookie file signs in as: ``account-<digest>``, or ``anonymous`` when it signs in
    to nothing (no file, or no login cookie). The digest of the login cookies' values tells two
    accounts apart; nothing of the values can be read back from its 12 hex digits."""
    if not cookies:
        return ANONYMOUS
    from yt_dlp.cookies import YoutubeDLCookieJar

    from pipeline.crawl.access import inspect_cookies

    summary = inspect_cookies(cookies)
    if not summary.logged_in:
        return ANONYMOUS
    jar = YoutubeDLCookieJar(cookies)
    jar.load(ignore_discard=True, ignore_expires=True)
    login = sorted(f"{c.name}={c.value}" for c in jar.get_cookies_for_url("https://www.youtube.com")
                   if c.name in _ACCOUNT_COOKIES)
    return "account-" + hashlib.sha256("\n".join(login).encode()).hexdigest()[:12]


def default_videos_per_hour(account: str) -> float:
    return float(GUEST_VIDEOS_PER_HOUR if account == ANONYMOUS else ACCOUNT_VIDEOS_PER_HOUR)


def egress_label(cfg, egress: str | None = None, ray: bool = False) -> str:
    """Which outbound address this process's requests leave from.

    An ``--egress`` label names it; with proxies, the proxies are the address (any node can use
    them); otherwise this machine (``local``) or, under Ray, the node's own address.
    """
    if egress:
        return f"egress-{egress}"
    if cfg.proxies:
        hosts = ",".join(sorted(errors.redact(p) for p in cfg.proxies))
        return f"proxy-{hashlib.sha256(hosts.encode()).hexdigest()[:12]}"
    if not ray:
        return "local"
    import ray as ray_module

    return f"node-{ray_module.util.get_node_ip_address()}"


@dataclass(frozen=True)
class SessionKey:
    account: str   # "anonymous" or "account-<digest>"
    egress: str    # "local", "egress-NAME", "proxy-<digest>", "node-<ip>"

    def name(self, prefix: str, kind: str) -> str:
        """The budget's name: a file name, or a Ray actor's (``any-egress``: an account's own videos/hour)."""
        return f"{prefix}.{self.account}@{self.egress}.{kind}"


@dataclass
class SessionBudgets:
    """The three budgets of one session (see the module docstring)."""

    key: SessionKey
    videos: object
    own: object
    translations: object
    translation_max_wait: float

    def all(self):
        return self.videos, self.own, self.translations

    def reset_halt(self) -> None:
        for budget in self.all():
            budget.reset_halt()

    def take_counts(self) -> dict:
        """Requests, deferrals and rate changes since the last call, for the unit's stats."""
        counts = {"requests": self.own.requests + self.translations.requests,
                  "translation_requests": self.translations.requests,
                  "translations_deferred": self.translations.deferred,
                  "rate_decreases": self.own.decreases, "rate_increases": self.own.increases,
                  "translation_rate_decreases": self.translations.decreases}
        for budget in self.all():
            budget.requests = budget.deferred = budget.decreases = budget.increases = 0
        return counts


def session_budgets(cfg, egress: str | None = None, account: str | None = None) -> SessionBudgets:
    """The budgets of this process's session: files shared by this machine's processes, or (``budget_backend
    == "ray"``) named actors shared by every task that sends in the same session from the same egress."""
    ray = cfg.budget_backend == "ray"
    key = SessionKey(account or account_of(cfg.cookies), egress_label(cfg, egress, ray))
    per_hour = cfg.videos_per_hour or default_videos_per_hour(key.account)
    breaker = dict(breaker_threshold=cfg.breaker_threshold, pause_seconds=cfg.breaker_pause,
                   max_trips=cfg.breaker_max_pauses, adaptive=cfg.adaptive_rate, quiet_seconds=cfg.rate_quiet_seconds)
    rates = {"videos": per_hour / 3600.0 if cfg.max_requests_per_second else None,
             "own": cfg.max_requests_per_second,
             "translations": cfg.translation_requests_per_second if cfg.max_requests_per_second else None}
    budgets = {}
    for kind in KINDS:
        settings = dict(breaker, adaptive=False) if kind == "videos" else breaker  # a pace, not a reaction
        # an account's videos/hour hold wherever it signs in from (the wiki's figure is per account)
        owner = SessionKey(key.account, "any-egress") if kind == "videos" and key.account != ANONYMOUS else key
        name = owner.name(cfg.budget_name, kind)
        if ray:
            budgets[kind] = RayRequestBudget(name, rates[kind], **settings)
        else:
            directory = Path(cfg.budget_dir) if cfg.budget_dir else default_budget_dir()
            budgets[kind] = RequestBudget(directory / f"{name}.budget", rates[kind], **settings)
    return SessionBudgets(key, budgets["videos"], budgets["own"], budgets["translations"], cfg.translation_max_wait)


def projection(cfg, n_videos: int, account: str | None = None, sessions: int = 1) -> str:
    """One line: how long ``n_videos`` take at the budgets, assuming one own track (the original ASR)
    and a translation for every other language per video (the common case). ``sessions`` egresses
    multiply the per-address budgets, and the videos/hour of anonymous sessions; an account's
    videos/hour are its own wherever it signs in from."""
    account = account or account_of(cfg.cookies)
    if not _positive(cfg.max_requests_per_second):
        return f"{n_videos:,} videos, with no request limit: as fast as YouTube answers (never for YouTube itself)"
    sessions = max(1, int(sessions))
    per_hour = cfg.videos_per_hour if _positive(cfg.videos_per_hour) else default_videos_per_hour(account)
    signed_in = account != ANONYMOUS
    limits = {"--videos-per-hour": per_hour * (1 if signed_in else sessions),
              "--max-requests-per-second": cfg.max_requests_per_second * 3600 / 2 * sessions}  # extraction + track
    translated = max(0, len(cfg.langs) - 1)
    if translated and _positive(cfg.translation_requests_per_second):
        limits["--translation-requests-per-second"] = cfg.translation_requests_per_second * 3600 / translated * sessions
    bound = min(limits, key=limits.get)
    days = n_videos / limits[bound] / 24
    where = f"{sessions} sessions" if sessions > 1 else "one session"
    return (f"{n_videos:,} videos take {days:,.1f} days in {where} at {limits[bound] / sessions:,.0f} videos/hour a "
            f"session (bound by {bound}; a {'signed-in' if signed_in else 'guest'} session may extract "
            f"{per_hour:,.0f}/hour{', one account across all its egresses' if signed_in and sessions > 1 else ''})")


def _positive(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


class Deferred(Exception):
    """A request not made now because its budget would hold it past its wait; the message says why."""


class DeferringBudget:
    """A budget whose ``acquire`` waits at most ``max_wait`` seconds, else raises ``Deferred`` (nothing
    reserved, nothing told to the breaker): what a translation's fetcher spends. Everything else is
    the wrapped budget's."""

    def __init__(self, budget, max_wait: float):
        self.budget, self.max_wait = budget, max_wait

    def acquire(self) -> None:
        why = self.budget.acquire_within(self.max_wait)
        if why is not None:
            raise Deferred(why)

    def __getattr__(self, name):  # only for what this class lacks; never its own fields (pickling, copies)
        if name in ("budget", "max_wait") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.budget, name)

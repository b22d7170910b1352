"""What ``mmp-crawl`` checks before it asks YouTube anything, and ``mmp-crawl --check``.

The checks themselves (yt-dlp, the JS runtime, EJS, impersonation, PO-token plugins, cookies,
proxies) live in ``pipeline.crawl.ytdlp_env``; this module turns them into the crawl's verdicts.
"""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.runtime.cli import comma_list
from shards.errors import UserError

from pipeline.crawl.politeness import default_budget_dir

log = logging.getLogger("mmp.crawl")


def budget_line(rate, adaptive: bool, quiet: float, sleep_subtitles: float, budget_dir,
                translation_rate: float | None = None) -> str:
    if not rate:
        return f"no request limit; {sleep_subtitles:g} s before each subtitle file"
    how = f"adaptive: halved on refusals, back up after {quiet:g} s quiet" if adaptive else "fixed"
    translations = f", translations {translation_rate:g}/s apart" if translation_rate else ""
    return (f"{rate:g} requests/s per session and egress address{translations} ({how}), {sleep_subtitles:g} s "
            f"before each subtitle file, shared through {budget_dir or default_budget_dir()}")


def check_main(args) -> int:
    """``mmp-crawl --check``: is this machine ready to crawl? Offline, one line a check."""
    from pipeline.crawl.ytdlp_env import checks_exit_code, format_checks, run_checks

    proxies = comma_list(*args.proxy)
    checks = run_checks(js_runtime_spec=args.js_runtime, cookies=str(args.cookies) if args.cookies else None,
                        proxies=proxies, extractor_args=list(args.extractor_args),
                        budget_line=budget_line(args.max_requests_per_second, args.adaptive_rate,
                                                args.rate_quiet_seconds, args.sleep_subtitles, args.budget_dir,
                                                args.translation_requests_per_second))
    checks.append(session_check(args))
    print(format_checks(checks))
    return checks_exit_code(checks)


HOWTO100M_VIDEOS = 1_238_911  # the paper's Table 8: videos with an English track


def session_check(args):
    """The session the crawl would send in, its budgets, and how long the input (``--videos``, else all
    of HowTo100M) takes at them, per session and with the ``--egress`` sessions given."""
    from types import SimpleNamespace

    from pipeline.crawl.sessions import ANONYMOUS, account_of, projection
    from pipeline.crawl.videolist import dedupe, read_video_list
    from pipeline.crawl.ytdlp_env import Check

    try:
        account = account_of(str(args.cookies) if args.cookies else None)
    except ValueError:  # a cookie file the crawl cannot use (access.CookieFileError): the cookies line says why
        account = ANONYMOUS
    langs = args.langs[0] if isinstance(args.langs, tuple) else args.langs
    cfg = SimpleNamespace(videos_per_hour=args.videos_per_hour, max_requests_per_second=args.max_requests_per_second,
                          translation_requests_per_second=args.translation_requests_per_second, langs=list(langs),
                          cookies=None)
    n, what = HOWTO100M_VIDEOS, "all of HowTo100M"
    if args.videos:  # a list that cannot be read is the command's one-sentence error
        n, what = len([e for e in dedupe(read_video_list(Path(args.videos)))[0] if e.valid]), str(args.videos)
    sessions = len(comma_list(*args.egress)) or 1
    return Check("session", "ok", f"{account}; {what}: " + projection(cfg, n, account, sessions))


def js_runtime_ready(cfg) -> bool:
    """Whether yt-dlp has a usable JavaScript runtime now (then --retry-failed redoes what an extraction
    without one missed)."""
    from pipeline.crawl.ytdlp_env import find_js_runtime

    try:
        runtime = find_js_runtime(cfg.js_runtime)
    except ValueError:
        return False
    return runtime is not None and runtime.accepted


def check_impersonation(cfg, allow_no_impersonation: bool) -> None:
    """Refuse a crawl whose requests cannot be sent as a browser's, unless told to go on; ``cfg.impersonate``
    then records that they were not."""
    from pipeline.crawl.impersonate import impersonation_status

    status = impersonation_status()
    if status.available:
        cfg.impersonate = True
        return
    if not allow_no_impersonation:
        raise UserError(f"{status.detail}, or crawl anyway with --allow-no-impersonation (YouTube refuses a "
                        f"script's requests sooner than a browser's)")
    log.warning("crawling without browser impersonation (%s)", status.detail)
    cfg.impersonate = False


def preflight(cfg, allow_no_js_runtime: bool, allow_no_impersonation: bool = False) -> None:
    """The checks a crawl runs before any worker starts; a problem the user must fix is a UserError."""
    from pipeline.crawl.access import CookieFileError, inspect_cookies
    from pipeline.crawl.ytdlp_env import find_js_runtime, parse_extractor_args

    check_impersonation(cfg, allow_no_impersonation)  # subtitle files are asked of YouTube, info JSON or not
    if cfg.cookies:
        try:
            inspect_cookies(cfg.cookies)
        except CookieFileError as exc:
            raise UserError(str(exc)) from None
    try:
        parse_extractor_args(list(cfg.extractor_args))
        runtime = find_js_runtime(cfg.js_runtime)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if cfg.info_json:  # nothing is asked of YouTube's player: no challenge to solve
        return
    if runtime is None or not runtime.accepted:
        why = runtime.reason if runtime is not None else "none was found"
        if not allow_no_js_runtime:
            raise UserError(f"yt-dlp has no usable JavaScript runtime ({why}), so YouTube would serve it one client "
                            f"and subtitles may be missing: install the project's dependencies (they bring deno), or "
                            f"name one with --js-runtime NAME:PATH (see `mmp-crawl --check`); "
                            f"--allow-no-js-runtime crawls anyway")
        log.warning("crawling without a usable JavaScript runtime (%s): yt-dlp falls back to one client and "
                    "subtitles may be missing", why)

"""What yt-dlp needs on this machine to crawl YouTube, found and checked offline.

Since 2025.11.12 yt-dlp solves YouTube's JavaScript challenges with an external runtime
(deno, node, quickjs or bun) running the EJS solver scripts of ``yt-dlp-ejs``; without
one it falls back to fewer clients and formats go missing. Some subtitle URLs also want
a PO token, which only a provider plugin (e.g. bgutil) or a token given in
``--extractor-args`` supplies. And YouTube's subtitle files are asked for as a browser asks
(curl_cffi's impersonation, ``impersonate.py``). This module finds the runtime (the deno that pip installs
with this package first), builds the YoutubeDL params that make the crawl use exactly
what was found, and runs the readiness checks behind ``--check``. Every answer comes
from yt-dlp's own classes and registries; nothing here sends a request anywhere.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from shards.errors import UserError

from pipeline.crawl.access import (CookieFileError, cookie_level, describe_args, inspect_cookies, mask_arg_text,
                                   mask_url, proxy_level)

MIN_YTDLP = dt.date(2025, 11, 12)  # first release that runs an external JS runtime
STALE_DAYS = 90
PRIORITY = ("deno", "node", "quickjs", "bun")  # yt-dlp's own order (its --js-runtimes help)
_EXECUTABLE = {"quickjs": "qjs"}


class YtdlpEnvError(UserError, ValueError):
    """A setting the user gave cannot work; the message is one sentence saying what to do."""


class JsRuntimeError(YtdlpEnvError):
    pass


class ExtractorArgsError(YtdlpEnvError):
    pass


@dataclass(frozen=True)
class JsRuntime:
    name: str       # yt-dlp's key: deno, node, quickjs, bun
    path: str       # the executable, absolute where it could be resolved
    version: str
    accepted: bool  # yt-dlp's own verdict (JsRuntimeInfo.supported: its minimum version)
    reason: str
    source: str     # where it was found: "pip package deno", "PATH" or "--js-runtime"


@dataclass(frozen=True)
class PotProvider:
    name: str
    version: str
    builtin: bool              # shipped with yt-dlp, not a plugin
    available: bool            # the provider's own is_available(), which contacts nothing
    base_url: str | None = None  # where an HTTP provider expects its server (not contacted)


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # "ok", "warn" or "fail"
    detail: str


# ---------------------------------------------------------------- JavaScript runtime

def _runtime_classes() -> dict:
    import yt_dlp  # noqa: F401  (importing yt_dlp fills the registry)
    from yt_dlp.globals import supported_js_runtimes

    return supported_js_runtimes.value


def _probe(name: str, path: str | None, source: str) -> JsRuntime | None:
    """Ask yt-dlp's runtime class about ``path`` (None: its own search); None if nothing answers."""
    from yt_dlp.version import __version__

    cls = _runtime_classes()[name]
    info = cls(path=path).info
    if not info:
        return None
    resolved = shutil.which(info.path) or info.path
    minimum = getattr(cls, "MIN_SUPPORTED_VERSION", None)
    need = f"{name} >= {'.'.join(map(str, minimum))}" if minimum and info.name == name else info.name
    if info.supported:
        reason = f"yt-dlp {__version__} accepts {need}"
    else:
        reason = f"yt-dlp {__version__} needs {need}; update it, or use deno (pip install deno)"
    return JsRuntime(name, os.path.abspath(resolved) if os.path.exists(resolved) else resolved,
                     info.version, bool(info.supported), reason, source)


def _pip_deno() -> JsRuntime | None:
    try:
        from deno import find_deno_bin

        path = find_deno_bin()
    except (ImportError, FileNotFoundError):
        return None
    return _probe("deno", path, "pip package deno")


def _split_spec(spec: str) -> tuple[str, str | None]:
    """``NAME[:PATH]`` split as yt-dlp's own --js-runtimes splits it."""
    import optparse

    import yt_dlp

    try:
        runtimes = yt_dlp.parse_options(["--no-js-runtimes", "--js-runtimes", spec]).ydl_opts["js_runtimes"]
    except optparse.OptParseError:
        runtimes = {}
    if len(runtimes) != 1:
        raise JsRuntimeError(f"--js-runtime {spec!r} is not NAME[:PATH]; write e.g. deno or node:/usr/bin/node")
    (name, config), = runtimes.items()
    return name, config.get("path") or None


def _named_runtime(spec: str) -> JsRuntime:
    name, path = _split_spec(spec)
    if name not in _runtime_classes():
        names = ", ".join(n for n in PRIORITY if n in _runtime_classes())
        raise JsRuntimeError(f"--js-runtime {spec}: yt-dlp knows no runtime {name!r}; use one of {names}")
    exe = _EXECUTABLE.get(name, name)
    if path is None:
        found = (_pip_deno() if name == "deno" else None) or _probe(name, None, "PATH")
        if found is None:
            raise JsRuntimeError(f"--js-runtime {spec}: no {exe} found on PATH; install it or give its path "
                                 f"as {name}:/path/to/{exe}")
        return found
    if not os.path.exists(path):
        raise JsRuntimeError(f"--js-runtime {spec}: {path} does not exist; give the {exe} executable or its folder")
    found = _probe(name, path, "--js-runtime")
    if found is None:
        raise JsRuntimeError(f"--js-runtime {spec}: {path} is not a working {name} (it did not answer "
                             f"{exe} --version); give the {exe} executable or its folder")
    return found


def find_js_runtime(spec: str | None = None) -> JsRuntime | None:
    """The runtime yt-dlp should use: ``spec`` (``NAME[:PATH]``) if given, else the deno from pip,
    else the first that yt-dlp's own search finds (an accepted one before a rejected one).

    The deno from pip comes first because yt-dlp's own search looks only in the running
    interpreter's scripts folder and on PATH, which misses it under ``pip install --user``
    or ``--target`` and whenever another Python runs the crawl.
    """
    if spec is not None:
        return _named_runtime(spec)
    found, seen = [], set()
    for runtime in [_pip_deno()] + [_probe(n, None, "PATH") for n in PRIORITY if n in _runtime_classes()]:
        if runtime is not None and os.path.realpath(runtime.path) not in seen:
            seen.add(os.path.realpath(runtime.path))
            found.append(runtime)
    return next((r for r in found if r.accepted), found[0] if found else None)


def js_runtimes_param(rt: JsRuntime | None) -> dict:
    """YoutubeDL's ``js_runtimes``: ``{name: {"path": path}}`` for an accepted runtime, else ``{}``.

    ``{}`` switches yt-dlp's own search off (its default ``{"deno": {}}`` looks on PATH when a
    video is extracted), so the crawl uses exactly what the check saw and no other.
    """
    return {rt.name: {"path": rt.path}} if rt is not None and rt.accepted else {}


# ---------------------------------------------------------------- extractor args, EJS, version

def parse_extractor_args(values) -> dict:
    """``--extractor-args`` values in yt-dlp's syntax (``youtube:player_client=default,mweb;po_token=...``)
    as YoutubeDL's ``extractor_args``, each parsed by yt-dlp's own option parser."""
    import optparse

    import yt_dlp

    merged: dict = {}
    for value in values:
        try:
            parsed = yt_dlp.parse_options(["--extractor-args", value]).ydl_opts["extractor_args"]
        except optparse.OptParseError:
            raise ExtractorArgsError(f"--extractor-args {mask_arg_text(value)!r} is not "
                                     "IE_KEY:NAME=VALUE[,VALUE][;NAME=VALUE]; write e.g. "
                                     "youtube:player_client=default,mweb") from None
        for ie_key, args in parsed.items():
            if "" in args:
                raise ExtractorArgsError(f"--extractor-args {mask_arg_text(value)!r} has an empty argument name; "
                                         f"write {ie_key}:NAME=VALUE with no stray ';'")
            # yt-dlp replaces an extractor's args when its key repeats; two values for one
            # extractor are meant together, so they merge (a repeated name: the later wins).
            merged.setdefault(ie_key, {}).update(args)
    return merged


def ejs_scripts() -> tuple[bool, str]:
    """Whether yt-dlp-ejs, the challenge solver scripts the runtime runs, is here in the version yt-dlp wants."""
    from yt_dlp.dependencies import yt_dlp_ejs
    from yt_dlp.extractor.youtube.jsc._builtin.vendor import VERSION as wanted
    from yt_dlp.utils import version_tuple

    if yt_dlp_ejs is None:
        return False, f"yt-dlp-ejs missing (yt-dlp wants {wanted}); pip install 'yt-dlp[default]'"
    have = getattr(yt_dlp_ejs, "version", "unknown")
    if version_tuple(have, lenient=True)[:2] != version_tuple(wanted, lenient=True)[:2]:
        return False, f"yt-dlp-ejs {have}, but yt-dlp wants {wanted}; pip install -U 'yt-dlp[default]'"
    return True, f"yt-dlp-ejs {have}"


def check_ytdlp_version(version: str | None = None, today: dt.date | None = None) -> Check:
    """yt-dlp's release date against MIN_YTDLP (fail) and against today (warn when stale)."""
    if version is None:
        from yt_dlp.version import __version__ as version
    today = today or dt.date.today()
    m = re.match(r"(\d{4})\.(\d{1,2})\.(\d{1,2})", version)
    if not m:
        return Check("yt-dlp", "warn", f"{version}: not a release version, its age is unknown")
    released = dt.date(*map(int, m.groups()))
    age = (today - released).days
    if released < MIN_YTDLP:
        return Check("yt-dlp", "fail", f"{version} cannot use an external JS runtime; "
                     f"pip install -U 'yt-dlp[default]>={MIN_YTDLP:%Y.%m.%d}'")
    if age > STALE_DAYS:
        return Check("yt-dlp", "warn", f"{version} ({age} days old): YouTube changes often; "
                     "update with pip install -U 'yt-dlp[default]'")
    return Check("yt-dlp", "ok", f"{version} ({age} days old)")


# ---------------------------------------------------------------- what a YoutubeDL makes of it

def ytdlp_params(js_runtime: JsRuntime | None, extractor_args=None) -> dict:
    """The YoutubeDL params to merge into the crawl's: ``js_runtimes`` always (``{}``: none, and no
    search of PATH later), ``extractor_args`` when given (a dict, or ``--extractor-args`` strings)."""
    params = {"js_runtimes": js_runtimes_param(js_runtime)}
    if extractor_args:
        args = extractor_args if isinstance(extractor_args, Mapping) else parse_extractor_args(extractor_args)
        params["extractor_args"] = {ie: {k: list(v) for k, v in a.items()} for ie, a in args.items()}
    return params


class _Quiet:
    def debug(self, msg):
        pass

    info = warning = error = debug


@contextlib.contextmanager
def _youtube_extractor(params: dict):
    """yt-dlp's YouTube extractor under ``params``, not initialised: it has sent nothing."""
    import yt_dlp

    with yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True, "logger": _Quiet(), **params}) as ydl:
        yield ydl.get_info_extractor("Youtube")


def js_solvers(params: dict) -> list[str]:
    """The JS challenge providers yt-dlp would find available under ``params`` (empty: it falls back
    to the clients that need no JavaScript), decided the way its YouTube extractor decides."""
    from yt_dlp.extractor.youtube.jsc._director import initialize_jsc_director

    with _youtube_extractor(params) as ie:
        director = initialize_jsc_director(ie)
        return [p.PROVIDER_NAME for p in director.providers.values() if p.is_available()]


def po_token_providers(extractor_args: dict | None = None) -> list[PotProvider]:
    """The PO token providers registered with yt-dlp (its own and those of plugins such as bgutil)."""
    from yt_dlp.extractor.youtube.pot._director import initialize_pot_director
    from yt_dlp.extractor.youtube.pot._provider import BuiltinIEContentProvider

    found = []
    with _youtube_extractor({"extractor_args": extractor_args or {}}) as ie:
        for provider in initialize_pot_director(ie).providers.values():
            base = getattr(provider, "DEFAULT_BASE_URL", None)
            if base:
                base = provider._configuration_arg("base_url", default=[base], casesense=True)[0]
            found.append(PotProvider(provider.PROVIDER_NAME, provider.PROVIDER_VERSION,
                                     isinstance(provider, BuiltinIEContentProvider), provider.is_available(), base))
    return found


# ---------------------------------------------------------------- the readiness check

def _runtime_check(spec: str | None, args: dict) -> Check:
    try:
        rt = find_js_runtime(spec)
    except JsRuntimeError as exc:
        return Check("js runtime", "fail", str(exc))
    if rt is None:
        return Check("js runtime", "fail", "none found, so yt-dlp falls back to the clients that need no "
                     "JavaScript and formats go missing; pip install deno, or give --js-runtime NAME:PATH")
    where = f"{rt.name} {rt.version} at {rt.path} ({rt.source})"
    if not rt.accepted:
        return Check("js runtime", "fail", f"{where}: {rt.reason}")
    solvers = js_solvers(ytdlp_params(rt, args))
    if not solvers:
        return Check("js runtime", "fail", f"{where}, but no yt-dlp challenge provider takes it; "
                     "pip install -U 'yt-dlp[default]'")
    return Check("js runtime", "ok", f"{where}; yt-dlp solves challenges with {', '.join(solvers)}")


def _pot_check(args: dict) -> Check:
    providers = po_token_providers(args)
    manual = any("po_token" in a for a in args.values())
    if not providers:
        if manual:
            return Check("po tokens", "ok", "no provider registered; a po_token is given in --extractor-args")
        return Check("po tokens", "warn", "no provider registered, so subtitles that need a PO token will be "
                     "missing; pip install 'multi-howto100m[pot]' and run the bgutil provider server")
    shown = []
    for p in providers:
        notes = [n for n in ("" if p.builtin else "plugin", "" if p.available else "unavailable") if n]
        shown.append(f"{p.name} {p.version}" + (f" ({', '.join(notes)})" if notes else ""))
    detail = ", ".join(shown)
    for p in providers:
        if p.base_url:
            url = mask_url(p.base_url)
            detail += f"; {p.name} expects its server at {url} (not contacted; curl {url}/ping tests it)"
    return Check("po tokens", "ok", detail + ("; a po_token is also given in --extractor-args" if manual else ""))


def impersonation_check() -> Check:
    """Whether requests can be sent as a browser sends them (curl_cffi), as yt-dlp sends YouTube's subtitle files."""
    from pipeline.crawl.impersonate import impersonation_status

    status = impersonation_status()
    return Check("impersonation", "ok" if status.available else "fail", status.detail)


def run_checks(*, js_runtime_spec: str | None = None, cookies=None, proxies=(), budget_line: str | None = None,
               extractor_args=(), today: dt.date | None = None) -> list[Check]:
    """Everything the crawl needs from this machine, checked without a request to anyone."""
    checks = [check_ytdlp_version(today=today)]
    args, args_check = {}, None
    try:
        args = parse_extractor_args(extractor_args)
        if args:
            args_check = Check("extractor args", "ok", describe_args(args))
    except ExtractorArgsError as exc:
        args_check = Check("extractor args", "fail", str(exc))
    checks.append(_runtime_check(js_runtime_spec, args))
    ok, detail = ejs_scripts()
    checks.append(Check("ejs scripts", "ok" if ok else "fail", detail))
    checks.append(impersonation_check())
    checks.append(_pot_check(args))
    if cookies is None:
        checks.append(Check("cookies", "ok", "none: an anonymous session (age-restricted and members-only videos "
                            "stay unavailable)"))
    else:
        try:
            checks.append(Check("cookies", *cookie_level(inspect_cookies(cookies))))
        except CookieFileError as exc:
            checks.append(Check("cookies", "fail", str(exc)))
    checks.append(Check("proxies", *proxy_level(list(proxies))))
    if budget_line:
        checks.append(Check("budget", "ok", budget_line))
    if args_check:
        checks.append(args_check)
    return checks


def format_checks(checks: list[Check]) -> str:
    """One line per check, then the verdict."""
    width = max([12, *(len(c.name) for c in checks)])
    lines = [f"{c.level:<5} {c.name:<{width}} {c.detail}".rstrip() for c in checks]
    fails = sum(c.level == "fail" for c in checks)
    warns = sum(c.level == "warn" for c in checks)
    if fails:
        lines.append(f"not ready: {fails} problem{'s' if fails != 1 else ''}")
    else:
        lines.append("ready to crawl" + (f" ({warns} warning{'s' if warns != 1 else ''})" if warns else ""))
    return "\n".join(lines)


def checks_exit_code(checks: list[Check]) -> int:
    """0 unless a check failed (1)."""
    return 1 if any(c.level == "fail" for c in checks) else 0

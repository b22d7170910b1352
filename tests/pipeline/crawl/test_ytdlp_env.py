"""What yt-dlp needs on this machine: runtime, params, cookies, proxies and the readiness report (no network)."""
import datetime as dt
import importlib.metadata
import os
from pathlib import Path
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from pipeline.crawl import access
from pipeline.crawl import ytdlp_env as env
from pipeline.crawl.access import CookieFileError, ProxyError
from pipeline.crawl.ytdlp_env import Check, ExtractorArgsError, JsRuntimeError

DAY = 86400


def pip_deno() -> str:
    deno = pytest.importorskip("deno")
    return os.path.abspath(deno.find_deno_bin())


# ---------------------------------------------------------------- JavaScript runtime

def test_the_deno_pip_installed_is_found_first_and_accepted():
    path = pip_deno()
    rt = env.find_js_runtime()
    assert (rt.name, rt.path, rt.source, rt.accepted) == ("deno", path, "pip package deno", True)
    printed = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    assert printed.startswith(f"deno {rt.version} ") and re.fullmatch(r"\d+\.\d+\.\d+", rt.version)
    assert "accepts deno >= 2.3.0" in rt.reason


def test_a_named_path_overrides_the_search(tmp_path):
    path = pip_deno()
    for spec in (f"deno:{path}", f"deno:{os.path.dirname(path)}"):  # yt-dlp takes the binary or its folder
        rt = env.find_js_runtime(spec)
        assert (rt.name, rt.path, rt.source, rt.accepted) == ("deno", path, "--js-runtime", True)
    assert env.find_js_runtime("deno").path == path


@pytest.mark.parametrize("spec, says", [
    ("deno:/nonexistent/bin/deno", "/nonexistent/bin/deno does not exist"),
    ("rhino", "yt-dlp knows no runtime 'rhino'; use one of deno, node, quickjs, bun"),
    ("", "is not NAME[:PATH]"),
])
def test_a_bad_runtime_spec_is_one_clear_sentence(spec, says):
    with pytest.raises(JsRuntimeError) as err:
        env.find_js_runtime(spec)
    assert isinstance(err.value, ValueError) and says in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_is_not_the_runtime_is_refused(tmp_path):
    fake = tmp_path / "deno"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(JsRuntimeError, match=f"{fake} is not a working deno"):
        env.find_js_runtime(f"deno:{fake}")


def test_node_on_path_gets_ytdlps_own_verdict():
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node on PATH")
    from yt_dlp.utils._jsruntime import NodeJsRuntime

    rt = env.find_js_runtime("node")
    verdict = NodeJsRuntime(path=node).info
    assert (rt.name, rt.path, rt.source) == ("node", os.path.abspath(node), "PATH")
    assert rt.version == verdict.version and rt.accepted == verdict.supported
    if verdict.version_tuple < NodeJsRuntime.MIN_SUPPORTED_VERSION:  # this machine's node 20
        assert not rt.accepted and "needs node >= 22.0.0" in rt.reason
        assert env.js_runtimes_param(rt) == {}  # yt-dlp would ignore it anyway: say so, don't pass it
        assert env.run_checks(js_runtime_spec="node")[1].level == "fail"


def test_a_youtubedl_built_from_the_params_carries_the_runtime():
    import yt_dlp

    rt = env.find_js_runtime()
    params = env.ytdlp_params(rt)
    assert params == {"js_runtimes": {"deno": {"path": rt.path}}}
    with yt_dlp.YoutubeDL({"quiet": True, **params}) as ydl:
        resolved = ydl._js_runtimes["deno"].info  # what yt-dlp's challenge providers will run
    assert (resolved.path, resolved.version, resolved.supported) == (rt.path, rt.version, True)
    assert env.js_solvers(params) == ["deno"]


def test_no_runtime_means_none_and_no_search_later():
    import yt_dlp

    params = env.ytdlp_params(None)
    assert params == {"js_runtimes": {}}
    with yt_dlp.YoutubeDL({"quiet": True, **params}) as ydl:
        assert ydl._js_runtimes == {}  # yt-dlp's default {"deno": {}} would look on PATH
    assert env.js_solvers(params) == []


# ---------------------------------------------------------------- extractor args, EJS, PO tokens

def test_extractor_args_parse_as_ytdlp_parses_them():
    import yt_dlp

    args = env.parse_extractor_args(["youtube:player_client=default,mweb;po_token=web.gvs+Tok3n",
                                     "youtube:skip=dash", "youtubepot-bgutilhttp:base_url=http://127.0.0.1:4416"])
    assert args == {"youtube": {"player_client": ["default", "mweb"], "po_token": ["web.gvs+Tok3n"], "skip": ["dash"]},
                    "youtubepot-bgutilhttp": {"base_url": ["http://127.0.0.1:4416"]}}
    with yt_dlp.YoutubeDL({"quiet": True, **env.ytdlp_params(None, ["youtube:player_client=default,mweb"])}) as ydl:
        ie = ydl.get_info_extractor("Youtube")
        assert ie._configuration_arg("player_client") == ["default", "mweb"]
    assert env.parse_extractor_args([]) == {}


@pytest.mark.parametrize("value", ["nocolon", "youtube;po_token=S3CRETtok", "youtube:", "youtube:a=1;;b=2", ""])
def test_bad_extractor_args_are_one_sentence_without_the_token(value):
    with pytest.raises(ExtractorArgsError) as err:
        env.parse_extractor_args([value])
    message = str(err.value)
    assert message.startswith("--extractor-args ") and "\n" not in message and "S3CRET" not in message


def test_the_ejs_scripts_are_here():
    ok, detail = env.ejs_scripts()
    assert ok and detail == f"yt-dlp-ejs {importlib.metadata.version('yt-dlp-ejs')}"


def test_po_token_providers_come_from_ytdlps_registry_and_nothing_is_contacted():
    try:
        version = importlib.metadata.version("bgutil-ytdlp-pot-provider")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the bgutil plugin ([pot] extra) is not installed")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.3)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        providers = {p.name: p for p in env.po_token_providers({"youtubepot-bgutilhttp": {"base_url": [url]}})}
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    http = providers["bgutil:http"]
    assert (http.version, http.builtin, http.base_url) == (version, False, url)
    assert env.po_token_providers()[0].base_url == "http://127.0.0.1:4416"
    check = env._pot_check({})
    assert check.level == "ok" and "bgutil:http" in check.detail and "curl http://127.0.0.1:4416/ping" in check.detail


# ---------------------------------------------------------------- cookies

def cookie_file(path, rows, header="# Netscape HTTP Cookie File"):
    lines = [header, ""] if header else []
    for domain, name, value, expires in rows:
        lines.append("\t".join([domain, "TRUE" if domain.startswith(".") else "FALSE", "/", "TRUE",
                                str(int(expires)), name, value]))
    path.write_text("\n".join(lines) + "\n")
    return path


def signed_in(now, sid_expires):
    return [(".youtube.com", name, f"v4lue-{name}", now + 400 * DAY) for name in
            ("HSID", "SSID", "APISID", "SAPISID", "__Secure-1PSID", "__Secure-3PSID", "LOGIN_INFO")] + [
            (".youtube.com", "SID", "v4lue-SID", sid_expires), (".google.com", "NID", "v4lue-NID", now + 9 * DAY),
            (".example.org", "other", "v4lue-o", now + DAY), (".youtube.com", "PREF", "f6=8", 0)]


def test_a_signed_in_cookie_file_is_summarised(tmp_path):
    now = time.time()
    path = cookie_file(tmp_path / "cookies.txt", signed_in(now, now + 200 * DAY))
    s = access.inspect_cookies(path, now=now)
    assert (s.path, s.total, s.youtube, s.logged_in, s.expired) == (str(path), 11, 10, True, ())
    assert s.login == ("SID", "HSID", "SSID", "APISID", "SAPISID", "__Secure-1PSID", "__Secure-3PSID", "LOGIN_INFO")
    assert s.earliest_expiry == dt.datetime.fromtimestamp(int(now + 200 * DAY), dt.timezone.utc)
    level, detail = access.cookie_level(s, now=now)
    assert level == "ok" and detail.startswith("11 cookies, 10 for YouTube/Google; signed in (SID, ")
    assert "(in 200 days)" in detail or "(in 199 days)" in detail


def test_an_expired_login_cookie_warns(tmp_path):
    now = time.time()
    s = access.inspect_cookies(cookie_file(tmp_path / "c.txt", signed_in(now, now - DAY)), now=now)
    assert s.expired == ("SID",) and s.earliest_expiry < dt.datetime.now(dt.timezone.utc)
    level, detail = access.cookie_level(s, now=now)
    assert level == "warn" and "login cookies expired: SID" in detail


def test_cookies_without_a_login_or_for_other_sites_warn(tmp_path):
    now = time.time()
    anonymous = access.inspect_cookies(cookie_file(tmp_path / "a.txt", [(".youtube.com", "PREF", "x", now + DAY)]))
    assert not anonymous.logged_in and access.cookie_level(anonymous)[0] == "warn"
    elsewhere = access.inspect_cookies(cookie_file(tmp_path / "b.txt", [(".example.org", "k", "v", now + DAY)]))
    assert elsewhere.youtube == 0 and "none will reach YouTube" in access.cookie_level(elsewhere)[1]


@pytest.mark.parametrize("kind", ["no header", "json", "binary", "bad line", "missing", "a folder", "empty"])
def test_a_malformed_cookie_file_names_the_users_path_and_no_value(tmp_path, capsys, kind):
    path = tmp_path / "my cookies.txt"
    secret = "S3CRETv4lue"
    good = (".youtube.com", "SID", secret, time.time() + DAY)
    if kind == "no header":
        cookie_file(path, [good], header=None)
    elif kind == "json":
        path.write_text(f'[{{"domain": ".youtube.com", "name": "SID", "value": "{secret}"}}]\n')
    elif kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + secret.encode())
    elif kind == "bad line":
        cookie_file(path, [good])
        with path.open("a") as f:
            f.write(f".youtube.com TRUE / TRUE 0 HSID {secret}\n")  # spaces, not tabs
    elif kind == "a folder":
        path.mkdir()
    elif kind == "empty":
        path.write_text("")
    with pytest.raises(CookieFileError) as err:
        access.inspect_cookies(path)
    message = str(err.value)
    assert f"cookie file {path} " in message and secret not in message and "\n" not in message
    assert "Netscape" in message
    assert secret not in capsys.readouterr().err  # yt-dlp's loader echoes bad lines; not here
    failed = env.run_checks(cookies=str(path))
    assert [c.level for c in failed if c.name == "cookies"] == ["fail"]


# ---------------------------------------------------------------- proxies

@pytest.mark.parametrize("url, shown", [
    ("http://user:hunter2@proxy.example:3128", "http://***@proxy.example:3128"),
    ("HTTP://proxy.example:3128/", "HTTP://proxy.example:3128/"),
    ("http://u:p%40ss@10.0.0.1:9050", "http://***@10.0.0.1:9050"),
])
def test_good_proxies_come_back_with_the_password_hidden(url, shown):
    assert access.parse_proxy(url) == shown


@pytest.mark.parametrize("url", [
    "ftp://user:hunter2@proxy.example:21", "http://user:hunter2@proxy.example", "proxy.example:3128",
    "http://user:hunter2@proxy.example:99999", "http://user:hunter2@proxy.example:3128/path",
    "http://user:hun/ter2@proxy.example:3128", "http://user:hun@ter2@", "socks5://:1080",
    "socks5h://user:hunter2@127.0.0.1:1080", "https://user:hunter2@proxy.example:443",
])
def test_bad_proxies_are_one_sentence_without_the_password(url):
    with pytest.raises(ProxyError) as err:
        access.parse_proxy(url)
    message = str(err.value)
    assert isinstance(err.value, ValueError) and message.startswith("proxy ") and "\n" not in message
    assert "hunter2" not in message and "ter2" not in message
    level, detail = access.proxy_level(["http://127.0.0.1:3128", url])
    assert level == "fail" and "hunter2" not in detail


# ---------------------------------------------------------------- version, report

@pytest.mark.parametrize("version, today, level, says", [
    ("2026.10.26", dt.date(2026, 12, 1), "ok", "2026.10.26 (36 days old)"),
    ("2026.10.26.232101", dt.date(2026, 10, 26), "ok", "(0 days old)"),
    ("2025.11.12", dt.date(2025, 12, 1), "ok", "(19 days old)"),
    ("2026.10.26", dt.date(2027, 2, 1), "warn", "(98 days old): YouTube changes often; update"),
    ("2025.10.22", dt.date(2025, 10, 30), "fail", "cannot use an external JS runtime"),
    ("unknown", dt.date(2026, 1, 1), "warn", "age is unknown"),
])
def test_ytdlp_version_and_age(version, today, level, says):
    check = env.check_ytdlp_version(version, today=today)
    assert check.name == "yt-dlp" and check.level == level and says in check.detail


def test_format_checks_lines_and_verdict():
    checks = [Check("yt-dlp", "ok", "2026.10.26 (36 days old)"), Check("cookies", "warn", "not signed in")]
    assert env.format_checks(checks).splitlines() == [
        "ok    yt-dlp       2026.10.26 (36 days old)", "warn  cookies      not signed in", "ready to crawl (1 warning)"]
    assert env.checks_exit_code(checks) == 0
    checks += [Check("proxies", "fail", "bad"), Check("extractor args", "fail", "bad too")]
    lines = env.format_checks(checks).splitlines()
    assert lines[2] == "fail  proxies        bad" and lines[-1] == "not ready: 2 problems"
    assert env.checks_exit_code(checks) == 1
    assert env.format_checks([Check("yt-dlp", "ok", "x")]).splitlines()[-1] == "ready to crawl"


def test_run_checks_with_nothing_given_passes_here():
    checks = env.run_checks()
    assert [c.name for c in checks] == ["yt-dlp", "js runtime", "ejs scripts", "impersonation", "po tokens",
                                        "cookies", "proxies"]
    assert env.checks_exit_code(checks) == 0, env.format_checks(checks)
    assert env.format_checks(checks).splitlines()[-1].startswith("ready to crawl")


def test_run_checks_with_everything_given_shows_no_secret(tmp_path):
    now = time.time()
    cookies = cookie_file(tmp_path / "cookies.txt", signed_in(now, now + 200 * DAY))
    checks = env.run_checks(cookies=str(cookies), proxies=["http://user:hunter2@proxy.example:3128"],
                            budget_line="2.0 requests/s shared by this machine",
                            extractor_args=["youtube:player_client=default,mweb;po_token=web.gvs+S3CRET"],
                            today=dt.date(2026, 12, 1))
    report = env.format_checks(checks)
    assert [c.name for c in checks][-3:] == ["proxies", "budget", "extractor args"]
    assert "S3CRET" not in report and "hunter2" not in report and "v4lue" not in report
    assert "po_token=(hidden)" in report and "http://***@proxy.example:3128" in report
    # the name column widens to the longest name, here "extractor args"
    assert "ok    budget         2.0 requests/s shared by this machine" in report.splitlines()


def test_importing_the_module_leaves_ytdlp_unimported():
    code = "import sys, pipeline.crawl.ytdlp_env; print('yt_dlp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[3])).stdout
    assert out.strip() == "False"

"""What mmp-crawl checks before it asks YouTube anything, what it tells the user on the way,
and the languages that travel with the data."""
import json

import pytest

from pipeline.subtitles import stage as align_stage

from pipeline.crawl import config as crawl_config
from pipeline.crawl import stage as crawl

from pipeline.crawl import sources
from pipeline.crawl.sessions import session_budgets
from pipeline.crawl import ytdlp_env

from tests.conftest import read_all_rows, read_all_samples


def test_check_alone_reports_every_line_and_a_verdict(capsys):
    assert crawl.main(["--check"]) == 0
    out = capsys.readouterr().out
    for name in ("yt-dlp", "js runtime", "ejs scripts", "po tokens", "cookies", "proxies", "budget"):
        assert any(line.split()[1:2] == name.split()[:1] for line in out.splitlines()), (name, out)
    assert "deno" in out and "0.5 requests/s per session and egress address, translations 0.5/s apart (adaptive" in out
    assert out.strip().splitlines()[-1] == "ready to crawl"


def test_check_fails_on_what_the_user_gave(tmp_path, capsys):
    bad = tmp_path / "cookies.txt"
    bad.write_text("this is not a cookie file\n\x00\x01")
    rc = crawl.main(["--check", "--cookies", str(bad), "--proxy", "ftp://nohost", "--js-runtime", "node"])
    out = capsys.readouterr().out
    assert rc != 0
    assert str(bad) in out and "not ready" in out.splitlines()[-1]
    assert "node" in out and "22" in out  # the machine's node 20 is too old for yt-dlp


def test_a_malformed_cookie_file_is_one_sentence_before_any_worker(sample, tmp_path, capsys):
    bad = tmp_path / "my-cookies.txt"
    bad.write_text("garbage\tline\nsecretcookievalue\n")
    args = sample.crawl_args(tmp_path / "d", "--cookies", str(bad))
    args[args.index("--workers") + 1] = "2"
    assert crawl.main(args) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err and "secretcookievalue" not in err
    assert "worker" not in err and "mmp-crawl-" not in err  # not a dead worker, not a temp copy
    assert not (tmp_path / "d" / "crawl").exists() or not list((tmp_path / "d" / "crawl").glob("*.parquet"))


def test_a_crawl_that_asks_youtube_refuses_without_a_js_runtime(tmp_path, capsys, monkeypatch):
    ids = tmp_path / "ids.txt"
    ids.write_text("nVbIUDjzWY4\n")
    monkeypatch.setattr(ytdlp_env, "find_js_runtime", lambda spec=None: None)
    rc = crawl.main(["--videos", str(ids), "--out", str(tmp_path / "d"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "JavaScript runtime" in err and "--allow-no-js-runtime" in err and "--js-runtime" in err
    assert "Traceback" not in err
    cfg = crawl_config.config_from_args(crawl_config.build_parser().parse_args(["--videos", str(ids), "--out", str(tmp_path)]))
    crawl.preflight(cfg, allow_no_js_runtime=True)  # goes on, with a warning


def test_a_bad_js_runtime_or_extractor_args_is_one_sentence(sample, tmp_path, capsys):
    assert crawl.main(sample.crawl_args(tmp_path / "d", "--js-runtime", f"deno:{tmp_path}/no-such-deno")) == 2
    assert "no-such-deno" in capsys.readouterr().err
    assert crawl.main(sample.crawl_args(tmp_path / "d", "--extractor-args", "youtube")) == 2
    err = capsys.readouterr().err
    assert "--extractor-args" in err or "extractor" in err


def test_ytdlp_gets_the_runtime_and_extractor_args(sample, tmp_path):
    cfg = crawl_config.config_from_args(crawl_config.build_parser().parse_args(
        ["--videos", str(sample.videos), "--out", str(tmp_path), "--extractor-args",
         "youtube:player_client=default,mweb"]))
    params = sources.ytdlp_params_for(cfg)
    runtime = ytdlp_env.find_js_runtime()
    assert params["js_runtimes"] == {"deno": {"path": runtime.path}}
    assert params["extractor_args"]["youtube"]["player_client"] == ["default", "mweb"]
    source = sources.YtdlpSource(cfg, session_budgets(cfg).own, None)
    ydl = source._ydls[0]
    assert ydl.params["writeautomaticsub"] and ydl.params["js_runtimes"] == params["js_runtimes"]


def test_ytdlp_warnings_are_shown_once_and_counted(sample, tmp_path, capsys, monkeypatch):
    """yt-dlp's own report_warning reaches the console once per distinct text, and is counted."""
    import yt_dlp

    logger = sources._YtdlpLogger()
    ydl = yt_dlp.YoutubeDL({"logger": logger, "quiet": True})
    original = sources.InfoJsonSource.get

    def get(self, video_id):
        ydl.report_warning(f"[youtube] {video_id}: n challenge solving failed: Some formats may be missing.")
        if video_id == "smplBikeFx2":
            ydl.report_warning(f"[youtube] {video_id}: There are missing subtitles languages because a PO token "
                               f"was not provided. Automatic captions for 150 languages are missing.")
        return original(self, video_id)

    monkeypatch.setattr(sources.InfoJsonSource, "get", get)
    monkeypatch.setattr(sources.InfoJsonSource, "take_warnings", lambda self: logger.take())
    real_context = crawl.CrawlContext.__init__

    def with_logger(self, *a, **kw):  # the stage's report_warning, as YtdlpSource gets it
        real_context(self, *a, **kw)
        logger.warn = self.warn

    monkeypatch.setattr(crawl.CrawlContext, "__init__", with_logger)
    out = tmp_path / "d"
    assert crawl.main(sample.crawl_args(out, "--langs", "en,de", "--executor", "inline")) == 0
    err = capsys.readouterr().err
    assert err.count("n challenge solving failed") == 1 and err.count("PO token was not provided") == 1
    rows = {r["video_id"]: r for r in read_all_rows(out / "crawl")}
    assert rows["smplPancak1"]["ytdlp_warnings"] == "js_runtime"
    assert rows["smplBikeFx2"]["ytdlp_warnings"] == "js_runtime,po_token"
    counts = {}
    for p in (out / "crawl").glob("*.stats.json"):
        for k, v in json.loads(p.read_text())["counts"].items():
            counts[k] = counts.get(k, 0) + v
    assert counts["ytdlp_warnings/js_runtime"] == 6 and counts["ytdlp_warnings/po_token"] == 1


def test_tracks_ytdlp_dropped_for_a_po_token_are_transient_failures(sample, tmp_path, monkeypatch):
    def take(self):
        return ["[youtube] smplBikeFx2: There are missing subtitles languages because a PO token was not "
                "provided. Subtitles for these languages are missing: de. Automatic captions for 150 languages "
                "are missing."]

    original = sources.InfoJsonSource.get

    def get(self, video_id):  # yt-dlp dropped the tracks: they are not in the dict
        info = original(self, video_id)
        if video_id == "smplBikeFx2":
            info["subtitles"], info["automatic_captions"] = {}, {}
            self.take_warnings = take.__get__(self)
        else:
            self.take_warnings = lambda: []
        return info

    monkeypatch.setattr(sources.InfoJsonSource, "get", get)
    out = tmp_path / "d"
    crawl.main(sample.crawl_args(out, "--langs", "en,de", "--executor", "inline"))
    row = {r["video_id"]: r for r in read_all_rows(out / "crawl")}["smplBikeFx2"]
    assert row["status"] == "po_token_required"
    assert row["de_status"] == row["en_status"] == "po_token_required" and "PO token" in row["de_error"]
    # a later run with the tracks back (a provider plugin installed) fetches them
    monkeypatch.undo()
    assert crawl.main(sample.crawl_args(out, "--langs", "en,de", "--retry-failed")) == 0
    row = {r["video_id"]: r for r in read_all_rows(out / "crawl")}["smplBikeFx2"]
    assert row["status"] == "ok"


@pytest.mark.parametrize("langs,word", [("eng", "'en'"), ("EN", "'en'"), ("en,dee", "dee"), ("en;de", "en;de")])
def test_bad_language_codes_are_refused_with_the_accepted_ones(sample, tmp_path, capsys, langs, word):
    assert crawl.main(sample.crawl_args(tmp_path / "d", "--langs", langs)) == 2
    err = capsys.readouterr().err
    assert word in err and "zh-Hans" in err and "vi" in err
    assert not (tmp_path / "d" / "crawl").exists()


def test_youtube_spellings_map_to_the_language_with_the_variant_recorded(sample, tmp_path):
    out = tmp_path / "d"
    assert crawl.main(sample.crawl_args(out, "--langs", "en,zh-Hans")) == 0
    rows = {r["video_id"]: r for r in read_all_rows(out / "crawl")}
    assert rows["smplPancak1"]["zh_status"] == "ok"
    s = read_all_samples(out / "crawl")["smplPancak1"]
    assert "zh.vtt" in s
    track = json.loads(s["info.json"])["tracks"]["zh"]
    assert track["key"] == "zh-Hans" and track["variant"] == "zh-Hans"
    config = json.loads((out / "crawl" / "config.json").read_text())["config"]
    assert config["langs"] == ["en", "zh"] and config["lang_variants"] == {"zh": "zh-Hans"}


def test_align_defaults_to_the_languages_of_the_crawl(sample, tmp_path):
    out = tmp_path / "d"
    assert crawl.main(sample.crawl_args(out, "--langs", "en,de")) == 0
    assert align_stage.main(["--crawl", str(out / "crawl"), "--out", str(out / "aligned"), "--no-progress",
                             "--workers", "1"]) == 0
    rows = {r["video_id"]: r for r in read_all_rows(out / "aligned")}
    assert rows["smplPancak1"]["status"] == "ok", rows["smplPancak1"]
    assert "fr" not in (rows["smplPancak1"].get("error") or "")
    config = json.loads((out / "aligned" / "config.json").read_text())["config"]
    assert config["langs"] == ["en", "de"]

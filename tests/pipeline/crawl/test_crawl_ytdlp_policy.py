"""Every request yt-dlp makes for the crawl passes the URL policy, and a video download is bounded.

The stand-in (allowed with --allow-host) plays YouTube; a second server on another port of
127.0.0.1, which no crawl allows, plays an internal service and counts what reaches it. Each
crawl runs under the watchdog. An address beyond this machine (169.254.169.254) is never
connected to: the test refuses any connection that is not to 127.0.0.1 and records it.
"""
import json
import socket

import pytest

from pipeline.crawl import stage as crawl
from pipeline.crawl.url_policy import UrlPolicy
from demo.server import SampleServer

from tests.conftest import read_all_rows, read_all_samples, real_fixtures
from tests.watchdog import call_main

VIDEO = "smplPancak1"


@pytest.fixture
def internal(tmp_path):
    """A server on 127.0.0.1 that no crawl allows: what a hostile URL would reach."""
    root = tmp_path / "internal"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "secret.mp4").write_bytes(b"internal service answer " * 100)
    (root / "dash").mkdir()
    (root / "dash" / "seg1.m4s").write_bytes(b"internal fragment " * 100)
    with SampleServer(root) as server:
        yield server


@pytest.fixture
def outward(tmp_path, monkeypatch):
    """Connections anywhere but 127.0.0.1 are refused here and written down (in the watched child too)."""
    record = tmp_path / "outward.txt"
    real = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] != "127.0.0.1":
            with open(record, "a") as f:
                f.write(f"{address[0]}\n")
            raise ConnectionRefusedError(f"test: no connection to {address[0]}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return record


def crawl_video_dict(sample, tmp_path, info: dict, *extra, seconds=60, memory_mb=1024) -> tuple[dict, dict]:
    """Crawl ``VIDEO`` with ``info`` as its info dict and --download-video: (row, sample members)."""
    base = json.loads((sample.info / f"{VIDEO}.info.json").read_text())
    if info.get("_type", "video") == "video":
        info = {**base, **info}
    (sample.info / f"{VIDEO}.info.json").write_text(json.dumps(info))
    (sample.root / "one.txt").write_text(VIDEO + "\n")
    out = tmp_path / "data"
    args = sample.crawl_args(out, "--langs", "en", "--download-video", "--retries", "0", *extra)
    args[args.index("--videos") + 1] = str(sample.root / "one.txt")
    code, stdout, stderr = call_main(crawl.main, args, seconds=seconds, memory_mb=memory_mb)
    assert code == 0, stderr
    (row,) = read_all_rows(out / "crawl")
    return row, read_all_samples(out / "crawl").get(VIDEO, {})


def fmt(url: str, **more) -> dict:
    return {"format_id": "18", "ext": "mp4", "protocol": "http", "width": 96, "height": 64,
            "vcodec": "avc1.42001E", "acodec": "mp4a.40.2", "url": url, **more}


def assert_refused(row, members, internal, word="not a YouTube host"):
    assert row["video_status"] == "refused_url", row
    assert word in row["video_error"]
    assert internal.count() == 0
    assert not any(name in members for name in ("mp4", "webm", "mkv"))


# ---------------------------------------------------------------- where yt-dlp is sent

def test_a_format_url_redirecting_to_an_internal_port_is_refused(sample, tmp_path, internal):
    sample.server.fault("/videos/v.mp4", f"redirect:{internal.base_url}/videos/secret.mp4", sticky=True)
    row, members = crawl_video_dict(sample, tmp_path, {"formats": [fmt(f"{sample.server.base_url}/videos/v.mp4")]})
    assert_refused(row, members, internal)
    assert "redirected to" in row["video_error"]
    assert sample.server.count("/videos/v.mp4") == 1  # the allowed first hop was asked
    assert row["en_status"] == "ok"  # the subtitles are kept


def test_hls_segments_on_an_internal_port_are_refused(sample, tmp_path, internal):
    hls = sample.server.root / "hls"
    hls.mkdir()
    (hls / "v.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXT-X-MEDIA-SEQUENCE:0\n"
                                f"#EXTINF:5.0,\n{internal.base_url}/videos/secret.mp4\n#EXT-X-ENDLIST\n")
    row, members = crawl_video_dict(sample, tmp_path, {"formats": [
        fmt(f"{sample.server.base_url}/hls/v.m3u8", protocol="m3u8_native", ext="mp4")]})
    assert_refused(row, members, internal)
    assert sample.server.count("/hls/v.m3u8") >= 1


@pytest.mark.parametrize("where", ["path", "base"])
def test_dash_fragments_on_an_internal_port_are_refused(sample, tmp_path, internal, where):
    base = f"{internal.base_url}/dash/" if where == "base" else f"{sample.server.base_url}/dash/"
    path = "seg1.m4s" if where == "base" else f"{internal.base_url}/dash/seg1.m4s"
    row, members = crawl_video_dict(sample, tmp_path, {"formats": [
        fmt(f"{sample.server.base_url}/dash/manifest.mpd", protocol="http_dash_segments", ext="mp4",
            fragment_base_url=base, fragments=[{"path": path, "duration": 5.0}])]})
    assert_refused(row, members, internal)


@pytest.mark.parametrize("kind", ["url", "url_transparent", "playlist"])
def test_an_info_dict_that_is_no_video_is_a_failure_row(sample, tmp_path, internal, kind):
    target = f"{internal.base_url}/videos/secret.mp4"
    info = {"_type": kind, "id": VIDEO, "url": target, "ie_key": "Generic", "title": "x"}
    if kind == "playlist":
        info = {"_type": "playlist", "id": VIDEO, "title": "x",
                "entries": [{"_type": "url", "url": target, "ie_key": "Generic"}, fmt(target)]}
    row, members = crawl_video_dict(sample, tmp_path, info)
    assert row["status"] == "refused_url" and f"_type '{kind}'" in row["error"]
    assert internal.count() == 0 and sample.server.count() == 0  # nothing of it was requested
    assert members == {}


def test_a_redirect_to_the_metadata_address_never_leaves_the_machine(sample, tmp_path, outward):
    sample.server.fault("/videos/v.mp4", "redirect:http://169.254.169.254/latest/meta-data/", sticky=True)
    row, members = crawl_video_dict(sample, tmp_path, {"formats": [fmt(f"{sample.server.base_url}/videos/v.mp4")]})
    assert row["video_status"] == "refused_url" and "169.254.169.254" in row["video_error"]
    assert not outward.exists()  # no connection was even attempted
    assert "mp4" not in members


def test_the_handler_checks_before_its_transport_sends(tmp_path):
    """The policy is its own layer: a transport (urllib today) is asked only for checked URLs, hop by hop."""
    from yt_dlp.networking import Request
    from yt_dlp.networking.common import Response

    from pipeline.crawl.ytdlp_requests import PolicyCheckedRH, RequestRefused

    sent = []

    class FakeRH(PolicyCheckedRH):
        def _send_once(self, request, bounds):
            sent.append(request.url)
            return Response(fp=__import__("io").BytesIO(b""), url=request.url, status=302,
                            headers={"Location": "http://127.0.0.1:9/admin"})

    handler = FakeRH(logger=None, url_policy=UrlPolicy.allowing(["127.0.0.1:8000"]))
    with pytest.raises(RequestRefused, match="not a YouTube host"):
        handler.send(Request("http://127.0.0.1:8001/x"))
    assert sent == []
    with pytest.raises(RequestRefused, match="redirected to http://127.0.0.1:9/admin"):
        handler.send(Request("http://127.0.0.1:8000/x"))
    assert sent == ["http://127.0.0.1:8000/x"]
    for url in ("file:///etc/passwd", "ws://127.0.0.1:8000/x"):
        with pytest.raises(RequestRefused, match="http and https"):
            handler.send(Request(url))


# ---------------------------------------------------------------- what a download may spend

def test_a_trickling_video_body_is_a_bounded_failure(sample_with_videos, tmp_path):
    """The socket timeout is set past the download's bound: on a loaded machine the stand-in's thread may
    fall silent for over the suite's 1 s, and curl would end the download as silent (network) first."""
    sample = sample_with_videos
    sample.server.fault(f"/videos/{VIDEO}.mp4", "trickle", sticky=True)
    row, members = crawl_video_dict(sample, tmp_path, {}, "--video-download-seconds", "2", "--socket-timeout", "5",
                                    seconds=30)
    assert row["video_status"] == "over_budget" and "--video-download-seconds" in row["video_error"], row
    assert "mp4" not in members and row["en_status"] == "ok"


def test_trickling_headers_are_a_bounded_failure(sample_with_videos, tmp_path):
    """The socket timeout is set past the download's bound, which alone ends it then (curl would end headers
    trickled for longer than the socket timeout by that)."""
    sample = sample_with_videos
    sample.server.fault(f"/videos/{VIDEO}.mp4", "slow-headers", sticky=True)
    row, members = crawl_video_dict(sample, tmp_path, {}, "--video-download-seconds", "2", "--socket-timeout", "5",
                                    seconds=30)
    assert row["video_status"] == "over_budget" and "--video-download-seconds" in row["video_error"]
    assert "mp4" not in members


def test_an_hls_download_stops_when_its_total_time_is_up(sample, tmp_path):
    """Each segment comes well within one request's bound, but all of them would not: the download
    fails once its own total time is spent, and the segments after that are never asked for."""
    hls = sample.server.root / "hls"
    hls.mkdir()
    segments = [f"s{i}.ts" for i in range(12)]
    for name in segments:
        (hls / name).write_bytes(b"\x47" * 5)  # trickled: half a second each
        sample.server.fault(f"/hls/{name}", "trickle", sticky=True)
    (hls / "v.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXT-X-MEDIA-SEQUENCE:0\n"
                                + "".join(f"#EXTINF:5.0,\n{name}\n" for name in segments) + "#EXT-X-ENDLIST\n")
    row, members = crawl_video_dict(sample, tmp_path, {"formats": [
        fmt(f"{sample.server.base_url}/hls/v.m3u8", protocol="m3u8_native", ext="mp4")]},
        "--video-download-seconds", "2", "--socket-timeout", "5", seconds=30)
    assert row["video_status"] == "over_budget" and "--video-download-seconds 2 s" in row["video_error"]
    assert sample.server.count("/hls/s0.ts") == 1 and sample.server.count(f"/hls/{segments[-1]}") == 0
    assert "mp4" not in members


def test_an_endless_video_body_is_capped_and_never_held_in_memory(sample_with_videos, tmp_path):
    sample = sample_with_videos
    sample.server.fault(f"/videos/{VIDEO}.mp4", "endless", sticky=True)
    row, members = crawl_video_dict(sample, tmp_path, {}, "--max-video-bytes", "3000000", seconds=60, memory_mb=400)
    assert row["video_status"] == "over_budget" and "--max-video-bytes" in row["video_error"]
    assert "mp4" not in members


def test_a_video_announced_larger_than_the_cap_is_not_fetched(sample_with_videos, tmp_path):
    sample = sample_with_videos
    row, members = crawl_video_dict(sample, tmp_path, {}, "--max-video-bytes", "1000", seconds=30)
    assert row["video_status"] == "over_budget" and "--max-video-bytes 1000" in row["video_error"]
    assert "mp4" not in members


# ---------------------------------------------------------------- the normal path

def test_real_info_dicts_still_download_through_the_policy(sample, tmp_path):
    """Real yt-dlp info dicts, every URL moved onto the stand-in: the chosen format is fetched and stored."""
    video = real_fixtures() / "video" / "moviepy_fire2.mp4"
    (sample.server.root / "videos").mkdir(exist_ok=True)
    (sample.server.root / "videos" / "real.mp4").write_bytes(video.read_bytes())
    checked = 0
    for path in sorted((real_fixtures() / "infojson").glob("*.json")):
        real = json.loads(path.read_text())
        if not any(f.get("ext") == "mp4" and f.get("protocol") in ("https", "http") and f.get("acodec") != "none"
                   and f.get("vcodec") != "none" for f in real.get("formats") or ()):
            continue
        for f in real["formats"]:
            if f.get("protocol") in ("https", "http"):
                f["url"], f["protocol"] = f"{sample.server.base_url}/videos/real.mp4", "http"
            else:
                f["url"] = f"{sample.server.base_url}/missing/{f.get('format_id')}"
        real = {k: v for k, v in real.items() if k not in ("subtitles", "automatic_captions", "requested_formats",
                                                              "requested_downloads", "url", "format_id")}
        out = tmp_path / path.stem
        (out / "info").mkdir(parents=True)
        row, members = crawl_video_dict(sample, out, real)
        assert row["video_status"] == "ok", (path.name, row["video_error"])
        assert members["mp4"] == video.read_bytes()
        checked += 1
    assert checked >= 2


def test_a_large_video_streams_to_its_shard_without_being_held_in_memory(sample_with_videos, tmp_path):
    """400 MB under the cap are fetched to a scratch file and streamed into the tar: the crawl's
    process never holds them (it grows by less than 250 MiB), and the scratch file is gone."""
    sample = sample_with_videos
    big = sample.server.root / "videos" / f"{VIDEO}.mp4"
    head = big.read_bytes()
    with open(big, "wb") as f:
        f.write(head)
        f.truncate(400 * 2**20)  # sparse: no test holds 400 MB either
    row, _ = crawl_video_dict(sample, tmp_path, {}, "--socket-timeout", "30", seconds=120, memory_mb=250)
    assert row["video_status"] == "ok" and row["video_bytes"] == 400 * 2**20
    import tarfile

    with tarfile.open(next((tmp_path / "data" / "crawl").glob("crawl-*.tar"))) as tar:
        assert tar.getmember(f"{VIDEO}.mp4").size == 400 * 2**20
    assert not [p for p in (tmp_path / "data" / "crawl" / ".work").rglob("*") if p.is_file()
                and p.stat().st_size > 2**20]


def test_a_downloaded_video_whose_tracks_all_failed_leaves_no_scratch_file(tmp_path):
    """Every track refused (429): the video is retried later as a whole, so its download is dropped,
    and its scratch file with it (a unit of a crawl without a PO-token provider would otherwise fill
    the disk before it ends)."""
    from types import SimpleNamespace

    from pipeline.crawl import errors
    from pipeline.crawl.config import CrawlConfig
    from pipeline.crawl.fetch import FetchError
    from pipeline.crawl.video import crawl_video
    from pipeline.crawl.videolist import VideoEntry

    scratch = tmp_path / "video.mp4"

    def download(info):
        scratch.write_bytes(b"a video")
        return "mp4", scratch

    def refuse(url, check=None):
        raise FetchError(errors.RATE_LIMITED, "HTTP 429")

    info = {"id": VIDEO, "title": "t", "subtitles": {"en": [{"ext": "vtt", "url": "https://www.youtube.com/x"}]}}
    ctx = SimpleNamespace(cfg=CrawlConfig(videos="v", out="o", langs=["en"], download_video=True, sleep_subtitles=0),
                          info_source=SimpleNamespace(get=lambda vid: info, take_warnings=lambda: []),
                          fetcher=SimpleNamespace(get=refuse), download_video=download)
    row, members = crawl_video(VideoEntry(VIDEO, VIDEO), ctx)
    assert row["status"] == errors.RATE_LIMITED and members is None and row["video_status"] == "ok"
    assert not scratch.exists()

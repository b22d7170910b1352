"""The sample that ships with the toolkit: a few how-to videos as YouTube would serve them.

``build_sample(root, base_url)`` writes, for the demo, tests and benchmarks:
- ``root/files/subs/ID/KEY.vtt``: subtitle files (an English ASR track in YouTube's
  rolling layout with inline word timings, manual and machine-translated tracks),
- ``root/files/videos/ID.mp4``: small generated videos (when PyAV is installed),
- ``root/info/ID.info.json``: info dicts in yt-dlp's layout whose URLs point at ``base_url``,
- ``root/videos.csv``: a video list in the HowTo100M CSV layout, with the usual
  trouble: an invalid id, a duplicate, a video YouTube no longer has.
The texts (``sample_data/texts.json``) were written for the project in 9 languages.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from shards.samples import LANGS
LANG_NAMES = {"en": "English", "de": "German", "fr": "French", "ru": "Russian", "es": "Spanish",
              "cs": "Czech", "sw": "Swahili", "zh": "Chinese (Simplified)", "vi": "Vietnamese"}
SUB_FORMATS = ("json3", "srv1", "srv2", "srv3", "ttml", "vtt")
SENTENCE_SECONDS = 4.0


def load_texts() -> dict:
    return json.loads((Path(__file__).parent / "sample_data" / "texts.json").read_text(encoding="utf-8"))


def _ts(t: float) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def rolling_asr_vtt(sentences: list[str], lang: str = "en", offset: float = 0.5) -> str:
    """A track in YouTube's automatic-caption layout: each cue shows the previous line and
    the new one with inline word timings, followed by a 10 ms snapshot cue."""
    out = ["WEBVTT", "Kind: captions", f"Language: {lang}", ""]
    previous = ""
    t = offset
    for sentence in sentences:
        words = sentence.split()
        step = (SENTENCE_SECONDS - 0.4) / max(1, len(words))
        end = t + SENTENCE_SECONDS - 0.01
        timed = words[0] + "".join(f"<{_ts(t + i * step)}><c> {w}</c>" for i, w in enumerate(words[1:], 1))
        out += [f"{_ts(t)} --> {_ts(end)} align:start position:0%", previous or " ", timed, ""]
        out += [f"{_ts(end)} --> {_ts(end + 0.01)} align:start position:0%", sentence, " ", ""]
        previous = sentence
        t += SENTENCE_SECONDS
    return "\n".join(out) + "\n"


def plain_vtt(sentences: list[str], lang: str, offset: float = 0.5, split: int = 1) -> str:
    """A manual or translated track: one cue per sentence (or ``split`` cues per sentence)."""
    out = ["WEBVTT", "Kind: captions", f"Language: {lang}", ""]
    t = offset
    for sentence in sentences:
        words = sentence.split()
        chunks = [words[len(words) * i // split: len(words) * (i + 1) // split] for i in range(split)]
        span = SENTENCE_SECONDS / len(chunks)
        for i, chunk in enumerate(c for c in chunks if c):
            out += [f"{_ts(t + i * span)} --> {_ts(t + (i + 1) * span - 0.05)}", " ".join(chunk), ""]
        t += SENTENCE_SECONDS
    return "\n".join(out) + "\n"


@dataclass
class SampleVideo:
    video_id: str
    topic: str
    language: str = "en"
    manual: tuple = ()            # languages with a manual track
    asr: str | None = "en"        # language of the ASR track, if any
    translated: tuple = LANGS     # languages YouTube offers a translation into
    hls_first: bool = False       # list an HLS playlist before the real vtt (as YouTube does)
    legacy: bool = False          # an older dict: no "-orig" key
    extra: dict = field(default_factory=dict)


SAMPLE_VIDEOS = (
    SampleVideo("smplPancak1", "pancakes"),
    SampleVideo("smplBikeFx2", "bike", manual=("de",), hls_first=True),
    SampleVideo("smplMixed03", "pancakes", manual=("en", "es"), asr=None, translated=("de", "fr", "ru", "zh", "vi")),
    SampleVideo("smplNoSubs4", "bike", asr=None, translated=()),
    SampleVideo("-smplDash05", "bike", legacy=True),
    SampleVideo("smplPancak6", "pancakes", manual=("fr",), asr="en"),
)
MISSING_VIDEO = "smplGone007"          # listed, but no info JSON: YouTube no longer has it
INVALID_INPUTS = ("../etc/passwd", "short_id")


def _sub_entries(base: str, video_id: str, key: str, name: str, hls: bool = False, query: str = "") -> list[dict]:
    """A track's formats. ``query`` is what YouTube's timedtext URLs say of the track (``lang=en&kind=asr&
    tlang=fr``: the English ASR track translated into French); the stand-in serves by path and reads it
    to answer as YouTube does (``SampleServer.refuse_translations``)."""
    entries = [{"ext": ext, "name": name, "url": f"{base}/subs/{video_id}/{key}.{ext}"
                + (f"?{query}&fmt={ext}" if query else "")} for ext in SUB_FORMATS]
    if hls:
        entries.insert(0, {"ext": "vtt", "protocol": "m3u8_native",
                           "url": f"{base}/hls/{video_id}/{key}.m3u8"})
    return entries


def _make_video(path: Path, seconds: float, seed: int) -> bool:
    try:
        import av
        import numpy as np
    except ImportError:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fps, w, h = 10, 96, 64
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        base = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        for i in range(int(seconds * fps)):
            frame = np.roll(base, i * 2, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return True


def build_sample(root: Path, base_url: str, videos: bool = True) -> dict:
    """Write the sample under ``root`` with URLs at ``base_url``; return a summary."""
    root = Path(root)
    texts = load_texts()
    info_dir, files = root / "info", root / "files"
    info_dir.mkdir(parents=True, exist_ok=True)
    made_videos = 0
    for n, v in enumerate(SAMPLE_VIDEOS):
        topic = texts[v.topic]
        duration = len(topic["en"]) * SENTENCE_SECONDS + 1.0
        subs_dir = files / "subs" / v.video_id
        subs_dir.mkdir(parents=True, exist_ok=True)
        subtitles, auto = {}, {}
        for lang in v.manual:
            (subs_dir / f"{lang}.vtt").write_text(plain_vtt(topic[lang], lang, split=2 if lang == "de" else 1), encoding="utf-8")
            subtitles[lang] = _sub_entries(base_url, v.video_id, lang, LANG_NAMES[lang], query=f"lang={lang}")
        if v.asr:
            asr_key = v.asr if v.legacy else f"{v.asr}-orig"
            (subs_dir / f"{asr_key}.vtt").write_text(rolling_asr_vtt(topic[v.asr], v.asr), encoding="utf-8")
            asr_query = f"lang={v.asr}&kind=asr" + (f"&tlang={v.asr}" if v.legacy else "")  # youtube-dl asked so
            auto[asr_key] = _sub_entries(base_url, v.video_id, asr_key, f"{LANG_NAMES[v.asr]} (Original)",
                                         query=asr_query)
        for lang in v.translated:
            if lang == v.asr:
                if not v.legacy:  # newer dicts also list "xx": the same ASR track under its plain name
                    auto[lang] = _sub_entries(base_url, v.video_id, f"{lang}-orig", LANG_NAMES[lang],
                                              query=f"lang={lang}&kind=asr")
                continue
            key = "zh-Hans" if lang == "zh" else lang
            (subs_dir / f"{key}.vtt").write_text(plain_vtt(topic[lang], lang), encoding="utf-8")
            # YouTube translates the ASR track, or (without one) the first manual track
            of_asr = f"lang={v.asr}&kind=asr&tlang={key}" if v.asr else f"lang={v.manual[0]}&tlang={key}" \
                if v.manual else ""
            auto[key] = _sub_entries(base_url, v.video_id, key, LANG_NAMES[lang], hls=v.hls_first, query=of_asr)
            for src in v.manual:
                if src != lang:
                    fkey = f"{key}-{src}"
                    (subs_dir / f"{fkey}.vtt").write_text(plain_vtt(topic[lang], lang), encoding="utf-8")
                    auto[fkey] = _sub_entries(base_url, v.video_id, fkey, f"{LANG_NAMES[lang]} from {LANG_NAMES[src]}",
                                              query=f"lang={src}&tlang={key}")
        formats = []
        if videos and _make_video(files / "videos" / f"{v.video_id}.mp4", duration, n):
            made_videos += 1
            formats.append({"format_id": "18", "ext": "mp4", "url": f"{base_url}/videos/{v.video_id}.mp4",
                            "protocol": "http", "width": 96, "height": 64, "vcodec": "avc1.42001E",
                            "acodec": "mp4a.40.2", "fps": 10})
        info = {
            "id": v.video_id, "title": topic["title"], "fulltitle": topic["title"], "duration": duration,
            "channel": "Sample Channel", "channel_id": "UCsample0000000000000000", "uploader": "Sample Channel",
            "upload_date": "20190301", "language": v.language, "categories": ["Howto & Style"],
            "availability": "public", "webpage_url": f"https://www.youtube.com/watch?v={v.video_id}",
            "original_url": f"https://www.youtube.com/watch?v={v.video_id}",
            "extractor": "youtube", "extractor_key": "Youtube", "formats": formats,
            "subtitles": subtitles, "automatic_captions": auto, "_type": "video",
        }
        (info_dir / f"{v.video_id}.info.json").write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
    rows = ["video_id,category_1,category_2,rank,task_id"]
    for n, v in enumerate(SAMPLE_VIDEOS):
        t = texts[v.topic]
        rows.append(f"{v.video_id},{t['category_1']},{t['category_2']},{n + 1},{10000 + n}")
    rows.append(f"{MISSING_VIDEO},Home and Garden,Cleaning,9,10009")
    rows += [f"{bad},Hobbies and Crafts,Crafts,9,1000{i}" for i, bad in enumerate(INVALID_INPUTS)]
    rows.append(rows[1])  # a duplicate line: crawled once
    (root / "videos.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {"videos": len(SAMPLE_VIDEOS), "video_files": made_videos, "list": str(root / "videos.csv"),
            "info_json": str(info_dir), "files": str(files)}


def write_release_sample(directory: Path) -> Path:
    """The sample texts in the Multi-HT100M release layout (``how2_{lang}.json``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    texts = load_texts()
    for lang in LANGS:
        doc = {}
        for n, (topic, t) in enumerate(sorted(texts.items())):
            sentences = t[lang]
            doc[f"release{n:04d}"] = {"text": sentences,
                                      "start": [SENTENCE_SECONDS * i for i in range(len(sentences))],
                                      "end": [SENTENCE_SECONDS * (i + 1) - 0.2 for i in range(len(sentences))]}
        (directory / f"how2_{lang}.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return directory

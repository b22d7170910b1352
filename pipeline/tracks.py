"""Choosing one subtitle track per language from a yt-dlp info dict.

What the info dict holds (current yt-dlp): ``subtitles`` has manual tracks (and
sometimes ``live_chat``, which is not a subtitle); ``automatic_captions`` has
``xx-orig`` (the original ASR track), ``xx`` (YouTube's translation of the original
track into xx; for the original language itself, the ASR) and ``xx-yy`` ("xx from
yy": a translation of track yy, e.g. a manual one). Older dicts have no ``-orig``
key; the ASR language is then read from the timedtext URL (``kind=asr&lang=xx``
without ``tlang``) or from ``language``. Regional and script variants (``en-GB``,
``zh-Hans``) are told apart from "from" suffixes by case: language codes are
lower-case letters.

Preference per language: manual, else the original ASR, else a translation of a
manual track, else the translation of the ASR track.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

MANUAL, ASR, TRANSLATED, NONE = "manual", "asr", "translated", "none"
_LANG_CODE = re.compile(r"^[a-z]{2,3}$")
# Variant preference for a requested base language (first match wins).
_VARIANT_ORDER = {"zh": ("zh-Hans", "zh-CN", "zh-SG", "zh-Hant", "zh-TW", "zh-HK"),
                  "en": ("en-US", "en-GB", "en-CA", "en-AU"),
                  "es": ("es-419", "es-ES", "es-MX", "es-US"),
                  "fr": ("fr-FR", "fr-CA"), "de": ("de-DE", "de-AT", "de-CH"),
                  "vi": ("vi-VN",), "ru": ("ru-RU",), "cs": ("cs-CZ",), "sw": ("sw-KE", "sw-TZ")}
NOT_SUBTITLES = frozenset({"live_chat", "rechat", "danmaku", "comments"})


@dataclass
class TrackChoice:
    lang: str                 # the requested language
    kind: str                 # manual | asr | translated | none
    key: str | None = None    # the key in yt-dlp's dict (en-orig, fr-de, zh-Hans...)
    source_lang: str | None = None
    ext: str | None = None
    url: str | None = None
    name: str | None = None

    @property
    def url_host(self) -> str | None:
        return urlparse(self.url).hostname if self.url else None

    def record(self) -> dict:
        """What goes into info.json's ``tracks`` (no URL: it carries signatures and expires)."""
        d = asdict(self)
        d.pop("url")
        d["url_host"] = self.url_host
        return d


def _split_key(key: str) -> tuple[str, str | None, str | None]:
    """``fr-de`` -> (fr, None, de); ``zh-Hans`` -> (zh, Hans, None); ``zh-Hans-de`` -> (zh, Hans, de);
    ``en-orig`` -> (en, orig, None); ``es-419`` -> (es, 419, None)."""
    parts = key.split("-")
    base, rest = parts[0], parts[1:]
    if not rest:
        return base, None, None
    if rest == ["orig"]:
        return base, "orig", None
    source = None
    if _LANG_CODE.match(rest[-1]):
        source = rest.pop()
    return base, "-".join(rest) or None, source


def _variants(keys, lang: str, source: str | None = None) -> list[str]:
    """Keys that denote language ``lang`` itself (exact, then preferred regional/script variants,
    then the others), translated from ``source`` when given."""
    suffix = f"-{source}" if source else ""
    candidates = [k for k in keys if _split_key(k)[0] == lang and _split_key(k)[2] == source
                  and _split_key(k)[1] != "orig"]
    order = [lang + suffix] + [v + suffix for v in _VARIANT_ORDER.get(lang, ())]
    ranked = [k for k in order if k in candidates]
    return ranked + sorted(k for k in candidates if k not in ranked)


def asr_language(info: dict) -> str | None:
    """The language of the original ASR track, if the video has one."""
    auto = info.get("automatic_captions") or {}
    for key in auto:
        base, variant, _ = _split_key(key)
        if variant == "orig":
            return base
    for formats in auto.values():
        for fmt in formats or []:
            q = parse_qs(urlparse(fmt.get("url") or "").query)
            if q.get("kind") == ["asr"] and "lang" in q and "tlang" not in q:
                return q["lang"][0].split("-")[0]
    if auto and info.get("language"):
        return str(info["language"]).split("-")[0]
    return None


def pick_format(formats: list[dict], want: str = "vtt") -> tuple[str | None, str | None]:
    """(ext, url) of a directly fetchable ``want`` format. HLS playlists (``m3u8``) are not files.
    A timedtext URL in another format is rewritten to ``fmt=vtt``."""
    for fmt in formats or []:
        if fmt.get("ext") == want and fmt.get("url") and "m3u8" not in (fmt.get("protocol") or ""):
            return want, fmt["url"]
    for fmt in formats or []:
        url = fmt.get("url") or ""
        if "m3u8" in (fmt.get("protocol") or "") or "/api/timedtext" not in url:
            continue
        parts = urlparse(url)
        q = parse_qs(parts.query, keep_blank_values=True)
        q["fmt"] = [want]
        return want, urlunparse(parts._replace(query=urlencode(q, doseq=True)))
    return None, None


def _name(formats) -> str | None:
    return next((f.get("name") for f in formats or [] if f.get("name")), None)


def select_tracks(info: dict, langs: list[str]) -> dict[str, TrackChoice]:
    """One ``TrackChoice`` per requested language (kind ``none`` when YouTube has nothing)."""
    manual = {k: v for k, v in (info.get("subtitles") or {}).items() if k not in NOT_SUBTITLES and v}
    auto = {k: v for k, v in (info.get("automatic_captions") or {}).items() if v}
    asr = asr_language(info)
    video_lang = (info.get("language") or "").split("-")[0] or None
    manual_langs = sorted({_split_key(k)[0] for k in manual}, key=lambda l: (l != video_lang, l))
    choices = {}
    for lang in langs:
        choice = None
        keys = _variants(manual, lang)
        if keys:
            choice = TrackChoice(lang, MANUAL, keys[0], lang, name=_name(manual[keys[0]]))
            choice.ext, choice.url = pick_format(manual[keys[0]])
        elif asr == lang and (f"{lang}-orig" in auto or lang in auto):
            key = f"{lang}-orig" if f"{lang}-orig" in auto else lang
            choice = TrackChoice(lang, ASR, key, lang, name=_name(auto[key]))
            choice.ext, choice.url = pick_format(auto[key])
        else:
            for src in manual_langs:
                keys = _variants(auto, lang, src) if src != lang else []
                if keys:
                    choice = TrackChoice(lang, TRANSLATED, keys[0], src, name=_name(auto[keys[0]]))
                    choice.ext, choice.url = pick_format(auto[keys[0]])
                    break
            if choice is None:
                keys = _variants(auto, lang)
                if keys:
                    choice = TrackChoice(lang, TRANSLATED, keys[0], asr, name=_name(auto[keys[0]]))
                    choice.ext, choice.url = pick_format(auto[keys[0]])
        choices[lang] = choice or TrackChoice(lang, NONE)
    return choices

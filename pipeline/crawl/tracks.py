"""Choosing one subtitle track per language from a yt-dlp (or youtube-dl) info dict.

Info dicts from 2013 to today describe tracks in three shapes, and the choice must
read all of them the same way:

- yt-dlp since 2022: ``subtitles`` holds manual tracks (and sometimes ``live_chat``,
  which is not a subtitle); ``automatic_captions`` holds ``xx-orig`` (the original
  ASR track), ``xx`` (YouTube's translation of the original track into xx; for the
  original language itself, the ASR again) and ``xx-yy`` ("xx from yy", a
  translation of manual track yy; the source may carry a variant: ``fr-zh-Hant``).
- youtube-dl, and yt-dlp until 2021: no ``-orig`` key and no ``language``. Every
  automatic entry is one caption track's URL with ``tlang`` added, the original
  language included: ``kind=asr&lang=en&tlang=en`` is the English ASR track itself,
  ``kind=asr&lang=en&tlang=de`` its German translation. Without ``kind=asr`` the
  track translated is a manual one (youtube-dl took the first caption track).
- Entries whose URLs say nothing (HLS playlists only, or other hosts): the ASR
  language then comes from ``language``.

So the kind and source of an automatic key are read from its key first (``-orig``,
``-yy``) and from its timedtext URL next (``lang``, ``tlang``, ``kind``). Regional
and script variants (``en-GB``, ``zh-Hans``, ``es-419``) are told apart from "from"
suffixes by case: language codes are lower-case letters.

Preference per language: manual, else the original ASR, else a translation of a
manual track (the video's language first), else the translation of the ASR track.
A variant asked for (``prefer={"zh": "zh-Hant"}``) is tried first in that same
order, before any other variant of the language.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

MANUAL, ASR, TRANSLATED, NONE = "manual", "asr", "translated", "none"
_LANG_CODE = re.compile(r"^[a-z]{2,3}$")
# Variant preference for a requested base language when none is asked for (first match wins).
_VARIANT_ORDER = {"zh": ("zh-Hans", "zh-CN", "zh-SG", "zh-Hant", "zh-TW", "zh-HK"),
                  "en": ("en-US", "en-GB", "en-CA", "en-AU"),
                  "es": ("es-419", "es-ES", "es-MX", "es-US"),
                  "pt": ("pt-BR", "pt-PT"),
                  "fr": ("fr-FR", "fr-CA"), "de": ("de-DE", "de-AT", "de-CH"),
                  "vi": ("vi-VN",), "ru": ("ru-RU",), "cs": ("cs-CZ",), "sw": ("sw-KE", "sw-TZ")}
NOT_SUBTITLES = frozenset({"live_chat", "rechat", "danmaku", "comments"})
# yt-dlp (yt_dlp/extractor/youtube/_video.py) treats a caption track as needing a PO
# token when its baseUrl's ``exp`` parameter holds ``xpe`` or ``xpv`` (its comment: "We
# can detect the experiment for now"). It then asks a PO token provider and appends
# ``pot``, ``potc=1`` and ``c=<client>`` to every subtitle URL of that client; with no
# token it drops that client's subtitles. Fetched without a token, such a URL answers
# 200 with an empty body, which the crawl reports as an empty file.
_PO_TOKEN_EXPERIMENTS = frozenset({"xpe", "xpv"})


@dataclass
class TrackChoice:
    lang: str                   # the requested language
    kind: str                   # manual | asr | translated | none
    key: str | None = None      # the key in yt-dlp's dict (en-orig, fr-de, zh-Hans...)
    source_lang: str | None = None
    ext: str | None = None
    url: str | None = None      # None when no format of the track is a fetchable file
    name: str | None = None
    variant: str | None = None  # the YouTube variant chosen (zh-Hans, pt-BR); None for a plain code
    po_token: bool = False      # YouTube marks the URL as needing a PO token (exp=xpe)

    @property
    def url_host(self) -> str | None:
        return urlparse(self.url).hostname if self.url else None

    def record(self) -> dict:
        """What goes into info.json's ``tracks`` (no URL: it carries signatures and expires)."""
        d = asdict(self)
        d.pop("url")
        d["url_host"] = self.url_host
        return d


@dataclass(frozen=True)
class _Candidate:
    """One key of the info dict, read: what it is a track of, and where it comes from."""

    key: str
    tag: str            # the language tag it is in: "zh-Hans", "pt", "en"
    base: str           # "zh", "pt", "en"
    kind: str           # manual | asr | translated
    source: str | None  # base language of the track it was made from
    from_manual: bool   # a translation of a manual track (not of the ASR)
    orig: bool = False  # yt-dlp's "-orig" key


def split_key(key: str) -> tuple[str, str | None, str | None, bool]:
    """A dict key as (language tag, its base, source tag, is -orig).

    ``fr-de`` -> (fr, fr, de, False); ``zh-Hans-de`` -> (zh-Hans, zh, de, False);
    ``fr-zh-Hant`` -> (fr, fr, zh-Hant, False); ``en-orig`` -> (en, en, None, True);
    ``es-419`` -> (es-419, es, None, False).
    """
    parts = key.split("-")
    orig = len(parts) > 1 and parts[-1] == "orig"
    if orig:
        parts = parts[:-1]
    base, rest = parts[0], parts[1:]
    # Variant subtags (Hans, BR, 419) follow the base; a lower-case subtag starts the source.
    i = 0
    while i < len(rest) and not _LANG_CODE.match(rest[i]):
        i += 1
    tag = "-".join([base] + rest[:i])
    source = "-".join(rest[i:]) or None
    return tag, base, source, orig


def _base(tag: str | None) -> str | None:
    return tag.split("-")[0] if tag else None


def _timedtext_query(formats) -> dict | None:
    """The query of the first timedtext URL among a track's formats (HLS playlists carry none)."""
    for fmt in formats or []:
        url = fmt.get("url") or ""
        if "m3u8" in (fmt.get("protocol") or "") or "lang=" not in url:
            continue
        q = parse_qs(urlparse(url).query)
        if q.get("lang"):
            return q
    return None


def _url_lang(value: str) -> str:
    # A URL may name the original track the way yt-dlp keys it ("en-orig"); it is still en.
    return value[:-5] if value.endswith("-orig") else value


def asr_language(info: dict) -> str | None:
    """The language of the original ASR track, if the video has one."""
    auto = info.get("automatic_captions") or {}
    for key in auto:
        tag, base, source, orig = split_key(key)
        if orig and not source:
            return base
    for formats in auto.values():
        q = _timedtext_query(formats)
        # Every URL built from the ASR track says so, translations of it included.
        if q and "asr" in q.get("kind", []):
            return _base(_url_lang(q["lang"][0]))
    if auto and info.get("language"):
        return _base(str(info["language"]))
    if len(auto) == 1:
        # Translations come by the hundred; a lone automatic track is the ASR track itself
        # (YouTube transcribes some languages it does not translate, e.g. Korean music videos).
        tag, base, source, _ = split_key(next(iter(auto)))
        return None if source else base
    return None


def _read_auto(key: str, formats, asr: str | None) -> _Candidate:
    tag, base, source, orig = split_key(key)
    if orig:
        return _Candidate(key, tag, base, ASR, base, False, orig=True)
    if source:
        return _Candidate(key, tag, base, TRANSLATED, _base(source), True)
    q = _timedtext_query(formats)
    if q:
        lang = _url_lang(q["lang"][0])
        tlang = q.get("tlang", [None])[0]
        itself = tlang is None or _url_lang(tlang) == lang
        if "asr" in q.get("kind", []):
            return _Candidate(key, tag, base, ASR if itself else TRANSLATED, _base(lang), False)
        # youtube-dl translated whatever track came first; here a manual one.
        return _Candidate(key, tag, base, MANUAL if itself else TRANSLATED, _base(lang), not itself)
    if asr and base == asr:
        return _Candidate(key, tag, base, ASR, asr, False)
    return _Candidate(key, tag, base, TRANSLATED, asr, False)


def _rank(cands: list[_Candidate], lang: str) -> list[_Candidate]:
    """Exact code first, then the usual variants, then the others; -orig keys before plain ones."""
    order = [lang, *_VARIANT_ORDER.get(lang, ())]
    return sorted(cands, key=lambda c: (not c.orig, order.index(c.tag) if c.tag in order else len(order), c.key))


def pick_format(formats: list[dict], want: str = "vtt") -> tuple[str | None, str | None]:
    """(ext, url) of a directly fetchable ``want`` format. HLS playlists (``m3u8``) are not files.
    A timedtext URL in another format is rewritten to ``fmt=<want>``."""
    for fmt in formats or []:
        if fmt.get("ext") == want and fmt.get("url") and "m3u8" not in (fmt.get("protocol") or ""):
            return want, fmt["url"]
    for fmt in formats or []:
        url = fmt.get("url") or ""
        if "m3u8" in (fmt.get("protocol") or "") or "/api/timedtext" not in url:
            continue
        return want, _with_query(url, fmt=want)
    return None, None


def _with_query(url: str, drop: tuple = (), **values) -> str:
    parts = urlparse(url)
    q = parse_qs(parts.query, keep_blank_values=True)
    for name in drop:
        q.pop(name, None)
    q.update({k: [v] for k, v in values.items()})
    return urlunparse(parts._replace(query=urlencode(q, doseq=True)))


def needs_po_token(url: str | None) -> bool:
    """Whether YouTube marks this subtitle URL as needing a PO token (see _PO_TOKEN_EXPERIMENTS)."""
    if not url:
        return False
    values = parse_qs(urlparse(url).query).get("exp", [])
    return any(e in _PO_TOKEN_EXPERIMENTS for v in values for e in v.split(","))


def _choose(lang: str, cand: _Candidate, formats, translated_format: str = "vtt") -> TrackChoice:
    ext, url = None, None
    if cand.kind == TRANSLATED and translated_format != "vtt":
        ext, url = pick_format(formats, translated_format)
    if url is None:  # offered neither in that format nor by a timedtext URL (another host's): WebVTT
        ext, url = pick_format(formats)
    if url and cand.kind == ASR:
        q = parse_qs(urlparse(url).query)
        if q.get("tlang") and q.get("lang") and _url_lang(q["tlang"][0]) == _url_lang(q["lang"][0]):
            # Old dicts ask for the ASR track "translated" into its own language, which
            # yt-dlp found to return damaged subtitles: ask for the track itself.
            url = _with_query(url, drop=("tlang",))
    marked = needs_po_token(url) or any(needs_po_token(f.get("url")) for f in formats or [])
    return TrackChoice(lang, cand.kind, cand.key, cand.source, ext, url,
                       name=next((f.get("name") for f in formats or [] if f.get("name")), None),
                       variant=cand.tag if cand.tag != cand.base else None, po_token=marked)


def select_tracks(info: dict, langs: list[str], prefer: dict[str, str] | None = None,
                  translated_format: str = "vtt") -> dict[str, TrackChoice]:
    """One ``TrackChoice`` per requested language (kind ``none`` when YouTube has nothing).

    ``langs`` are base codes (``zh``); ``prefer`` maps a base code to the YouTube variant
    tried first (``{"zh": "zh-Hant", "pt": "pt-BR"}``). A requested ``zh-Hant`` is read
    as ``zh`` preferring ``zh-Hant``. A machine translation is asked for in
    ``translated_format`` (``vtt`` or ``srt``: YouTube's timedtext URL with ``fmt=srt``), the
    others always as WebVTT; the choice's ``ext`` says which.
    """
    prefer = dict(prefer or {})
    manual_dict = {k: v for k, v in (info.get("subtitles") or {}).items() if k not in NOT_SUBTITLES and v}
    auto_dict = {k: v for k, v in (info.get("automatic_captions") or {}).items() if v}
    asr = asr_language(info)
    manual = [_Candidate(k, *split_key(k)[:2], MANUAL, split_key(k)[1], False) for k in manual_dict]
    auto = [_read_auto(k, v, asr) for k, v in auto_dict.items()]
    formats = {**{("auto", c.key): auto_dict[c.key] for c in auto},
               **{("manual", c.key): manual_dict[c.key] for c in manual}}
    video_lang = _base(info.get("language")) or asr
    sources = {c.base for c in manual} | {c.source for c in auto if c.from_manual and c.source}
    sources = sorted(sources, key=lambda s: (s != video_lang, s))

    def groups(lang: str):
        """Candidates for ``lang``, best kind first; each group ranked by variant."""
        yield [("manual", c) for c in _rank([c for c in manual if c.base == lang], lang)]
        yield [("auto", c) for c in _rank([c for c in auto if c.base == lang and c.kind == MANUAL], lang)]
        yield [("auto", c) for c in _rank([c for c in auto if c.base == lang and c.kind == ASR
                                           and c.source == lang], lang)]
        for src in sources:
            if src != lang:
                yield [("auto", c) for c in _rank([c for c in auto if c.base == lang and c.kind == TRANSLATED
                                                   and c.from_manual and c.source == src], lang)]
        yield [("auto", c) for c in _rank([c for c in auto if c.base == lang and c.kind == TRANSLATED
                                           and not c.from_manual and c.source != lang], lang)]

    choices = {}
    for requested in langs:
        lang = _base(requested)
        if requested != lang:
            prefer.setdefault(lang, requested)
        wanted = prefer.get(lang)
        found = None
        if wanted:
            found = next((item for group in groups(lang) for item in group if item[1].tag == wanted), None)
        if found is None:
            found = next((group[0] for group in groups(lang) if group), None)
        if found is None:
            choices[lang] = TrackChoice(lang, NONE)
        else:
            where, cand = found
            choices[lang] = _choose(lang, cand, formats[(where, cand.key)], translated_format)
    return choices

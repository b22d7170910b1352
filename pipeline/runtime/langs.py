"""Reading ``--langs``, in every command: which languages a stage works on, checked before any work.

A code YouTube does not know (``eng``, ``EN``, a typo) would otherwise be accepted
and end every video as ``no_subtitles`` after a full crawl. Codes are checked against
YouTube's caption language codes: the translation languages YouTube offers (the keys
of a 2026 yt-dlp info dict's ``automatic_captions``, 156 of them) plus the base codes
of their variants. YouTube's own regional and script spellings (``zh-Hans``,
``pt-BR``, ``es-419``, ``en-GB``) are accepted: the crawl asks for the base language
and tries that variant first (``tracks.select_tracks(..., prefer=...)``).

Every command takes ``--langs`` through ``add_langs_flag``: one comma-separated list
(``--langs en,de,zh``), the same check, a default its ``--help`` names. The space-separated
spelling some commands took (``--langs en de``) is still read, as that one list, with a
one-line note. The crawl keeps ``parse_langs``'s (languages, variants); every other stage
gets the plain base codes (``read_langs``).
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys

from pipeline.runtime.cli import comma_list
from shards.errors import UserError
from shards.samples import LANGS


# YouTube's translation languages, as yt-dlp 2026.03.13 lists them for a video (its
# "en-orig" key, the original track, left out), in YouTube's own spellings: Hebrew is
# "iw", Filipino "fil", Chinese only comes as zh-Hans / zh-Hant.
YOUTUBE_TRANSLATION_CODES = tuple("""
aa ab af ak am ar as ay az ba be bg bho bn bo br bs ca ceb co crs cs cy da de dv dz ee el
en eo es et eu fa fi fil fj fo fr fy ga gaa gd gl gn gu gv ha haw hi hmn hr ht hu hy id ig
is it iu iw ja jv ka kha kk kl km kn ko kri ku ky la lb lg ln lo lt lua luo lv mfe mg mi mk
ml mn mr ms mt my ne new nl no nso ny oc om or os pa pam pl ps pt pt-PT qu rn ro ru rw sa
sd sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tn to tr ts tt tum ug uk ur
uz ve vi war wo xh yi yo zh-Hans zh-Hant zu
""".split())
# Caption languages YouTube transcribes but does not translate into (yt-dlp extracts them
# separately for that reason, naming Cantonese).
YOUTUBE_ASR_ONLY_CODES = ("yue",)
BASE_CODES = tuple(sorted({c.split("-")[0] for c in YOUTUBE_TRANSLATION_CODES + YOUTUBE_ASR_ONLY_CODES}))

# ISO 639-2/3 codes and other spellings people type, for the suggestion only.
_ALIASES = {
    "eng": "en", "deu": "de", "ger": "de", "fra": "fr", "fre": "fr", "rus": "ru", "spa": "es",
    "ces": "cs", "cze": "cs", "swa": "sw", "swh": "sw", "zho": "zh", "chi": "zh", "cmn": "zh",
    "vie": "vi", "por": "pt", "ita": "it", "jpn": "ja", "kor": "ko", "ara": "ar", "hin": "hi",
    "nld": "nl", "dut": "nl", "pol": "pl", "tur": "tr", "ukr": "uk", "heb": "iw", "he": "iw",
    "ind": "id", "in": "id", "tha": "th", "ell": "el", "gre": "el", "swe": "sv", "dan": "da",
    "fin": "fi", "nor": "no", "nob": "no", "nb": "no", "hun": "hu", "ron": "ro", "rum": "ro",
    "bul": "bg", "hrv": "hr", "srp": "sr", "slk": "sk", "slo": "sk", "slv": "sl", "cat": "ca",
    "fas": "fa", "per": "fa", "urd": "ur", "ben": "bn", "tam": "ta", "tel": "te", "msa": "ms",
    "may": "ms", "tgl": "fil", "tl": "fil", "jw": "jv", "lat": "la", "est": "et", "lav": "lv",
    "lit": "lt", "afr": "af", "zul": "zu", "xho": "xh", "yor": "yo", "cn": "zh",
    "english": "en", "german": "de", "french": "fr", "russian": "ru", "spanish": "es",
    "czech": "cs", "swahili": "sw", "chinese": "zh", "vietnamese": "vi", "portuguese": "pt",
    "italian": "it", "japanese": "ja", "korean": "ko", "arabic": "ar", "hindi": "hi",
    "dutch": "nl", "polish": "pl", "turkish": "tr", "ukrainian": "uk", "hebrew": "iw",
    "indonesian": "id", "cantonese": "yue",
}
# base, then a script (Hans), then a region (BR) or UN M.49 area (419): YouTube's spelling.
_TAG = re.compile(r"^(?P<base>[a-z]{2,3})(?:-(?P<script>[A-Z][a-z]{3}))?(?:-(?P<region>[A-Z]{2}|\d{3}))?$")
# Scripts YouTube's caption tracks are tagged with; a closed list, so "en-Orig" is no script.
_SCRIPTS = frozenset({"Hans", "Hant", "Latn", "Cyrl", "Arab", "Deva", "Beng", "Guru", "Ethi", "Mong"})


def _canonical(code: str) -> str:
    """``ZH_hans`` -> ``zh-Hans``: the spelling YouTube would use for what was typed."""
    parts = re.split(r"[-_]", code.strip())
    out = [parts[0].lower()]
    for p in parts[1:]:
        out.append(p.title() if len(p) == 4 and p.isalpha() else p.upper())
    return "-".join(out)


def _suggest(code: str) -> str | None:
    if code.lower().endswith("-orig"):  # yt-dlp's key for the original track, not a language
        code = code[:-5]
        if _check(code) is not None:
            return code
    fixed = _canonical(code)
    if fixed != code and _check(fixed) is not None:
        return fixed
    low = code.strip().lower()
    if low in _ALIASES:
        return _ALIASES[low]
    base, _, rest = fixed.partition("-")
    if base in _ALIASES:  # eng-GB -> en-GB
        aliased = f"{_ALIASES[base]}-{rest}" if rest else _ALIASES[base]
        if _check(aliased) is not None:
            return aliased
    close = difflib.get_close_matches(low, list(_ALIASES) + list(BASE_CODES), n=1, cutoff=0.8)
    if close:
        return _ALIASES.get(close[0], close[0])
    return None


def _check(code: str) -> tuple[str, str | None] | None:
    """(base, variant or None) when ``code`` is a YouTube caption language code, else None."""
    if code in YOUTUBE_TRANSLATION_CODES or code in BASE_CODES:
        base = code.split("-")[0]
        return base, (code if code != base else None)
    m = _TAG.match(code)
    if m and m["base"] in BASE_CODES and (m["script"] or m["region"]) and m["script"] in (None, *_SCRIPTS):
        return m["base"], code
    return None


def parse_langs(text: str) -> tuple[list[str], dict[str, str]]:
    """``--langs`` as (base languages in order, without repeats; {base: YouTube variant asked for}).

    ``"en,zh-Hant,pt-BR"`` -> (["en", "zh", "pt"], {"zh": "zh-Hant", "pt": "pt-BR"}).
    """
    langs: list[str] = []
    variants: dict[str, str] = {}
    items = comma_list(text)
    if not items:
        raise UserError(f"--langs needs at least one language code, e.g. {','.join(LANGS)} "
                        f"(got {text!r})")
    for item in items:
        checked = _check(item)
        if checked is None:
            hint = _suggest(item)
            did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
            raise UserError(f"--langs {item!r} is not a YouTube caption language code{did_you_mean}; "
                            f"use comma-separated codes from: {', '.join(BASE_CODES + _variant_codes())}, "
                            f"or a regional or script variant such as zh-Hans, pt-BR, es-419, en-GB")
        base, variant = checked
        if variant and variants.get(base, variant) != variant:
            raise UserError(f"--langs asks for {base} twice, as {variants[base]!r} and {variant!r}; "
                            f"keep one, the crawl takes one track per language")
        if variant:
            variants[base] = variant
        if base not in langs:
            langs.append(base)
    return langs, variants


def _variant_codes() -> tuple[str, ...]:
    return tuple(c for c in YOUTUBE_TRANSLATION_CODES if "-" in c)


def read_langs(text: str) -> list[str]:
    """``--langs`` as the base codes a stage after the crawl needs: ``"en,zh-Hans,en"`` -> ``["en", "zh"]``."""
    return parse_langs(text)[0]


def _spelled(value) -> str:
    """A read ``--langs`` value back as comma text (a variant as YouTube spells it)."""
    if isinstance(value, tuple):  # parse_langs's (languages, variants)
        langs, variants = value
        return ",".join(variants.get(lang, lang) for lang in langs)
    return ",".join(value)


def _as_type(read):
    """``read`` as an argparse type: a bad code is argparse's one-line error."""
    def langs(text: str):
        try:
            return read(text)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("--langs ")) from None
    return langs


class LangsFlag(argparse.Action):
    """``--langs``: one comma-separated list; the old space-separated words are read as one list, with a note.

    Each word is read (and checked) by ``type``; several words are joined with commas and read
    again, so a repeat or a clash between words is caught as in one list.
    """

    def __init__(self, option_strings, dest, read=read_langs, **kwargs):
        super().__init__(option_strings, dest, nargs="+", type=_as_type(read), **kwargs)

    def from_config(self, value):
        """A ``--config`` value (``langs: [en, de]`` or ``langs: en,de``) read as one list; see
        ``pipeline.runtime.cli.parse_args``. Raises argparse.ArgumentTypeError for a bad code."""
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        return self.type(str(value))

    def __call__(self, parser, namespace, values, option_string=None):
        value = values[0]
        if len(values) > 1:
            words = [_spelled(v) for v in values]
            print(f"{parser.prog}: note: --langs takes one comma-separated list; read {' '.join(words)!r} "
                  f"as {','.join(words)!r}", file=sys.stderr)
            try:
                value = self.type(",".join(words))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentError(self, str(exc)) from None
        setattr(namespace, self.dest, value)


def add_langs_flag(parser, *, default, help: str, read=read_langs, default_text: str | None = None):
    """``--langs`` on ``parser`` (or an argument group): ``default`` a tuple of codes, or None when the
    stage works it out later and ``default_text`` says how; ``help`` says what the languages are for.
    ``read`` turns the checked comma text into the value (``parse_langs`` for the crawl)."""
    shown = default_text or ",".join(default)
    return parser.add_argument(
        "--langs", action=LangsFlag, read=read, default=None if default is None else ",".join(default),
        metavar="LANGS",
        help=f"{help}; one comma-separated list of YouTube caption language codes, e.g. en,de,zh "
             f"(default: {shown})")

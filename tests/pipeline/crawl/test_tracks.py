"""Track choice on real info dicts from youtube-dl 2013 to yt-dlp 2026, and ``--langs`` parsing.

Expected values were read off each dict by hand (key, its URL's lang/tlang/kind);
``tests/data/infojson/PROVENANCE.tsv`` says where each dict comes from.
"""
import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from pipeline.runtime.langs import YOUTUBE_TRANSLATION_CODES, parse_langs
from shards.errors import UserError
from shards.samples import LANGS as MULTI_HT100M_LANGS
from pipeline.crawl.tracks import asr_language, needs_po_token, select_tracks, split_key

from tests.conftest import real_fixtures

DATA = Path(__file__).resolve().parents[2] / "data" / "infojson"
LANGS = list(MULTI_HT100M_LANGS)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def table(choices) -> dict:
    return {l: (c.kind, c.key, c.source_lang, c.variant) for l, c in choices.items()}


def query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def test_keys_split_into_tag_source_and_orig():
    assert split_key("fr-de") == ("fr", "fr", "de", False)
    assert split_key("zh-Hans-de") == ("zh-Hans", "zh", "de", False)
    assert split_key("fr-zh-Hant") == ("fr", "fr", "zh-Hant", False)
    assert split_key("fr-CA-en-GB") == ("fr-CA", "fr", "en-GB", False)
    assert split_key("es-419") == ("es-419", "es", None, False)
    assert split_key("en-orig") == ("en", "en", None, True)


# ---------------------------------------------------------------- vintages in tests/data

def test_youtube_dl_2013_dict_without_caption_keys():
    info = load(DATA / "vidbot_m6uto4wQY_g.info.json")  # "subtitles": null, no automatic_captions
    assert asr_language(info) is None
    assert all(c.kind == "none" and c.key is None for c in select_tracks(info, LANGS).values())


def test_2021_dict_every_entry_a_tlang_url_the_original_too():
    info = load(DATA / "yampack_kpubsAwwuug.info.json")
    assert asr_language(info) == "en"
    t = select_tracks(info, LANGS)
    # en: kind=asr&lang=en&tlang=en is the English ASR track itself.
    assert table(t)["en"] == ("asr", "en", "en", None)
    for lang in ("de", "fr", "ru", "es", "cs", "sw", "vi"):
        assert table(t)[lang] == ("translated", lang, "en", None)
    assert table(t)["zh"] == ("translated", "zh-Hans", "en", "zh-Hans")
    # The original is asked for as itself: tlang=en dropped, the rest of the signed URL kept.
    en = query(t["en"].url)
    assert en["lang"] == "en" and en["kind"] == "asr" and "tlang" not in en and en["fmt"] == "vtt"
    assert en["signature"].startswith("7EFA83EB")
    assert query(t["de"].url)["tlang"] == "de"
    # exp=xftt,xctw is an experiment flag, not the PO-token one.
    assert not any(c.po_token for c in t.values())
    t = select_tracks(info, ["zh", "pt"], prefer={"zh": "zh-Hant", "pt": "pt-BR"})
    assert table(t) == {"zh": ("translated", "zh-Hant", "en", "zh-Hant"), "pt": ("translated", "pt", "en", None)}


def test_2023_manual_original_language_and_hls_only_asr():
    info = load(DATA / "bumblecee_eg_yMhrRD0A.info.json")
    assert all(c.kind == "none" for c in select_tracks(info, LANGS).values())
    ko = select_tracks(info, ["ko"])["ko"]
    assert (ko.kind, ko.key, ko.source_lang, ko.ext, ko.url_host) == ("manual", "ko", "ko", "vtt", "www.youtube.com")
    # Without the manual track, the lone automatic entry (an HLS playlist) is still the
    # Korean ASR track: kept, with no URL, so the crawl can say why nothing was fetched.
    info["subtitles"] = {}
    ko = select_tracks(info, ["ko"])["ko"]
    assert (ko.kind, ko.key, ko.source_lang, ko.url, ko.ext) == ("asr", "ko", "ko", None, None)
    assert ko.record()["url_host"] is None and "url" not in ko.record()


# ---------------------------------------------------------------- shapes from the documented URLs

def test_youtube_dl_ttsurl_shape_shuffled_params():
    # youtube-dl 2013-2016 appended lang/tlang/fmt/ts/kind to the player's ttsurl in Python 2
    # dict order, e.g. (a real 2018 URL) "...&lang=en&...&fmt=ttml&v=ID&kind=asr&caps=asr&
    # expire=1542141412&tlang=af&hl=en&signature=...": the order of the parameters says nothing.
    base = "https://www.youtube.com/api/timedtext?lang=es&xorp=True&key=yttt1&fmt=vtt&v=NMPsbTAP508&kind=asr&caps=asr"
    keys = ("es", "en", "zh-Hans")
    info = {"automatic_captions": {k: [{"url": f"{base}&tlang={k}&hl=en", "ext": "vtt"}] for k in keys}}
    t = select_tracks(info, ["es", "en", "zh"])
    assert table(t) == {"es": ("asr", "es", "es", None), "en": ("translated", "en", "es", None),
                        "zh": ("translated", "zh-Hans", "es", "zh-Hans")}


def test_youtube_dl_translating_a_manual_first_track():
    # youtube-dl 2017-2021 translated captionTracks[0]; a manual track's URL has no kind=asr.
    base = "https://www.youtube.com/api/timedtext?v=x&caps=asr&key=yt8&lang=de&name=Deutsch"
    info = {"subtitles": {"de": [{"ext": "vtt", "url": base + "&fmt=vtt"}]},
            "automatic_captions": {k: [{"ext": "vtt", "url": f"{base}&tlang={k}&fmt=vtt"}] for k in ("de", "fr", "en")}}
    assert asr_language(info) is None
    assert table(select_tracks(info, ["de", "fr", "en"])) == {
        "de": ("manual", "de", "de", None), "fr": ("translated", "fr", "de", None),
        "en": ("translated", "en", "de", None)}
    del info["subtitles"]  # the track itself, reached through the translation endpoint
    assert table(select_tracks(info, ["de"]))["de"] == ("manual", "de", "de", None)


def test_legacy_dict_without_orig_reads_asr_language_from_url():
    url = "https://www.youtube.com/api/timedtext?v=x&kind=asr&lang=es&fmt=json3"
    info = {"automatic_captions": {"es": [{"ext": "json3", "url": url}],
                                   "en": [{"ext": "json3", "url": url + "&tlang=en"}]}}
    t = select_tracks(info, ["es", "en"])
    assert (t["es"].kind, t["en"].kind, t["en"].source_lang) == ("asr", "translated", "es")
    assert t["es"].url.endswith("fmt=vtt")  # rewritten from json3


def test_a_track_without_a_fetchable_format_is_still_chosen():
    hls = {"ext": "vtt", "protocol": "m3u8_native", "url": "https://manifest.googlevideo.com/api/manifest/x.m3u8"}
    info = {"subtitles": {"fr": [hls, {"ext": "srv3", "url": "https://example.com/sub.xml"}]},
            "automatic_captions": {"fr-orig": [hls]}}
    fr = select_tracks(info, ["fr"])["fr"]
    assert (fr.kind, fr.key, fr.source_lang, fr.ext, fr.url) == ("manual", "fr", "fr", None, None)
    assert fr.record() == {"lang": "fr", "kind": "manual", "key": "fr", "source_lang": "fr", "ext": None,
                           "name": None, "variant": None, "po_token": False, "url_host": None}


def test_po_token_mark_is_read_from_exp():
    # Shape of a 2025 web-client URL: exp=xpe, and pot/potc/c once yt-dlp got a token.
    url = ("https://www.youtube.com/api/timedtext?v=sal78ACtGTc&caps=asr&opi=112496729&exp=xpe&xoaf=5&xowf=1"
           "&sparams=ip%2Cipbits%2Cexpire%2Cv%2Cei%2Ccaps%2Copi%2Cexp%2Cxoaf&key=yt8&kind=asr&lang=en")
    assert needs_po_token(url) and needs_po_token(url + "&potc=1&pot=TOKEN&c=WEB")
    assert needs_po_token(url.replace("exp=xpe", "exp=xpv"))
    assert needs_po_token(url.replace("exp=xpe", "exp=xftt%2Cxpe"))
    assert not needs_po_token(url.replace("exp=xpe", "exp=xftt%2Cxctw")) and not needs_po_token(None)
    info = {"language": "en", "automatic_captions": {
        "en-orig": [{"ext": "vtt", "url": url + "&fmt=vtt"}],
        "de": [{"ext": "json3", "url": url + "&tlang=de&fmt=json3"}]}}
    t = select_tracks(info, ["en", "de"])
    assert t["en"].po_token and t["de"].po_token and t["de"].record()["po_token"] is True
    assert query(t["de"].url)["fmt"] == "vtt" and query(t["de"].url)["exp"] == "xpe"


def test_translations_asked_for_as_srt_the_other_tracks_as_vtt():
    info = load(DATA / "yampack_kpubsAwwuug.info.json")  # 2021: every entry a timedtext URL (vtt only)
    t = select_tracks(info, ["en", "de", "zh"], translated_format="srt")
    assert (t["en"].kind, t["en"].ext, query(t["en"].url)["fmt"]) == ("asr", "vtt", "vtt")
    for lang in ("de", "zh"):
        q = query(t[lang].url)
        assert (t[lang].kind, t[lang].ext, q["fmt"], q["tlang"]) == ("translated", "srt", "srt", t[lang].key)
        assert q["signature"] == query(select_tracks(info, [lang])[lang].url)["signature"]  # the same URL otherwise
    assert t["de"].record()["ext"] == "srt"
    # yt-dlp lists an "srt" entry among a track's formats: it is taken as it is
    hls = {"ext": "vtt", "protocol": "m3u8_native", "url": "https://manifest.googlevideo.com/api/manifest/x.m3u8"}
    def entry(key, *exts):
        return [{"ext": ext, "url": f"https://example.com/{key}.{ext}"} for ext in exts]

    info = {"language": "en", "automatic_captions": {"en-orig": entry("en", "vtt", "srt"),
                                                     "fr": [hls, *entry("fr", "vtt", "srt")],
                                                     "de": [hls, *entry("de", "vtt")]}}
    t = select_tracks(info, ["en", "fr", "de"], translated_format="srt")
    assert (t["en"].ext, t["en"].url) == ("vtt", "https://example.com/en.vtt")
    assert (t["fr"].ext, t["fr"].url) == ("srt", "https://example.com/fr.srt")
    # a translation offered neither as SRT nor by a timedtext URL is fetched as WebVTT
    assert (t["de"].kind, t["de"].ext, t["de"].url) == ("translated", "vtt", "https://example.com/de.vtt")


def test_requested_variant_is_tried_before_the_kind_order():
    base = "https://www.youtube.com/api/timedtext?v=x&kind=asr&lang=en"
    info = {"subtitles": {"zh-Hans": [{"ext": "vtt", "url": "https://www.youtube.com/api/timedtext?v=x&lang=zh-Hans"}]},
            "automatic_captions": {"en-orig": [{"ext": "vtt", "url": base}],
                                   **{k: [{"ext": "vtt", "url": f"{base}&tlang={k}"}] for k in ("zh-Hans", "zh-Hant")}}}
    assert table(select_tracks(info, ["zh"]))["zh"] == ("manual", "zh-Hans", "zh", "zh-Hans")
    hant = ("translated", "zh-Hant", "en", "zh-Hant")
    assert table(select_tracks(info, ["zh"], prefer={"zh": "zh-Hant"}))["zh"] == hant
    assert table(select_tracks(info, ["zh-Hant"])) == {"zh": hant}
    assert table(select_tracks(info, ["zh"], prefer={"zh": "zh-TW"}))["zh"][1] == "zh-Hans"  # absent: usual order


# ---------------------------------------------------------------- the shared real fixtures

def test_tracks_on_real_info_json():
    fixtures = real_fixtures() / "infojson"
    pinch = load(fixtures / "pinchflat_example.info.json")  # yt-dlp 2024.01: manual de, en ASR, xx-de keys
    t = select_tracks(pinch, LANGS)
    assert table(t)["en"] == ("asr", "en-orig", "en", None)
    assert table(t)["de"] == ("manual", "de", "de", None)
    assert table(t)["fr"] == ("translated", "fr-de", "de", None)
    assert table(t)["zh"] == ("translated", "zh-Hans-de", "de", "zh-Hans")
    assert all(c.ext == "vtt" and "m3u8" not in c.url for c in t.values())
    tube = load(fixtures / "tubesync_JjQDik3yNhA_2023-06-29.json")
    t = select_tracks(tube, LANGS)
    assert asr_language(tube) == "en"
    assert (t["en"].kind, t["de"].kind, t["de"].source_lang) == ("asr", "translated", "en")
    assert "fmt=vtt" in t["de"].url and "tlang=de" in t["de"].url
    chat = load(fixtures / "tubesync_gogEJyoSB9s_low_formats.json")
    t = select_tracks(chat, LANGS)
    assert t["en"].kind == "asr" and all(c.kind != "manual" for c in t.values())  # live_chat is not a subtitle
    for name in ("merlot_WAaKRUoY6Io.info.json", "tubesync_metadata_minimal_formats.json"):
        info = load(fixtures / name)
        assert all(c.kind == "none" for c in select_tracks(info, LANGS).values())


def test_2026_dict_manual_english_and_asr_translations():
    info = load(real_fixtures() / "infojson" / "genieai_P-4pbFcERnk.info.json")  # yt-dlp 2026.03.13
    t = select_tracks(info, LANGS)
    assert table(t)["en"] == ("manual", "en", "en", None)
    for lang in ("de", "fr", "ru", "es", "cs", "sw", "vi"):  # kind=asr&lang=en&tlang=xx; no xx-en keys
        assert table(t)[lang] == ("translated", lang, "en", None)
    assert table(t)["zh"] == ("translated", "zh-Hans", "en", "zh-Hans")
    assert not any(c.po_token for c in t.values())
    t = select_tracks(info, ["zh", "pt"], prefer={"zh": "zh-Hant", "pt": "pt-PT"})
    assert table(t) == {"zh": ("translated", "zh-Hant", "en", "zh-Hant"), "pt": ("translated", "pt-PT", "en", "pt-PT")}


def test_2023_dicts_with_many_manual_tracks_or_only_chinese_ones():
    fixtures = real_fixtures() / "infojson"
    beast = load(fixtures / "ytdlpps_KrLj6nc516A.info.json")  # 17 manual tracks, zh only as zh-Hant
    t = select_tracks(beast, LANGS)
    for lang in ("en", "de", "fr", "ru", "es"):
        assert table(t)[lang] == ("manual", lang, lang, None)
    assert table(t)["zh"] == ("manual", "zh-Hant", "zh", "zh-Hant")
    for lang in ("cs", "sw", "vi"):
        assert table(t)[lang] == ("translated", lang, "en", None)
    assert table(select_tracks(beast, ["zh"], {"zh": "zh-Hans"}))["zh"] == ("translated", "zh-Hans", "en", "zh-Hans")
    hk = load(fixtures / "mediafetchpro_KO-yFbjtXGg.info.json")  # manual zh-HK and zh-Hant, no automatic ones
    assert table(select_tracks(hk, ["zh", "en"])) == {"zh": ("manual", "zh-Hant", "zh", "zh-Hant"),
                                                     "en": ("none", None, None, None)}
    assert table(select_tracks(hk, ["zh"], {"zh": "zh-HK"}))["zh"] == ("manual", "zh-HK", "zh", "zh-HK")


# ---------------------------------------------------------------- --langs

def test_parse_langs_accepts_youtube_codes_and_variants():
    assert parse_langs("en,de,fr,ru,es,cs,sw,zh,vi") == (LANGS, {})
    assert parse_langs(" zh-Hant, pt-BR ,es-419,en-GB,iw,fil") == (
        ["zh", "pt", "es", "en", "iw", "fil"], {"zh": "zh-Hant", "pt": "pt-BR", "es": "es-419", "en": "en-GB"})
    assert parse_langs("zh,zh-Hans,zh,en") == (["zh", "en"], {"zh": "zh-Hans"})
    assert parse_langs("pt-PT") == (["pt"], {"pt": "pt-PT"})
    assert len(YOUTUBE_TRANSLATION_CODES) == 156 and "en-orig" not in YOUTUBE_TRANSLATION_CODES


@pytest.mark.parametrize("text, bad, hint", [
    ("en,eng", "eng", "en"), ("EN", "EN", "en"), ("de,germna", "germna", "de"), ("ces", "ces", "cs"),
    ("zh_Hans", "zh_Hans", "zh-Hans"), ("pt-br", "pt-br", "pt-BR"), ("he", "he", "iw"), ("en-orig", "en-orig", "en"),
])
def test_parse_langs_rejects_with_a_suggestion(text, bad, hint):
    with pytest.raises(UserError) as err:
        parse_langs(text)
    message = str(err.value)
    assert f"--langs {bad!r} is not a YouTube caption language code (did you mean {hint!r}?)" in message
    assert "de, dv, dz" in message and "zh-Hans, zh-Hant" in message  # the accepted codes are listed
    assert message.count(". ") == 0 and "\n" not in message  # one sentence


def test_parse_langs_rejects_unknown_codes_and_two_variants():
    with pytest.raises(UserError, match=r"^--langs 'xx' is not a YouTube caption language code; use"):
        parse_langs("en,xx")
    with pytest.raises(UserError, match=r"asks for zh twice, as 'zh-Hans' and 'zh-Hant'"):
        parse_langs("zh-Hans,zh-Hant")
    with pytest.raises(UserError, match="at least one language code"):
        parse_langs(" , ")

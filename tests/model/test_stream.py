"""The training stream's pieces on their own: subtitle tracks decoded from a sample's bytes,
feature rows sliced from .npy, clip tokenisation (the tokenizer's own ids, cut or not)."""
import json

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny tensors on a shared machine: extra threads only wait on each other
pytest.importorskip("transformers")


def _tricky_subs(ensure_ascii: bool) -> tuple[dict, bytes]:
    cues = lambda words: [[t * 3.0, t * 3.0 + 2.5, f"{w} {t}"] for t, w in enumerate(words)]  # noqa: E731
    subs = {"video_id": "v{x}", "duration": 30.0,
            "segments": [{"start": 0, "end": 3, "text": {"en": "a } b", "de": "x"}}],
            "tracks": {"en": {"kind": "asr", "cues": cues(["say \"hi\" }", "back\\slash", "plain"])},
                       "de": {"kind": "manual", "cues": cues(["{braces}", "ü ß", "ende"])},
                       "zh": {"kind": "manual", "cues": cues(["切洋葱", "慢慢", "\\\"q"])},
                       "fr": {"kind": "asr", "cues": []},
                       "ru": {"kind": "asr", "cues": cues(["резать"]), "extra": {"nested": [{"deep": "}"}]}}}}
    return subs, json.dumps(subs, ensure_ascii=ensure_ascii, sort_keys=ensure_ascii).encode()


@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_subtitle_tracks_decode_only_drawn_tracks_exactly_as_json(ensure_ascii):
    from shards.samples import SubsJson

    subs, data = _tricky_subs(ensure_ascii)
    tracks = SubsJson.lazy(data)
    assert tracks.langs() == sorted(subs["tracks"])
    assert tracks.tracks.decoded() == []  # nothing decoded until asked
    for lang, track in subs["tracks"].items():
        assert tracks.cues(lang) == track["cues"]
    assert SubsJson.lazy(b'{"tracks": null}').langs() == [] and SubsJson.lazy(b"{}").langs() == []
    for bad in (b"", b"[]", b'{"tracks": [1]}', b'{"tracks": {"en": {"cues": []}}} extra', b'{"tracks": {"en": {',
                b'{"a" 1}', '{"tracks": {"en": {"cues": [[0, 1, "\xff"]]}}}'.encode("latin1")):
        with pytest.raises(ValueError):
            t = SubsJson.lazy(bad)
            [t.cues(lang) for lang in t.langs()]


def test_clips_from_bytes_match_clips_from_parsed_json_and_skip_empty_tracks():
    import random

    import numpy as np

    from model.clips import ClipConfig, FeatureRows, pretrain_clip
    from shards.samples import SubsJson
    from tests.textmodel import _npy

    subs, data = _tricky_subs(False)
    video = np.arange(30 * 6, dtype=np.float16).reshape(30, 6)
    sample = {"r21d.npy": _npy(video[:, :2]), "s3d.npy": _npy(video[:, 2:])}
    cfg = ClipConfig(langs=("en", "de", "fr", "zh"), max_video_len=8)
    drawn = set()
    for seed in range(40):
        a = pretrain_clip(subs, video, cfg, random.Random(seed))
        b = pretrain_clip(SubsJson.lazy(data), FeatureRows(sample, ("r21d", "s3d")), cfg, random.Random(seed))
        assert a[:3] == b[:3] and np.array_equal(a[3], b[3]) and b[3].flags.writeable
        drawn.add(a[0])
    assert drawn == {"en", "de", "zh"}  # fr has no cues: never drawn
    only_empty = {"tracks": {"fr": {"cues": []}}}
    assert pretrain_clip(only_empty, video, cfg, random.Random(0)) is None


def test_feature_rows_read_only_the_sliced_rows_and_check_the_header():
    import numpy as np

    from model.clips import FeatureRows, NpyRows, video_features
    from tests.textmodel import _npy

    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 4)).astype(np.float16)
    b = rng.normal(size=(11, 3)).astype(np.float32)
    rows = FeatureRows({"r21d.npy": _npy(a), "s3d.npy": _npy(b)}, ("r21d", "s3d"))
    assert rows.shape == (11, 7) and len(rows) == 11
    assert np.array_equal(rows[3:9], np.concatenate([a[3:9], b[3:9]], axis=1))
    assert np.array_equal(video_features({"r21d.npy": _npy(a)}, ("r21d",)), a)
    fortran = np.asfortranarray(a)
    assert np.array_equal(NpyRows(_npy(fortran)).rows(2, 5), a[2:5])  # not C order: np.load decodes it
    with pytest.raises(ValueError):
        NpyRows(_npy(a)[:-10])  # truncated data
    with pytest.raises(ValueError):
        NpyRows(_npy(np.array([{"x": 1}], dtype=object)))  # pickled objects are refused
    for bad in (np.zeros(5, np.float16), np.zeros((0, 3), np.float16), np.zeros((4, 3), np.int32)):
        with pytest.raises(ValueError):
            FeatureRows({"r21d.npy": _npy(bad)}, ("r21d",))
    with pytest.raises(KeyError):
        FeatureRows({"r21d.npy": _npy(a)}, ("r21d", "s3d"))


def _texts():
    import random

    from tests.textmodel import WORDS

    rng = random.Random(1)
    texts, langs = [], []
    for i in range(120):
        lang = rng.choice(sorted(WORDS))
        words = [rng.choice(WORDS[lang]) for _ in range(rng.randint(1, 400))]
        # Chinese cues have no spaces inside: a whole cue is one "word" of many tokens
        texts.append(("".join(words[:8]) + " ") * (len(words) // 8) if lang == "zh" else " ".join(words))
        langs.append(lang)
    return texts, langs


def test_clip_tokenizer_gives_the_tokenizers_own_ids_while_cutting_texts(text_dir):
    from model.trainer.tokens import ClipTokenizer
    from pipeline.runtime.hub import load_tokenizer

    tok = load_tokenizer(str(text_dir))
    texts, langs = _texts()
    enc = ClipTokenizer(tok, 24)
    fed = []
    call = enc._call
    enc._call = lambda ts: fed.extend(ts) or call(ts)
    got = [x for i in range(0, len(texts), 16) for x in enc(texts[i:i + 16], langs[i:i + 16])]
    want = tok([" ".join(t.split()[:24]) for t in texts], truncation=True, max_length=24)["input_ids"]
    assert got == want and enc.cutting
    # the unspaced Chinese texts were cut well short of their full length: less was tokenised
    zh_full = sum(len(t) for t, lang in zip(texts, langs) if lang == "zh")
    assert sum(len(t) for t in fed if t[:1] in "切洋葱慢锅油加热搅拌盐水煮倒碗") < 0.5 * zh_full


def test_clip_tokenizer_stops_cutting_when_the_shortcut_would_change_ids(text_dir, caplog):
    from model.trainer.tokens import ClipTokenizer
    from pipeline.runtime.hub import load_tokenizer

    tok = load_tokenizer(str(text_dir))

    class Odd:
        """A tokenizer whose own call differs from its Rust tokenizer's."""
        backend_tokenizer = tok.backend_tokenizer

        def __call__(self, texts, **kw):
            return {"input_ids": [ids[::-1] for ids in tok(texts, **kw)["input_ids"]]}

    texts, langs = _texts()
    enc = ClipTokenizer(Odd(), 24)
    first = enc(texts[:16], langs[:16])
    assert not enc.cutting and "differ" in caplog.text
    assert first + enc(texts[16:32], langs[16:32]) == Odd()(
        [" ".join(t.split()[:24]) for t in texts[:32]], truncation=True, max_length=24)["input_ids"]


def test_batched_tokenisation_equals_per_sample_tokenisation(text_dir, pretrain_shards):
    import numpy as np

    from model.clips import ClipConfig
    from model.trainer.shard_stream import StreamState, tar_samples
    from model.trainer.tokens import tokenize
    from model.trainer.data import expand_shards, sample_clips
    from pipeline.runtime.hub import load_tokenizer

    tok = load_tokenizer(str(text_dir))
    cfg = ClipConfig(members=("r21d", "s3d"), max_text_len=10)

    def run(chunk):
        state = StreamState()
        src = tar_samples(iter([(0, expand_shards(str(pretrain_shards)))]), state)
        return list(tokenize(sample_clips(src, cfg, state, seed=3), tok, cfg, chunk=chunk))

    one, many = run(1), run(3)
    assert len(one) == len(many) == 8
    for a, b in zip(one, many):
        fields = ("key", "ids", "noisy_ids", "pair_ids")
        assert [a[f] for f in fields] == [b[f] for f in fields]
        assert np.array_equal(a["frame_noise"], b["frame_noise"]) and len(a["ids"]) <= 10
        assert a["ids"] == tok(a["text"], truncation=True, max_length=10)["input_ids"]


def test_clip_tokenizer_keeps_a_left_truncating_tokenizers_own_ids(text_dir):
    from model.trainer.tokens import ClipTokenizer
    from pipeline.runtime.hub import load_tokenizer

    tok = load_tokenizer(str(text_dir))
    tok.truncation_side = "left"
    texts, langs = _texts()
    enc = ClipTokenizer(tok, 24)
    assert not enc.cutting
    want = tok([" ".join(t.split()[:24]) for t in texts], truncation=True, max_length=24)["input_ids"]
    assert enc(texts, langs) == want


def test_caption_draws_cover_every_caption_with_parallel_ones_as_pairs():
    """VATEX's layout: ten captions per language, the last five en/zh translations of each other."""
    import random

    import numpy as np

    from model.clips import ClipConfig, caption_clip

    en = [f"en caption {k}" for k in range(10)]
    zh = [f"zh caption {k}" for k in range(10)]
    captions = {"captions": {"en": en, "zh": zh}, "parallel": [{"en": en[k], "zh": zh[k]} for k in range(5, 10)]}
    video = np.zeros((40, 4), dtype=np.float16)
    cfg = ClipConfig(task="finetune", langs=("en", "zh"), max_video_len=8)
    rng = random.Random(0)
    seen = {}
    for _ in range(3000):
        lang, text, pair, rows = caption_clip(captions, video, cfg, rng)
        seen.setdefault(text, set()).add(pair)
        assert len(rows) == 8
    assert set(seen) == set(en) | set(zh)  # every caption, the first five of each language too
    for k in range(5):
        assert seen[en[k]] == {None} and seen[zh[k]] == {None}  # written independently: drawn alone
    for k in range(5, 10):
        assert seen[en[k]] == {zh[k]} and seen[zh[k]] == {en[k]}  # always with its translation
    # one language chosen: the parallel entries are single captions, each drawn once per unit
    only_en = caption_clip(captions, video, ClipConfig(task="finetune", langs=("en",)), random.Random(1))
    assert only_en[0] == "en" and only_en[2] is None
    assert caption_clip({"captions": {"fr": ["x"]}}, video, cfg, random.Random(0)) is None


def test_clips_through_cues_near_hold_exactly_the_cues_of_their_window():
    """Whatever window a clip draws (read back from its rows: row i holds i), its text is every cue of its
    language overlapping the window, or the one cue nearest it when none does, and its parallel text every
    cue of the other language overlapping it; lazily read or parsed, the same clip."""
    import random

    import numpy as np

    from model.clips import ClipConfig, pretrain_clip
    from shards.samples import SubsJson

    def overlapping(cues, start, end):
        return [c[2] for c in cues if c[1] > start and c[0] < end]

    layout = random.Random(1)
    video = np.arange(60, dtype=np.float32)[:, None]
    paired = 0
    for trial in range(30):
        tracks = {}
        for lang in ("en", "de", "fr"):
            t, cues = layout.uniform(0, 20), []
            while t < 70 and len(cues) < layout.randint(1, 8):
                length = layout.choice([0.5, 1.0, 2.5, 4.0])
                cues.append([t, t + length, f"{lang}{len(cues)}"])
                t += length + layout.choice([0.0, 0.0, 1.0, 9.0])
            tracks[lang] = {"kind": "asr", "cues": cues}
        subs = {"tracks": tracks}
        data = SubsJson.from_dict(subs).to_member()
        cfg = ClipConfig(langs=("en", "de", "fr"), max_video_len=layout.choice([4, 8, 30]))
        for seed in range(20):
            clip = pretrain_clip(subs, video, cfg, random.Random(seed))
            lazy = pretrain_clip(SubsJson.lazy(data), video, cfg, random.Random(seed))
            assert clip[:3] == lazy[:3] and np.array_equal(clip[3], lazy[3])
            lang, text, pair, rows = clip
            start, end = int(rows[0, 0]), int(rows[-1, 0]) + 1
            assert np.array_equal(rows[:, 0], np.arange(start, end))
            inside = overlapping(tracks[lang]["cues"], start, end)
            if inside:
                assert text == " ".join(inside)
            else:  # the window moved onto the nearest cue and still holds none: that cue alone
                assert text in {c[2] for c in tracks[lang]["cues"]}
            if pair is not None:
                paired += 1
                assert any(pair == " ".join(overlapping(tracks[o]["cues"], start, end)) for o in tracks if o != lang)
    assert paired > 100  # the parallel branch is drawn

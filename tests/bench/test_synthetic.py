"""The planted-structure corpus: deterministic, structured as planted, readable as mmp shards."""
import numpy as np
import pytest

from bench.synthetic import write_synthetic_corpus
from bench.synthetic_words import LANGS, NON_LATIN, SHARED_TOKENS
from shards.codec import load_json, load_npy
from shards.verify import main as verify
from tests.conftest import read_all_rows, read_all_samples

SMALL = dict(pretrain_videos=40, finetune_videos=20, eval_videos=15, videos_per_unit=16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_corpus(out, 7, **SMALL)


def read(corpus, part):
    return read_all_samples(corpus["dirs"][part])


def test_shards_verify_and_read_back(corpus):
    for part in ("pretrain", "pretrain_en", "finetune", "eval"):
        assert verify([corpus["dirs"][part], "--quick"]) == 0
    pretrain = read(corpus, "pretrain")
    assert len(pretrain) == 40 and len(read(corpus, "finetune")) == 20 and len(read(corpus, "eval")) == 15
    assert corpus["shards"]["pretrain"].endswith("mmp-{000000..000002}.tar")
    sample = pretrain["pt000000"]
    assert set(sample) == {"__key__", "s3d.npy", "subs.json", "meta.json"}
    s3d = load_npy(sample["s3d.npy"])
    meta = load_json(sample["meta.json"])
    assert s3d.dtype == np.float16 and s3d.shape == (meta["duration"], 32) and len(meta["concepts"]) == s3d.shape[0]
    rows = read_all_rows(corpus["dirs"]["eval"])
    assert {r["status"] for r in rows} == {"ok"} and all(r["languages"] == sorted(LANGS) for r in rows)


def test_deterministic_given_seed(corpus, tmp_path):
    again = write_synthetic_corpus(tmp_path / "again", 7, **SMALL)
    other = write_synthetic_corpus(tmp_path / "other", 8, **SMALL)
    for part in ("pretrain", "pretrain_en", "finetune", "eval"):
        a, b = read(corpus, part), read(again, part)
        assert a == b
        assert read(other, part) != a
    assert open(corpus["tokenizer_corpus"]).read() == open(again["tokenizer_corpus"]).read()
    assert again["lexicon"] == corpus["lexicon"] and other["lexicon"] != corpus["lexicon"]


def concept_words(text, lexicon):
    return [lexicon["concepts"].index(w) for w in text.split() if w in lexicon["concepts"]]


def test_cues_at_time_t_name_the_concept_shown_at_t(corpus):
    lexicons = corpus["lexicon"]
    for sample in read(corpus, "pretrain").values():
        subs = load_json(sample["subs.json"])
        shown = load_json(sample["meta.json"])["concepts"]
        assert set(subs["tracks"]) == set(LANGS)
        assert subs["tracks"]["en"]["kind"] == "asr" and subs["tracks"]["de"]["kind"] == "translated"
        for lang, track in subs["tracks"].items():
            covered = 0
            for start, end, text in track["cues"]:
                for t in range(int(start), int(end)):
                    assert concept_words(text, lexicons[lang]) == [shown[t]], (lang, t, text)
                covered += end - start
            assert covered == len(shown)  # the subtitles run over the whole video
        assert len(subs["segments"]) == len(subs["tracks"]["en"]["cues"])


def test_features_carry_the_concept(corpus):
    """Nearest class mean over the per-second features recovers the planted concept."""
    rows, labels = [], []
    for sample in read(corpus, "pretrain").values():
        rows.append(load_npy(sample["s3d.npy"]).astype(np.float32))
        labels += load_json(sample["meta.json"])["concepts"]
    x, y = np.concatenate(rows), np.array(labels)
    means = np.stack([x[y == c].mean(0) for c in range(24)])
    predicted = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (predicted == y).mean() > 0.9
    # and nothing else does: features of different concepts are not alike
    assert np.abs(np.corrcoef(means)[~np.eye(24, dtype=bool)]).max() < 0.8


def words_per_language(corpus):
    words = {lang: set() for lang in corpus["lexicon"]}
    with open(corpus["tokenizer_corpus"]) as f:
        lines = f.read().split("\n")
    for lang, lex in corpus["lexicon"].items():
        vocab = set(lex["concepts"]) | set(lex["fillers"]) | {lex["connector"]}
        own = vocab - {w for other, o in corpus["lexicon"].items() if other != lang for w in o["concepts"]}
        for line in lines:
            tokens = set(line.split())
            if tokens & own:
                assert tokens <= vocab | set(SHARED_TOKENS), line  # a text is in one language
                words[lang] |= tokens
    return words


def test_loanwords_are_the_only_shared_words_and_only_in_latin_script(corpus):
    cognates = corpus["summary"]["cognates"]
    assert len(cognates) == 10  # 0.4 of the 24 concepts, by default
    loans = set(cognates.values())
    for lang, lex in corpus["lexicon"].items():
        for c, word in cognates.items():
            assert (lex["concepts"][int(c)] == word) == (lang not in NON_LATIN), (lang, c)
    words = words_per_language(corpus)
    for i, a in enumerate(LANGS):
        for b in LANGS[i + 1:]:
            assert words[a] & words[b] <= set(SHARED_TOKENS) | loans
    for lang in NON_LATIN:
        assert not words[lang] & loans


def test_without_loanwords_vocabularies_are_disjoint(tmp_path):
    corpus = write_synthetic_corpus(tmp_path, 7, cognates=0.0, **SMALL)
    assert corpus["summary"]["cognates"] == {}
    words = words_per_language(corpus)
    for i, a in enumerate(LANGS):
        for b in LANGS[i + 1:]:
            assert words[a] & words[b] <= set(SHARED_TOKENS)
    assert corpus["summary"]["max_vocabulary_overlap"] < 0.3


def nearest_pretrain_mean(corpus, part):
    """Share of ``part``'s feature rows whose nearest pre-training concept mean is their concept."""
    def rows(name):
        x, y = [], []
        for sample in read(corpus, name).values():
            x.append(load_npy(sample["s3d.npy"]).astype(np.float32))
            y += load_json(sample["meta.json"])["concepts"]
        return np.concatenate(x), np.array(y)
    x, y = rows("pretrain")
    means = np.stack([x[y == c].mean(0) for c in range(24)])
    x, y = rows(part)
    return (np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1) == y).mean()


@pytest.mark.parametrize("shift, low, high", [(0.0, 0.9, 1.0), (1.0, 0.0, 0.2)])
def test_downstream_features_shift_away_from_pretraining(tmp_path, shift, low, high):
    corpus = write_synthetic_corpus(tmp_path, 7, downstream_shift=shift, **SMALL)
    for part in ("finetune", "eval"):
        assert low <= nearest_pretrain_mean(corpus, part) <= high, (shift, part)


def test_default_shift_keeps_some_of_pretraining(corpus):
    assert 0.2 < nearest_pretrain_mean(corpus, "eval") < 0.95  # related, yet not the same features


def test_pretrain_en_finetune_and_eval(corpus):
    lexicons = corpus["lexicon"]
    pretrain, english = read(corpus, "pretrain"), read(corpus, "pretrain_en")
    assert set(english) == set(pretrain)
    for key, sample in english.items():
        subs = load_json(sample["subs.json"])
        assert set(subs["tracks"]) == {"en"}
        assert subs["tracks"]["en"] == load_json(pretrain[key]["subs.json"])["tracks"]["en"]
        assert sample["s3d.npy"] == pretrain[key]["s3d.npy"]
    finetune, evaluation = read(corpus, "finetune"), read(corpus, "eval")
    assert not (set(finetune) & set(evaluation)) and not (set(finetune) & set(pretrain))
    for sample in finetune.values():
        caps = load_json(sample["captions.json"])
        assert caps["split"] == "train" and set(caps["captions"]) == {"en"} and len(caps["captions"]["en"]) == 3
        assert caps["parallel"] == []
    concept_sets = set()
    for sample in evaluation.values():
        caps = load_json(sample["captions.json"])
        shown = load_json(sample["meta.json"])["concepts"]
        in_order = [c for i, c in enumerate(shown) if i == 0 or shown[i - 1] != c]
        assert caps["split"] == "test" and set(caps["captions"]) == set(LANGS)
        for lang, (text,) in caps["captions"].items():
            assert concept_words(text, lexicons[lang]) == in_order
        assert caps["parallel"] == [{lang: c[0] for lang, c in caps["captions"].items()}]
        concept_sets.add(frozenset(in_order))
    assert len(concept_sets) == len(evaluation)  # one right answer per query


def test_resume_and_refuse_other_arguments(corpus):
    again = write_synthetic_corpus(corpus["out"], 7, **SMALL)  # units complete: kept
    assert again["shards"] == corpus["shards"]
    with pytest.raises(ValueError, match="other arguments"):
        write_synthetic_corpus(corpus["out"], 8, **SMALL)
    with pytest.raises(ValueError, match="langs must include"):
        write_synthetic_corpus(corpus["out"], 7, langs=["de"], **SMALL)
    with pytest.raises(ValueError, match="downstream_shift"):
        write_synthetic_corpus(corpus["out"], 7, downstream_shift=1.5, **SMALL)
    with pytest.raises(ValueError, match="cognates"):
        write_synthetic_corpus(corpus["out"], 7, cognates=-0.1, **SMALL)


def test_two_feature_members_and_fewer_languages(tmp_path):
    result = write_synthetic_corpus(tmp_path, 3, langs=["en", "de", "zh"], pretrain_videos=6, finetune_videos=4,
                                    eval_videos=4, feature_dims={"s3d": 16, "r21d": 8})
    sample = read_all_samples(result["dirs"]["pretrain"])["pt000000"]
    meta = load_json(sample["meta.json"])
    assert load_npy(sample["s3d.npy"]).shape == (meta["duration"], 16)
    assert load_npy(sample["r21d.npy"]).shape == (meta["duration"], 8)
    assert set(load_json(sample["subs.json"])["tracks"]) == {"en", "de", "zh"}
    caps = load_json(read_all_samples(result["dirs"]["eval"])["ev000000"]["captions.json"])
    assert set(caps["captions"]) == {"en", "de", "zh"}

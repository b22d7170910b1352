"""The synthetic languages of bench/synthetic.py: per language its own consonants (its own
script for ru and zh) and filler words, concept words built from them, loanwords spelt as in
English, and sentences naming concepts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shards.samples import RELEASE_LANGS as LANGS  # the order the corpus is drawn in

# Per language: syllable onsets (disjoint across languages, so every word is too) and vowels.
ALPHABETS = {
    "en": ("bdk", "aeiou"),
    "de": ("fgh", "aäeöü"),
    "fr": ("lmn", "aéèiou"),
    "cs": ("čřš", "aeiouý"),
    "sw": ("jwz", "aeiou"),
    "ru": ("бгдклмнпрст", "аеиоуыя"),
    "vi": ("rvx", "ăâêôơư"),
    "es": ("cñp", "aeiouá"),
    "zh": None,  # words of two CJK characters
}
SHARED_TOKENS = [str(d) for d in range(1, 10)] + ["."]
NON_LATIN = ("ru", "zh")  # scripts of their own: no loanwords spelt as in English
FILLERS = 8
PARTS = {"pretrain": 1, "finetune": 2, "eval": 3}


@dataclass
class Lexicon:
    """One synthetic language: a word per concept, filler words and a connector ("and")."""

    lang: str
    concepts: list[str]
    fillers: list[str]
    connector: str

    def words(self) -> set[str]:
        return set(self.concepts) | set(self.fillers) | {self.connector}


def make_lexicon(lang: str, n_concepts: int, rng: np.random.Generator) -> Lexicon:
    alphabet = ALPHABETS.get(lang)
    if alphabet is None:  # CJK ideographs: a block no other language uses
        syllables = [chr(0x4E00 + i) for i in range(400)]
    else:
        onsets, vowels = alphabet
        syllables = [o + v for o in onsets for v in vowels]
    need = n_concepts + FILLERS + 1
    order = rng.permutation(len(syllables))
    words: list[str] = []
    seen = set()
    while len(words) < need:
        a, b = rng.integers(len(syllables), size=2)
        word = syllables[order[a]] + syllables[order[b]]
        if word not in seen:
            seen.add(word)
            words.append(word)
    return Lexicon(lang, words[:n_concepts], words[n_concepts:n_concepts + FILLERS], words[-1])


def cognate_concepts(n_concepts: int, cognates: float, seed: int) -> list[int]:
    """The concepts named by one (English) word in every Latin-script language."""
    k = int(round(cognates * n_concepts))
    return sorted(int(c) for c in np.random.default_rng([seed, 0, 100]).choice(n_concepts, size=k, replace=False))


def make_lexicons(langs, n_concepts: int, seed: int, cognates: float = 0.0) -> dict[str, Lexicon]:
    unknown = [l for l in langs if l not in ALPHABETS]
    if unknown:
        raise ValueError(f"no synthetic alphabet for {unknown}; languages are {', '.join(ALPHABETS)}")
    if not 0.0 <= cognates <= 1.0:
        raise ValueError("cognates is a share of the concepts, between 0 and 1")
    # the English lexicon is drawn whether or not en is listed, so a loanword is spelt the same either way
    english = make_lexicon("en", n_concepts, np.random.default_rng([seed, 0, LANGS.index("en")]))
    lexicons = {l: make_lexicon(l, n_concepts, np.random.default_rng([seed, 0, LANGS.index(l)])) for l in langs}
    words = [w for lex in lexicons.values() for w in lex.words()]
    assert len(words) == len(set(words)), "synthetic vocabularies overlap"  # disjoint onsets guarantee it
    for c in cognate_concepts(n_concepts, cognates, seed):
        for lang, lex in lexicons.items():
            if lang not in NON_LATIN:
                lex.concepts[c] = english.concepts[c]
    return lexicons


def sentence(lex: Lexicon, concepts: list[int], rng: np.random.Generator) -> str:
    """Filler, the concept words in order joined by the connector, maybe a number, a full stop."""
    words = [lex.fillers[rng.integers(FILLERS)]]
    for j, c in enumerate(concepts):
        if j:
            words.append(lex.connector)
        words.append(lex.concepts[c])
        if rng.random() < 0.3:
            words.append(lex.fillers[rng.integers(FILLERS)])
    if rng.random() < 0.5:
        words.insert(int(rng.integers(len(words) + 1)), str(int(rng.integers(1, 10))))
    return " ".join(words) + " ."

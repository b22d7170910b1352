"""Text to token ids for the training stream: ``ClipTokenizer`` (a batch at a time, each
text cut to the words that can reach ``max_text_len`` tokens) and the ``tokenize`` stage,
which also draws the intra-modal noise masks."""
from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from model.clips import ClipConfig

log = logging.getLogger("mmp.data")


class ClipTokenizer:
    """Token ids for a list of texts, truncated to ``max_len``, in one call to the tokenizer.

    A clip's subtitles run to hundreds of words, or thousands of characters without a
    space in Chinese, while only ``max_len`` tokens are kept. So each text is cut first:
    to ``max_len`` words (every word is at least one token), then at the first space past
    the characters its language needs on average for ``max_len`` tokens (counted from
    texts that were not truncated), with a margin. A text whose cut gives fewer than
    ``max_len`` tokens is encoded again uncut, so the ids are always those of the whole
    text. That holds for tokenizers whose tokens never span a space (WordPiece,
    SentencePiece, byte-level BPE); the first call checks it against the tokenizer's own
    call on the whole texts and stops cutting when they differ.

    With a fast tokenizer the Rust tokenizer is called directly (a copy, so the caller's
    tokenizer keeps its settings), without offsets and Python-side dicts.
    """

    MARGIN = 1.25

    def __init__(self, tokenizer, max_len: int):
        self.tokenizer, self.max_len = tokenizer, max_len
        self.chars_seen: Counter = Counter()
        self.tokens_seen: Counter = Counter()
        self.checked = False
        self.cutting = True
        self.backend, self.specials = None, 0
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(tokenizer, "truncation_side", "right") != "right":
            # a slow tokenizer, or one keeping the end of a text: its own call, on the word-capped
            # texts (cutting keeps the start)
            self.cutting = False
        else:
            from tokenizers import Tokenizer

            self.backend = Tokenizer.from_str(backend.to_str())
            self.backend.no_padding()
            self.backend.enable_truncation(max_len)
            self.specials = self.backend.num_special_tokens_to_add(False)
            self._encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)

    def plain(self, texts: list[str]) -> list[list[int]]:
        """The reference: the tokenizer's own call."""
        return self.tokenizer(texts, truncation=True, max_length=self.max_len)["input_ids"] if texts else []

    def _call(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        if self.backend is None:
            return self.plain(texts)
        return [e.ids for e in self._encode(texts)]

    def _cut(self, text: str, lang) -> str:
        chars, tokens = self.chars_seen[lang], self.tokens_seen[lang]
        # until a language is known, one character per token: Chinese fills max_len from the
        # first cut, and a spaced language comes back short once, and counted
        per_token = chars / tokens if tokens >= 2 * self.max_len else 1.0
        budget = int(self.max_len * self.MARGIN * per_token) + 16
        end = text.find(" ", budget) if len(text) > budget else -1
        return text[:end] if end > 0 else text

    def _count(self, ids: list[list[int]], texts: list[str], langs: list) -> None:
        for x, t, lang in zip(ids, texts, langs):
            if len(x) < self.max_len:  # a truncated text only bounds its characters per token
                self.chars_seen[lang] += len(t)
                self.tokens_seen[lang] += max(0, len(x) - self.specials)

    def __call__(self, texts: list[str], langs: list) -> list[list[int]]:
        full = []
        for t in texts:
            words = t.split()
            full.append(" ".join(words[:self.max_len]) if len(words) > self.max_len else t)
        if not self.cutting:
            return self._call(full)
        cut = [self._cut(t, lang) for t, lang in zip(full, langs)]
        ids = self._call(cut)
        self._count(ids, cut, langs)
        short = [i for i, x in enumerate(ids) if len(x) < self.max_len and len(cut[i]) < len(full[i])]
        again = self._call([full[i] for i in short])
        self._count(again, [full[i] for i in short], [langs[i] for i in short])
        for i, x in zip(short, again):
            ids[i] = x
        if not self.checked:
            self.checked = True
            if ids != self.plain(full):
                log.warning("this tokenizer's ids of cut texts differ from those of whole texts: "
                            "encoding whole texts with the tokenizer's own call from now on")
                self.cutting, self.backend = False, None
                return self.plain(full)
        return ids


def tokenize(src, tokenizer, cfg: ClipConfig, chunk: int = 1):
    """Token ids (truncated to max_text_len) and the intra-modal noise masks, per sample.

    ``chunk`` samples (the batch size in the stream) are tokenised in one call; they are
    yielded one by one, so the stage order and the data positions stay those of a per-sample stage.
    """
    special = set(tokenizer.all_special_ids)
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    encode = ClipTokenizer(tokenizer, cfg.max_text_len)

    def flush(buf):
        texts, langs = [], []
        for s in buf:
            texts.append(s["text"])
            langs.append(s["lang"])
            if s["pair"]:
                texts.append(s["pair"])
                langs.append(s.get("pair_lang"))
        encoded = iter(encode(texts, langs))
        for s in buf:
            ids = next(encoded)
            s["pair_ids"] = next(encoded) if s["pair"] else None
            rng = s.pop("rng")
            noisy = [mask_id if (t not in special and rng.random() < cfg.mask_prob) else t for t in ids]
            frame_noise = np.array([rng.random() < cfg.mask_prob for _ in range(len(s["video"]))], dtype=bool)
            s["ids"], s["noisy_ids"], s["frame_noise"] = ids, noisy, frame_noise
            # the parallel text's own masked copy (its intra-modal term), drawn after the others
            s["pair_noisy_ids"] = None if s["pair_ids"] is None else [
                mask_id if (t not in special and rng.random() < cfg.mask_prob) else t for t in s["pair_ids"]]
        return buf

    buf = []
    for s in src:
        buf.append(s)
        if len(buf) >= chunk:
            yield from flush(buf)
            buf = []
    if buf:
        yield from flush(buf)


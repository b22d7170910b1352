"""A tiny random BERT-like text model and a WordPiece tokenizer trained on test text, saved
with save_pretrained so ``--text-model DIR`` loads it through AutoModel / AutoTokenizer,
the path real hub models take. No weights are downloaded."""
from __future__ import annotations

from pathlib import Path

WORDS = {
    "en": "the cut onion slowly pan oil heat stir add salt water boil pour bowl mix knife board".split(),
    "de": "die schneiden zwiebel langsam pfanne oel hitze ruehren salz wasser kochen giessen schuessel".split(),
    "fr": "le couper oignon lentement poele huile chauffer remuer sel eau bouillir verser bol".split(),
    "zh": "切 洋葱 慢慢 锅 油 加热 搅拌 盐 水 煮 倒 碗".split(),
}

LAYERS = 2  # use --text-output-layer 2 --text-trainable-layers 2 with this model


def build_text_model(directory: Path, texts: list[str] | None = None, **kwargs) -> Path:
    """The package's tiny model, with the test vocabulary always in its tokenizer."""
    from model.tiny import build_text_model as build

    return build(directory, texts, extra_words=tuple(" ".join(w) for w in WORDS.values()), **kwargs)


def _npy(array) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_tar(path: Path, samples: list[tuple[str, dict]]) -> Path:
    """A WebDataset tar: ``samples`` is ``[(key, {member: bytes | str | dict}), ...]``."""
    import io
    import json
    import tarfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for name, value in members.items():
                data = value if isinstance(value, bytes) else (
                    value.encode() if isinstance(value, str) else json.dumps(value).encode())
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def video_id(i: int, prefix: str = "v") -> str:
    return f"{prefix}{i:010d}"[:11].ljust(11, "x")


def pretrain_sample(i: int, seconds: int = 12, r21d: bool = True, s3d: bool = True, dims=(8, 16), seed: int = 0):
    """One pre-training sample: features at one row per second, subtitles in en, de, fr."""
    import numpy as np

    rng = np.random.default_rng(seed * 100_003 + i)
    members = {"meta.json": {"duration": seconds}}
    if r21d:
        members["r21d.npy"] = _npy(rng.normal(size=(seconds, dims[0])).astype(np.float16))
    if s3d:
        members["s3d.npy"] = _npy(rng.normal(size=(seconds, dims[1])).astype(np.float16))
    tracks = {}
    for lang, words in WORDS.items():
        cues = []
        for t in range(0, seconds, 3):
            cue = " ".join(words[(i + t + k) % len(words)] for k in range(4))
            cues.append([t, t + 2.5, cue])
        tracks[lang] = {"kind": "manual", "source_lang": lang, "cues": cues}
    members["subs.json"] = {"video_id": video_id(i), "duration": seconds, "tracks": tracks, "segments": []}
    return video_id(i), members


def caption_sample(i: int, split: str = "train", seconds: int = 6, dims=(8, 16), seed: int = 0, langs=("en", "de")):
    """One downstream sample: features, captions per language and the parallel captions."""
    import numpy as np

    rng = np.random.default_rng(seed * 100_003 + i)
    members = {"meta.json": {"duration": seconds},
               "r21d.npy": _npy(rng.normal(size=(seconds, dims[0])).astype(np.float16)),
               "s3d.npy": _npy(rng.normal(size=(seconds, dims[1])).astype(np.float16))}
    caps = {lang: [" ".join(WORDS[lang][(i + k) % len(WORDS[lang])] for k in range(5))] for lang in langs}
    members["captions.json"] = {"video_id": video_id(i), "split": split, "captions": caps,
                                "parallel": [{lang: caps[lang][0] for lang in langs}]}
    return video_id(i), members

"""Benchmark of mmp-align's per-video work: cleaning 9 tracks and aligning them.

Generates a corpus modelled on real YouTube captions (see ../shared/fixtures/vtt):
English ASR in the rolling layout with inline word times and 10 ms snapshot cues;
the other languages mostly as YouTube's translations of it (rolling, no word times,
as in ``same_video_multilang``), some as ASR in their own language and some manual.
Then it times webvtt-py's bare parse of every file, and our clean + align of the same
files in the same run, and prints cues/s, the ratio (target <= 2.0: cleaning and
alignment cost no more than the parse itself) and the CPU-hours for ~10M tracks. Last,
the same clean + align with each video under mmp-align's default per-video budget
(``pipeline.runtime.budget``: a watchdog thread samples time and memory), and the ratio
of the two (the budget's cost on the normal path; target: within noise of 1.0; four pairs, each side first
in two of them).

    python bench/align.py [--videos 250] [--seed 0]
"""
from __future__ import annotations

import argparse
import random
import sys
import time

from shards.samples import LANGS

VOCAB = {
    "en": "now we add the onion and stir it for two minutes until it gets soft then cut tomato".split(),
    "de": "jetzt geben wir die Zwiebel dazu und rühren zwei Minuten bis sie weich wird dann".split(),
    "fr": "maintenant on ajoute l'oignon et on remue deux minutes jusqu'à ce qu'il soit tendre".split(),
    "ru": "теперь добавляем лук и помешиваем две минуты пока он не станет мягким затем режем".split(),
    "es": "ahora añadimos la cebolla y removemos dos minutos hasta que esté blanda luego cortamos".split(),
    "cs": "teď přidáme cibuli a mícháme dvě minuty dokud nezměkne pak nakrájíme rajče na kousky".split(),
    "sw": "sasa tunaongeza kitunguu na kukoroga kwa dakika mbili mpaka kilainike kisha tukate nyanya".split(),
    "zh": "现在 我们 加入 洋葱 搅拌 两分钟 直到 变软 然后 切 番茄 放进 锅里 再 加 盐".split(),
    "vi": "bây giờ chúng ta cho hành vào và khuấy hai phút cho đến khi mềm rồi cắt cà chua".split(),
}
TOTAL_TRACKS = 10_000_000  # ~1.1M videos x 9 languages


def ts(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def rolling(lines: list, lang: str, times: list, timed: bool) -> str:
    """The rolling layout: previous line repeated, spoken line (with word times when ``timed``), snapshot."""
    out = ["WEBVTT", "Kind: captions", f"Language: {lang}", ""]
    prev = None
    for words, (start, end) in zip(lines, times):
        step = (end - start) / len(words)
        if timed:
            spoken = words[0] + "".join(f"<{ts(start + i * step)}><c> {w}</c>" for i, w in enumerate(words) if i)
        else:
            spoken = " ".join(words)
        out += [f"{ts(start)} --> {ts(end)} align:start position:0%", prev or " ", spoken, ""]
        prev = " ".join(words)
        out += [f"{ts(end)} --> {ts(end + 0.01)} align:start position:0%", prev, " ", ""]
    return "\n".join(out) + "\n"


def manual(lines: list, times: list) -> str:
    out = ["WEBVTT", "Kind: captions", ""]
    for i in range(0, len(lines) - 1, 2):  # a manual cue holds about two ASR lines, as a sentence
        out += [f"{ts(times[i][0])} --> {ts(times[i + 1][1])}", " ".join(lines[i]), " ".join(lines[i + 1]) + "&nbsp;", ""]
    return "\n".join(out) + "\n"


def make_video(rng: random.Random) -> dict:
    """{lang: bytes} for one video of 3-10 minutes, and each track's kind."""
    duration = rng.uniform(180, 600)
    times, t = [], rng.uniform(0, 3)
    while t < duration:
        d = rng.uniform(1.5, 3.5)
        times.append((t, t + d))
        t += d + 0.01 + (rng.uniform(1, 5) if rng.random() < 0.05 else 0.0)
    files, kinds = {}, {}
    for lang in LANGS:
        vocab = VOCAB[lang]
        lines = [[rng.choice(vocab) for _ in range(rng.randint(4, 9))] for _ in times]
        if rng.random() < 0.03:
            lines[0] = ["[Music]"]
        r = rng.random()
        if lang == "en" or r < 0.15:
            files[lang], kinds[lang] = rolling(lines, lang, times, timed=True), "asr"
        elif r < 0.25:
            files[lang], kinds[lang] = manual(lines, times), "manual"
        else:
            files[lang], kinds[lang] = rolling(lines, lang, times, timed=False), "translated"
    return {"files": {l: f.encode() for l, f in files.items()}, "kinds": kinds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=250, help="videos to generate (9 tracks each; default 250)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import webvtt

    from pipeline.subtitles.align import align_tracks
    from pipeline.subtitles.clean import clean_track

    rng = random.Random(args.seed)
    t0 = time.time()
    corpus = [make_video(rng) for _ in range(args.videos)]
    n_files = sum(len(v["files"]) for v in corpus)
    n_bytes = sum(len(b) for v in corpus for b in v["files"].values())
    print(f"corpus: {args.videos} videos, {n_files} files, {n_bytes / 1e6:.1f} MB, 9 languages "
          f"(generated in {time.time() - t0:.1f}s)")

    def bare() -> tuple[float, int]:
        start, cues = time.process_time(), 0
        for video in corpus:
            for data in video["files"].values():
                cues += len(webvtt.from_string(data.decode("utf-8")).captions)
        return time.process_time() - start, cues

    def one_video(video) -> tuple[int, int]:
        tracks, raw, clean = {}, 0, 0
        for lang, data in video["files"].items():
            cues, report = clean_track(data, lang)
            raw += report.raw_cues
            clean += len(cues)
            tracks[lang] = {"kind": video["kinds"][lang], "source_lang": "en", "cues": cues}
        align_tracks(tracks, "en")
        return raw, clean

    def ours(guard=None) -> tuple[float, int, int]:
        start, raw, clean = time.process_time(), 0, 0
        for n, video in enumerate(corpus):
            r, c = one_video(video) if guard is None else guard.run(str(n), budget, one_video, video)
            raw, clean = raw + r, clean + c
        return time.process_time() - start, raw, clean

    from pipeline.runtime.budget import Budget, Guard
    from pipeline.subtitles.stage import AlignConfig

    budget = Budget(AlignConfig.budget_seconds, AlignConfig.budget_memory_mb)

    bare(), ours()  # warm both (imports, regex compilation, allocator) before timing
    t_bare, cues_bare = bare()
    t_ours, raw, clean = ours()
    ratio = t_ours / t_bare
    per_track = t_ours / n_files
    print(f"webvtt-py bare parse : {t_bare:7.2f} CPU-s  {cues_bare / t_bare:10,.0f} cues/s")
    print(f"clean + align (ours) : {t_ours:7.2f} CPU-s  {raw / t_ours:10,.0f} raw cues/s  "
          f"({raw:,} raw cues -> {clean:,} clean cues)")
    print(f"ratio ours / bare    : {ratio:.2f}  (target <= 2.0: {'met' if ratio <= 2.0 else 'NOT met'})")
    print(f"projection           : {per_track * 1000:.2f} CPU-ms per track -> "
          f"{per_track * TOTAL_TRACKS / 3600:.1f} CPU-hours for {TOTAL_TRACKS / 1e6:.0f}M tracks")
    guard = Guard()
    pairs = []
    for n in range(4):  # alternate, each first in turn, so that drift in the machine's speed falls on both alike
        if n % 2:
            guarded, plain = ours(guard)[0], ours()[0]
        else:
            plain, guarded = ours()[0], ours(guard)[0]
        pairs.append(guarded / plain)
    pairs.sort()
    median = (pairs[1] + pairs[2]) / 2
    print(f"budget's cost        : guarded / plain CPU-s = {median:.3f} (median of 4 pairs, "
          f"{pairs[0]:.3f}..{pairs[-1]:.3f}; budget {budget.describe()} per video)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

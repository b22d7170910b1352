"""torchcodec's decoding in a spawned process of its own, for tests that run in the test process itself.

torchcodec loads FFmpeg's shared libraries (Debian's) beside PyAV's and decord's own copies, and
leaves threads behind. After the decoder tests had run torchcodec in the test process, a fork of
it (tests/watchdog.run_bounded's default) got a child stuck in PyAV's demuxer, 3 runs in 3 (forks
of a process that ran many decoding threads still hang now and then, which is why
test_video_bounds forks from a clean server instead). The extraction never forks (its executors
spawn), so only the tests keep torchcodec out of their own process: ``decode_all`` and ``plan_of``
here send torchcodec's work to one spawned helper, started once, and run the others here.
"""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

from features.decode import DecodedVideo, decode_all as _decode_all
from features.video import DecodeError

_POOL: ProcessPoolExecutor | None = None


def _pool() -> ProcessPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    return _POOL


def shutdown() -> None:
    """Stop the helper and its threads in this process (a module using it ends with this: a fork of a process
    with a pool's threads running can inherit a lock one of them held)."""
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=True)
        _POOL = None


def in_helper(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in the spawned helper (``fn`` a module-level function)."""
    return _pool().submit(fn, *args, **kwargs).result()


def decode_all(path, specs, *, decoder: str, **kwargs):
    """features.decode.decode_all, torchcodec's in the helper."""
    if decoder == "torchcodec":
        return in_helper(_decode_all, str(path), list(specs), decoder=decoder, **kwargs)
    return _decode_all(str(path), specs, decoder=decoder, **kwargs)


def _plan_of(path: str, specs, decoder: str):
    video = DecodedVideo(path, specs, decoder=decoder)
    try:
        for _ in video.chunks():
            if video.info is not None:
                break
    except DecodeError as exc:
        return exc.status, None
    return video.info.decoder, video.info


def plan_of(path, specs, decoder: str):
    """(the decoder that ran, its VideoInfo with the plans) or (failure status, None), decoding no further
    than the first chunk."""
    if decoder == "torchcodec":
        return in_helper(_plan_of, str(path), list(specs), decoder)
    return _plan_of(str(path), list(specs), decoder)

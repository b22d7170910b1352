"""The tests' own watchdog holds: a call past its time or memory fails its test, and nothing else."""
import time

import pytest

from tests.watchdog import Exceeded, call_main, run_bounded


def _hog(mb):
    from tests.watchdog import _own_rss

    before = _own_rss()
    blocks = [bytearray(2**20) for _ in range(mb)]
    time.sleep(10)
    return len(blocks), before >> 20, _own_rss() >> 20


def _raise():
    raise ValueError("from the child")


def test_result_and_exceptions_come_back():
    assert run_bounded(sum, [1, 2, 3], seconds=10) == 6
    with pytest.raises(ValueError, match="from the child"):
        run_bounded(_raise, seconds=10)
    assert call_main(lambda argv: print("hi", argv) or 3, ["x"], seconds=10) == (3, "hi ['x']\n", "")


def test_memory_and_time_bounds_stop_the_call():
    started = time.monotonic()
    try:
        # A clean interpreter: a fork of a long test process finds freed memory already resident and
        # can allocate 400 MiB without growing at all.
        got = run_bounded(_hog, 400, seconds=30, memory_mb=200, start="spawn")
    except Exceeded as exc:
        assert "more than 200 MiB" in str(exc)
    else:
        pytest.fail(f"not stopped: (MiB allocated, resident before, after) = {got}")
    with pytest.raises(Exceeded, match="ran past 0.5 s"):
        run_bounded(time.sleep, 30, seconds=0.5)
    assert time.monotonic() - started < 20

"""A --config file is read like any untrusted input: a size cap, no alias expansion, nothing but a file."""
import os

import pytest

from tests.pipeline.runtime.test_cli import _parser
from tests.watchdog import run_bounded


def _above_now(mb: float) -> float:
    """A memory bound ``mb`` above what this process holds now (the watched child is a fork of it)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20 + mb


def laughs(levels: int = 9) -> str:
    """A few hundred bytes of nested anchors that expand to 10**levels strings."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    lines.append(f"crawl: *a{levels}")
    return "\n".join(lines) + "\n"


def parse_exit(argv):
    from pipeline.runtime.cli import parse_args

    try:
        parse_args(_parser(), argv)
    except SystemExit as exc:
        return exc.code
    return None


def test_an_alias_bomb_is_refused_in_one_sentence(tmp_path, capfd):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(laughs())
    assert len(cfg.read_bytes()) < 800
    assert run_bounded(parse_exit, ["--config", str(cfg)], seconds=20, memory_mb=_above_now(300)) == 2
    err = capfd.readouterr().err
    assert "aliases" in err and str(cfg) in err and "Traceback" not in err


def test_an_oversize_or_special_config_is_refused(tmp_path, capfd):
    big = tmp_path / "big.yaml"
    big.write_text("crawl: x\n" + "# padding\n" * 200_000)
    assert run_bounded(parse_exit, ["--config", str(big)], seconds=20, memory_mb=_above_now(300)) == 2
    assert "larger than" in capfd.readouterr().err
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert run_bounded(parse_exit, ["--config", str(fifo)], seconds=20, memory_mb=_above_now(300)) == 2
    assert "not a regular file" in capfd.readouterr().err
    assert run_bounded(parse_exit, ["--config", "/dev/zero"], seconds=20, memory_mb=_above_now(300)) == 2
    assert "not a regular file" in capfd.readouterr().err


def test_an_anchor_without_alias_and_a_normal_config_still_work(tmp_path):
    from pipeline.runtime.cli import parse_args

    cfg = tmp_path / "run.yaml"
    cfg.write_text("crawl: &c D/crawl\nunit-size: 5\n")
    args = parse_args(_parser(), ["--config", str(cfg)])
    assert (args.crawl, args.unit_size) == ("D/crawl", 5)

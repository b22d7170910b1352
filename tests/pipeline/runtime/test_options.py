"""Config dataclasses as flags (pipeline.runtime.cli.option / add_options / from_args): each default is
written once, in the dataclass, and the parser built from it gives exactly those defaults."""
import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from pipeline.runtime.cli import HelpWithDefaults, add_options, field_default, from_args, option


@dataclass
class _Config:
    out: str
    size: int = option(1000, "items per unit", type=int)
    fast: bool = option(False, "go fast")
    adaptive: bool = option(True, "keep it fixed", flags=("--no-adaptive",), group="tuning")
    names: list = option(help="repeatable", default_factory=list, action="append", group="tuning")
    hidden: str = "kept"  # not a flag


def _parser():
    p = argparse.ArgumentParser(prog="mmp-x", formatter_class=HelpWithDefaults)
    p.add_argument("--out", required=True)
    add_options(p, _Config, groups={"tuning": "tuning the run"})
    return p


def test_the_parser_built_from_a_dataclass_gives_its_defaults_and_reads_its_flags():
    cfg = from_args(_Config, _parser().parse_args(["--out", "o"]))
    assert cfg == _Config(out="o")
    cfg = from_args(_Config, _parser().parse_args(["--out", "o", "--size", "5", "--fast", "--no-adaptive",
                                                   "--names", "a", "--names", "b"]), hidden="given")
    assert (cfg.size, cfg.fast, cfg.adaptive, cfg.names, cfg.hidden) == (5, True, False, ["a", "b"], "given")
    assert _Config(out="o").names == [] and _Config(out="o").names is not _Config(out="o").names
    assert field_default(_Config, "size") == 1000 and field_default(_Config, "names") == []


def test_help_shows_the_dataclass_default_in_its_group():
    text = _parser().format_help()
    assert "items per unit (default: 1000)" in text
    options = text.split("\noptions:", 1)[1]
    assert "tuning the run:" in options.split("--no-adaptive")[0] and "--size" in options.split("tuning the run:")[0]
    assert "--hidden" not in text


def test_a_repeated_list_default_is_not_shared_between_parses():
    p = _parser()
    a = p.parse_args(["--out", "o", "--names", "x"])
    b = p.parse_args(["--out", "o"])
    assert a.names == ["x"] and b.names == []


def _option_fields(cls):
    return [f for f in dataclasses.fields(cls) if "cli" in f.metadata]


@pytest.mark.parametrize("name", ["crawl", "align", "train"])
def test_each_stage_config_default_is_the_one_its_flags_give(name, tmp_path):
    """A stage's config built from the bare command line equals the dataclass's own defaults, field by field:
    a default written again in argparse (and drifting) fails here."""
    if name == "crawl":
        from pipeline.crawl.config import CrawlConfig as cls, build_parser
        args = build_parser().parse_args(["--videos", "v.csv", "--out", "o"])
        required = {"videos": "v.csv", "out": "o"}
    elif name == "align":
        from pipeline.subtitles.stage import AlignConfig as cls, build_parser
        args = build_parser().parse_args(["--crawl", "c", "--out", "o"])
        required = {"crawl": "c", "out": "o"}
        assert args.max_track_mb * 2**20 == field_default(cls, "max_track_bytes")
    else:
        from model.trainer.config import TrainConfig as cls
        from model.trainer.flags import build_parser
        args = build_parser().parse_args(["--shards", "s", "--out", "o"])
        required = {"shards": "s", "out": args.out}
        assert args.langs == field_default(cls, "langs")
    assert _option_fields(cls), "the config declares its flags with option()"
    built, plain = from_args(cls, args, **required), cls(**required)
    for f in _option_fields(cls):
        assert getattr(built, f.name) == getattr(plain, f.name), f.name


def test_the_papers_lengths_are_one_table():
    from model.clips import TASK_SETTINGS, ClipConfig
    from model.trainer.evaluate import build_parser as eval_parser
    from model.trainer.flags import build_parser

    assert (ClipConfig().max_text_len, ClipConfig().max_video_len) == TASK_SETTINGS["pretrain"][1:]
    args = eval_parser().parse_args(["--ckpt", "c", "--shards", "s"])
    assert (args.max_text_len, args.max_video_len) == TASK_SETTINGS["finetune"][1:]
    text = " ".join(build_parser().format_help().split())
    assert "default 192 pretrain, 96 finetune" in text and "default 128 pretrain, 36 finetune" in text

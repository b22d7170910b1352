"""What every command line shares: --version, --config FILE (flags override the file) and the main
skeleton (a UserError is one line and exit 2; a bug keeps its traceback)."""
import argparse
import json

import pytest

from pipeline.runtime.cli import add_common_flags, parse_args
from shards.errors import UserError, command
from shards.reader import ShardError
from shards.versions import versions


def _parser():
    p = argparse.ArgumentParser(prog="mmp-x")
    p.add_argument("--crawl", required=True)
    p.add_argument("--unit-size", type=int, default=1000)
    p.add_argument("--langs", default="en,de")
    p.add_argument("--fast", action="store_true")
    p.add_argument("--egress", action="append", default=[])
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    add_common_flags(p)
    return p


def test_config_file_settings_and_flags_over_them(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("crawl: D/crawl\nunit-size: 5\nlangs: [en, fr]\nfast: true\negress: [a, b]\n")
    args = parse_args(_parser(), ["--config", str(cfg), "--unit-size", "7"])
    assert (args.crawl, args.unit_size, args.langs, args.fast, args.egress) == ("D/crawl", 7, "en,fr", True, ["a", "b"])
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"--crawl": "X", "unit_size": 3}))
    args = parse_args(_parser(), ["--config", str(as_json)])
    assert (args.crawl, args.unit_size, args.langs) == ("X", 3, "en,de")
    assert parse_args(_parser(), ["--crawl", "Y"]).unit_size == 1000  # no file: the parser as it is


@pytest.mark.parametrize("text,said", [
    ("crawll: x\n", "unknown setting(s) crawll for mmp-x (it takes: crawl, egress, executor, fast, langs, unit-size)"),
    ("crawl: x\nunit-size: many\n", "unit-size 'many' is not a valid value"),
    ("crawl: x\nexecutor: slurm\n", "executor 'slurm' is not one of ['local', 'ray']"),
    ("crawl: x\nfast: 3\n", "fast is a switch; give true or false"),
    ("- crawl\n", "holds a list, not settings by flag name"),
    ("crawl: [x\n", "not valid YAML"),
])
def test_bad_config_files_are_one_sentence(tmp_path, capsys, text, said):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    with pytest.raises(SystemExit) as exc:
        parse_args(_parser(), ["--config", str(cfg)])
    assert exc.value.code == 2 and said in capsys.readouterr().err


def test_version_names_the_toolkit_and_its_libraries(capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["--version"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.startswith("mmp-x (multi-howto100m) ")
    assert versions()["multi-howto100m"] in out and f"pyarrow {versions()['pyarrow']}" in out


def test_config_file_for_a_subcommand(tmp_path):
    p = argparse.ArgumentParser(prog="mmp-y")
    sub = p.add_subparsers(dest="source", required=True)
    a = sub.add_parser("one")
    a.add_argument("--captions", nargs="+", required=True)
    a.add_argument("--partitions", default="auto")
    sub.add_parser("two").add_argument("--other")
    add_common_flags(p)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("captions: how2_en.json\npartitions: 8\n")
    args = parse_args(p, ["one", "--config", str(cfg)])
    assert args.source == "one" and args.captions == ["how2_en.json"] and args.partitions == "8"


CLIS = ["model.trainer.train", "model.trainer.evaluate", "pipeline.downstream.prepare", "pipeline.release.importer", "pipeline.subtitles.stage",
        "features.extract", "pipeline.stats.stage", "pipeline.crawl.stage", "demo.run"]


@pytest.mark.parametrize("module", CLIS)
def test_every_cli_has_version_config_and_shows_its_defaults(module):
    import importlib

    from pipeline.runtime.cli import HelpWithDefaults, _subcommands

    parser = importlib.import_module(module).build_parser()
    assert any("--version" in a.option_strings for a in parser._actions), module
    for target in _subcommands(parser).values() or [parser]:
        assert any("--config" in a.option_strings for a in target._actions), (module, target.prog)
        assert target.formatter_class is HelpWithDefaults
        formatter = HelpWithDefaults(target.prog)
        for action in target._actions:
            if action.option_strings and action.nargs != 0 and action.default is not None \
                    and action.default is not argparse.SUPPRESS and action.default != []:
                assert "default" in formatter._get_help_string(action).lower(), (target.prog, action.dest)


def test_stage_config_and_feature_meta_record_the_versions(tmp_path):
    pytest.importorskip("torch")
    from tests.features.test_decode import cfr, make_video
    from tests.features.test_extract import run, write_aligned
    from tests.conftest import read_all_samples
    from shards.codec import load_json

    src = tmp_path / "videos"
    src.mkdir()
    make_video(src / "vidVers0001.mkv", cfr(0.5))
    write_aligned(tmp_path / "aligned", [[("vidVers0001", 0.5)]])
    assert run(tmp_path / "aligned", src, tmp_path / "mmp", "--backbones", "r21d", "--random-weights") == 0
    config = json.loads((tmp_path / "mmp" / "config.json").read_text())
    assert config["versions"]["multi-howto100m"] == versions()["multi-howto100m"]
    assert config["versions"]["pyarrow"] == versions()["pyarrow"]
    meta = load_json(read_all_samples(tmp_path / "mmp")["vidVers0001"]["meta.json"])
    assert meta["versions"]["torch"] == versions()["torch"] and "yt-dlp" not in meta["versions"]


def test_verify_has_version(capsys):
    from shards.verify import main as verify_main

    with pytest.raises(SystemExit) as exc:
        verify_main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("mmp-verify (multi-howto100m) ")


def test_an_earlier_flag_name_still_works_with_a_note(capsys):
    from model.trainer.train import build_parser

    args = build_parser().parse_args(["--shards", "s", "--out", "o", "--workers", "3"])
    assert args.loader_workers == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers is now spelled --loader-workers" in err
    assert build_parser().parse_args(["--shards", "s", "--out", "o", "--loader-workers", "1"]).loader_workers == 1
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- the main skeleton


class Misfit(UserError):
    """A user-fixable error of some command."""


@command("mmp-x")
def _main(argv=None) -> int:
    what = argv[0]
    if what == "misfit":
        raise Misfit("--x 3 does not fit; give 1 or 2")
    if what == "shard":
        raise ShardError("d/crawl-000001.tar is truncated")
    if what == "bug":
        raise KeyError("row")
    if what == "interrupted":
        raise SystemExit(130)
    return int(what)


def test_command_prints_a_user_error_as_one_line_and_returns_2(capsys):
    assert _main(["0"]) == 0 and _main(["1"]) == 1
    assert capsys.readouterr().err == ""
    assert _main(["misfit"]) == 2
    assert capsys.readouterr().err == "mmp-x: error: --x 3 does not fit; give 1 or 2\n"
    assert _main(["shard"]) == 2  # an error class of another module, derived from the one base
    assert capsys.readouterr().err == "mmp-x: error: d/crawl-000001.tar is truncated\n"


def test_command_lets_a_bug_and_an_exit_through(capsys):
    with pytest.raises(KeyError, match="row"):
        _main(["bug"])
    with pytest.raises(SystemExit) as exc:
        _main(["interrupted"])
    assert exc.value.code == 130 and capsys.readouterr().err == ""


PROGS = {"model.trainer.train": "mmp-train", "model.trainer.evaluate": "mmp-eval",
         "pipeline.downstream.prepare": "mmp-prepare", "pipeline.release.importer": "mmp-import",
         "pipeline.subtitles.stage": "mmp-align", "features.extract": "mmp-extract-features",
         "pipeline.stats.stage": "mmp-stats", "pipeline.crawl.stage": "mmp-crawl", "demo.run": "mmp-demo"}


@pytest.mark.parametrize("module", CLIS)
def test_every_cli_main_turns_any_user_error_into_one_line(module, monkeypatch, capsys):
    import importlib

    cli = importlib.import_module(module)

    def misfit(parser, argv=None):
        raise Misfit(f"{parser.prog} cannot use this")

    monkeypatch.setattr(cli, "parse_args", misfit)
    assert cli.main([]) == 2
    prog = PROGS[module]
    assert capsys.readouterr().err == f"{prog}: error: {prog} cannot use this\n"


USER_ERRORS = ["model.trainer.run_setup:ConfigError", "model.trainer.data:DataError", "pipeline.runtime.hub:TextModelError",
               "model.checkpoint:CheckpointError", "features.weights:WeightsError", "model.mmp:S3DFcError",
               "model.row_times:RowTimesError", "shards.reader:ShardError", "shards.layout:DamagedUnit",
               "pipeline.crawl.access:CookieFileError", "pipeline.crawl.access:ProxyError",
               "pipeline.crawl.ytdlp_env:JsRuntimeError", "pipeline.crawl.ytdlp_env:ExtractorArgsError",
               "pipeline.release.captions:ReleaseError"]


@pytest.mark.parametrize("where", USER_ERRORS)
def test_every_user_fixable_error_derives_from_the_one_base(where):
    import importlib

    module, name = where.split(":")
    assert issubclass(getattr(importlib.import_module(module), name), UserError)


def test_comma_lists_are_read_one_way():
    from pipeline.runtime.cli import comma_list

    assert comma_list("a, b", "c,", None, " ,") == ["a", "b", "c"]
    assert comma_list("") == [] and comma_list() == []


def test_mmp_verify_turns_a_user_error_into_one_line(monkeypatch, capsys, tmp_path):
    import shards.verify as verify

    def damaged(directory, deep=True):
        raise ShardError(f"{directory} cannot be read")

    monkeypatch.setattr(verify, "verify_dir", damaged)
    assert verify.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"mmp-verify: error: {tmp_path} cannot be read\n"


def test_a_user_error_is_caught_in_one_place():
    """Only the main skeleton (shards.errors.command) catches UserError; --langs turns it into argparse's error."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    handler = re.compile(r"^\s*except\b[^:\n]*\bUserError\b", re.M)
    catching = sorted(str(p.relative_to(root)) for pkg in ("shards", "pipeline", "features", "model", "demo")
                      for p in (root / pkg).rglob("*.py") if handler.search(p.read_text(encoding="utf-8")))
    assert catching == ["pipeline/runtime/langs.py", "shards/errors.py"]

"""``--langs`` in every command: one comma-separated list, the same check, the old space-separated
spelling read with a one-line note, a ``--config`` list, and a default its ``--help`` names."""
import json

import pytest

from model import clips

from model.trainer import evaluate

from pipeline.downstream import prepare

from model.trainer import train
from pipeline.subtitles import stage as align_stage
from pipeline.crawl import config as crawl_config
from pipeline.release import importer
from demo import sample
from pipeline.runtime.cli import parse_args
from shards.samples import LANGS as MULTI_HT100M_LANGS

# command: (its parser, the arguments it needs besides --langs)
COMMANDS = {
    "mmp-crawl": (crawl_config.build_parser, []),
    "mmp-align": (align_stage.build_parser, ["--crawl", "C", "--out", "O"]),
    "mmp-import": (importer.build_parser, ["multi-ht100m", "--captions", "C", "--out", "O"]),
    "mmp-prepare": (prepare.build_parser, ["multi30k", "ROOT", "--out", "O"]),
    "mmp-train": (train.build_parser, ["--shards", "S", "--out", "O"]),
    "mmp-eval": (evaluate.build_parser, ["--shards", "S", "--ckpt", "C"]),
}
NOTE = "note: --langs takes one comma-separated list; read 'en de' as 'en,de'"


def _parse(command, *extra):
    build, needed = COMMANDS[command]
    return parse_args(build(), [*needed, *extra])


def _codes(value):
    """The base codes of a parsed --langs (the crawl's value is (languages, variants))."""
    return value[0] if isinstance(value, tuple) else value


def _error(capsys, command, *extra) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        _parse(command, *extra)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_code_is_one_sentence_naming_it(command, capsys):
    line = _error(capsys, command, "--langs", "klingon")
    assert "'klingon' is not a YouTube caption language code" in line and line.startswith(f"{command}")


@pytest.mark.parametrize("command", ["mmp-align", "mmp-train", "mmp-prepare"])
def test_a_typo_gets_the_crawls_suggestion_everywhere(command, capsys):
    assert "did you mean 'de'?" in _error(capsys, command, "--langs", "en,deu")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_empty_list_is_refused(command, capsys):
    assert "needs at least one language code" in _error(capsys, command, "--langs", ",")


@pytest.mark.parametrize("command", COMMANDS)
def test_the_old_space_separated_spelling_is_one_list_with_one_note(command, capsys):
    capsys.readouterr()
    comma = _codes(_parse(command, "--langs", "en,de").langs)
    assert capsys.readouterr().err == ""
    spaced = _codes(_parse(command, "--langs", "en", "de").langs)
    err = capsys.readouterr().err.splitlines()
    assert spaced == comma == ["en", "de"]
    assert len(err) == 1 and err[0].endswith(NOTE) and err[0].startswith(command)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "mmp-crawl"])
def test_later_stages_get_plain_base_codes_without_repeats(command):
    assert _parse(command, "--langs", "en,zh-Hans,en,pt-BR").langs == ["en", "zh", "pt"]


def test_the_crawl_keeps_its_languages_and_variants():
    assert _parse("mmp-crawl", "--langs", "en,zh-Hans").langs == (["en", "zh"], {"zh": "zh-Hans"})
    assert _parse("mmp-crawl", "--langs", "en", "zh-Hans").langs == (["en", "zh"], {"zh": "zh-Hans"})


def test_two_words_that_clash_are_caught_as_in_one_list(capsys):
    line = _error(capsys, "mmp-crawl", "--langs", "zh-Hans", "zh-Hant")
    assert "asks for zh twice, as 'zh-Hans' and 'zh-Hant'" in line


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("written", ["langs: [en, de]\n", "langs: en,de\n", '{"langs": ["en", "de"]}'])
def test_a_config_file_gives_langs_as_a_list_or_as_comma_text(command, written, tmp_path, capsys):
    config = tmp_path / ("run.json" if written.startswith("{") else "run.yaml")
    config.write_text(written)
    assert _codes(_parse(command, "--config", str(config)).langs) == ["en", "de"]
    assert _codes(_parse(command, "--config", str(config), "--langs", "fr").langs) == ["fr"]  # the flag wins
    assert "note:" not in capsys.readouterr().err


@pytest.mark.parametrize("written, message", [("langs: [en, klingon]\n", "'klingon' is not a YouTube caption"),
                                              ("langs: []\n", "needs at least one language code")])
@pytest.mark.parametrize("command", ["mmp-align", "mmp-train", "mmp-crawl"])
def test_a_config_file_with_a_bad_list_is_one_sentence(command, written, message, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(written)
    assert message in _error(capsys, command, "--config", str(config))


def _langs_help(command, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no word broken at a hyphen
    build, needed = COMMANDS[command]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        build().parse_args(needed[:1] + ["--help"] if needed and not needed[0].startswith("-") else ["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    entry = text[text.index("\n  --langs"):]
    return " ".join(entry[:entry.index("\n  -", 1)].split())


@pytest.mark.parametrize("command, default", [
    ("mmp-crawl", "(default: en,de,fr,ru,es,cs,sw,zh,vi)"),
    ("mmp-align", "(default: the languages the crawl was run with, from its config.json; else "
                  "en,de,fr,ru,es,cs,sw,zh,vi)"),
    ("mmp-import", "(default: en,de,fr,cs,sw,ru,vi,es,zh)"),
    ("mmp-prepare", "(default: en,de,fr,cs)"),
    ("mmp-train", "(default: en,de,fr,ru,es,cs,sw,zh,vi)"),
    ("mmp-eval", "(default: en,de,fr,ru,es,cs,sw,zh,vi)"),
])
def test_help_names_the_default_and_the_syntax(command, default, capsys, monkeypatch):
    entry = _langs_help(command, capsys, monkeypatch)
    assert default in entry and "one comma-separated list" in entry


@pytest.mark.parametrize("command, default", [
    ("mmp-crawl", list(MULTI_HT100M_LANGS)), ("mmp-import", ["en", "de", "fr", "cs", "sw", "ru", "vi", "es", "zh"]),
    ("mmp-prepare", ["en", "de", "fr", "cs"]), ("mmp-train", list(MULTI_HT100M_LANGS)),
    ("mmp-eval", list(MULTI_HT100M_LANGS))])
def test_each_stage_keeps_its_default(command, default):
    assert _codes(_parse(command).langs) == default


def test_align_without_langs_takes_the_crawls_own_languages(tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    args = _parse("mmp-align")
    assert args.langs is None and align_stage.crawl_langs(crawl) is None  # no config.json: the 9
    (crawl / "config.json").write_text(json.dumps({"config": {"langs": ["de", "sw"]}}))
    assert align_stage.crawl_langs(crawl) == ["de", "sw"]


def test_the_nine_languages_are_defined_once():
    assert align_stage.DEFAULT_LANGS is clips.LANGS is sample.LANGS is crawl_config.DEFAULT_LANGS \
        is MULTI_HT100M_LANGS


@pytest.mark.parametrize("saved", ["en,de", ["en", "de"]])
def test_a_resume_reads_the_runs_langs_as_a_list_old_comma_text_too(saved, tmp_path):
    pytest.importorskip("torch")
    from model.trainer.run_dir import check_run_dir, given_flags
    from model.trainer.run_setup import ConfigError

    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps({"task": "pretrain", "langs": saved}))
    parser = train.build_parser()

    def resume(*extra):
        argv = ["--shards", "S", "--out", str(run), "--resume", *extra]
        args = parse_args(parser, argv)
        check_run_dir(args, given_flags(parser, argv))
        return args

    assert resume().langs == ["en", "de"]
    assert resume("--langs", "en,de").langs == ["en", "de"]
    with pytest.raises(ConfigError, match=r"--langs en \(the run's: en,de\)"):
        resume("--langs", "en")

"""bench/zero_shot_synthetic.py: the whole path (corpus -> tiny text model -> mmp-train -> mmp-eval ->
table) in a tiny configuration, every row and control wired as the table says, the table's
arithmetic, and bad settings. The effect itself (MMP above MP and no pre-training) needs
minutes of training and is the benchmark's to show, not a test's to assume."""
import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

from bench.synthetic_words import LANGS

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("zero_shot_synthetic", ROOT / "bench" / "zero_shot_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


zs = _load()
TINY_CORPUS = dict(pretrain_videos=24, finetune_videos=12, eval_videos=10, videos_per_unit=12)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    cfg = zs.BenchConfig(seeds=(3,), pretrain_steps=3, finetune_steps=2, batch_size=4, d_model=16, heads=2,
                         head_layers=1, text_hidden=16, vocab_size=800, corpus=TINY_CORPUS)
    work = tmp_path_factory.mktemp("zs")
    return zs.run_benchmark(work, cfg, progress=False), work


def test_tiny_run_gives_a_complete_table(tiny_result):
    result, work = tiny_result
    columns = list(LANGS) + [zs.NON_EN]
    assert result["langs"] == list(LANGS) and result["columns"] == columns and result["videos"] == 10
    assert set(result["table"]) == {arm for arm, *_ in zs.ARMS}
    for arm, cells in result["table"].items():
        assert list(cells) == columns
        for cell in cells.values():
            assert 0.0 <= cell["mean"] <= 1.0 and cell["std"] == 0.0 and len(cell["values"]) == 1
        non_en = statistics.fmean(cells[lang]["mean"] for lang in LANGS if lang != "en")
        assert math.isclose(cells[zs.NON_EN]["mean"], non_en)
    runs = result["runs"]["3"]
    for arm, _, pre, finetuned in zs.ARMS:
        run = runs[arm]
        assert set(run["R@1"]) == set(LANGS) and all(n == 10 for n in run["queries"].values())
        assert run["pretrain"] == pre and run["finetuned"] == finetuned
        assert (work / "seed3" / "runs" / arm / "finetune" / "summary.json").exists() == finetuned
        assert ("finetune_final" in run) == finetuned and ("pretrain_final" in run) == (pre is not None)
        if finetuned:
            assert run["finetune_final"].get("xling", 0.0) == 0.0  # English captions only: no parallel pair
    # each pre-training runs once; its no-fine-tuning row scores that very checkpoint
    assert "pretrain" in runs["mmp"]["seconds"] and "pretrain" not in runs["mmp_noft"]["seconds"]
    assert runs["mmp_noft"]["pretrain_final"] == runs["mmp"]["pretrain_final"]
    # the arms differ in what they were pre-trained on, and only MMP + xling trained the cross-lingual term
    assert "xling" in runs["mmp_xling"]["pretrain_final"]
    assert "xling" not in runs["mmp"]["pretrain_final"] and "xling" not in runs["mp"]["pretrain_final"]
    assert -1.0 <= result["effect"]["mmp_minus_best_other"] <= 1.0
    assert -1.0 <= result["effect"]["finetune_gain"] <= 1.0
    json.dumps(result)  # the JSON the CLI writes

    text = zs.format_table(result)
    for _, label, *_ in zs.ARMS:
        assert label in text
    assert all(c in text.splitlines()[1] for c in columns)


def test_summary_means_and_sample_std_over_seeds():
    langs = ["en", "de", "fr"]
    per_seed = {s: {arm: {"R@1": {"en": 0.9, "de": 0.1 * (s + 1), "fr": 0.3}} for arm, *_ in zs.ARMS}
                for s in (0, 1)}
    table = zs.summarise(per_seed, langs)
    de = table["mmp"]["de"]
    assert math.isclose(de["mean"], 0.15) and math.isclose(de["std"], math.sqrt(0.005)) and de["values"] == [0.1, 0.2]
    non_en = table["none"][zs.NON_EN]
    assert non_en["values"] == pytest.approx([0.2, 0.25]) and math.isclose(non_en["mean"], 0.225)
    assert table["mp"]["en"]["std"] == 0.0


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0,x"], "--seeds must be comma-separated integers"),
    (["--pretrain-steps", "0"], "--pretrain-steps must be at least 1"),
    (["--d-model", "30", "--heads", "4"], "must be divisible by --heads"),
    (["--seeds", ","], "give at least one seed"),
])
def test_bad_settings_are_one_clear_error(argv, message, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert zs.main(argv + ["--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("zero_shot_synthetic: error:") and not out.exists()


def test_quick_flag_sets_a_short_run_and_explicit_flags_win():
    args = zs.build_parser().parse_args(["--quick"])
    cfg = zs.config_from_args(args)
    assert cfg.seeds == (0,) and cfg.pretrain_steps == zs.QUICK["pretrain_steps"]
    cfg = zs.config_from_args(zs.build_parser().parse_args(["--quick", "--seeds", "4,5", "--finetune-steps", "7"]))
    assert cfg.seeds == (4, 5) and cfg.finetune_steps == 7 and cfg.pretrain_steps == zs.QUICK["pretrain_steps"]
    assert zs.config_from_args(zs.build_parser().parse_args([])).seeds == (0, 1, 2)

"""mmp-train's run directory: a run is refused a second start, a resume keeps the run's settings,
paths are stored absolute, bad numbers are one sentence, and SIGINT / SIGTERM stop at a checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
pytest.importorskip("transformers")

from model.trainer.train import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--d-model", "32", "--text-output-layer", "2", "--text-trainable-layers", "2", "--loader-workers", "0",
        "--no-progress", "--log-every", "1"]


def _base(shards, run, text_dir):
    return ["--shards", str(shards / "mmp-*.tar"), "--out", str(run), "--text-model", str(text_dir)] + TINY


def _error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _config(run: Path) -> dict:
    return json.loads((run / "run_config.json").read_text())


def test_a_run_directory_is_not_started_twice(tmp_path, text_dir, pretrain_shards, capsys):
    run = tmp_path / "run"
    argv = _base(pretrain_shards, run, text_dir) + ["--steps", "2", "--batch-size", "2", "--keep", "1"]
    assert main(argv) == 0
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    err = _error(argv, capsys)
    assert "holds a run (checkpoints up to step 2)" in err and "--resume" in err
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()} == before  # nothing touched
    (tmp_path / "file").write_text("x")
    assert "is a file" in _error(_base(pretrain_shards, tmp_path / "file", text_dir) + ["--steps", "1"], capsys)


def test_resume_keeps_the_runs_settings_and_refuses_other_ones(tmp_path, text_dir, pretrain_shards, capsys):
    run = tmp_path / "run"
    base = _base(pretrain_shards, run, text_dir)
    assert main(base + ["--steps", "2", "--batch-size", "2", "--losses", "inter", "--lr", "1e-3"]) == 0
    # the same run, flags left out: its batch, losses and rate continue (not the defaults 64, inter+intra, 2e-4)
    assert main(base + ["--steps", "3", "--resume"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_batch"] == 2 and summary["started_at_step"] == 2 and summary["steps"] == 3
    cfg = _config(run)
    assert cfg["batch_size"] == 2 and cfg["losses"] == ["inter"] and cfg["lr"] == 1e-3
    assert "intra" not in json.loads((run / "train_log.jsonl").read_text().splitlines()[-1])
    # the same values given again are fine; other values are refused, naming both
    assert main(base + ["--steps", "4", "--resume", "--batch-size", "2", "--losses", "inter"]) == 0
    err = _error(base + ["--steps", "5", "--resume", "--batch-size", "4", "--losses", "inter,intra"], capsys)
    assert "--batch-size 4 (the run's: 2)" in err and "--losses inter,intra (the run's: inter)" in err
    assert "--max-video-len 9 (the run's: 128)" in _error(base + ["--resume", "--max-video-len", "9"], capsys)
    # without --steps a resume keeps the run's length: a finished run trains nothing and keeps its summary
    before = (run / "summary.json").read_text()
    capsys.readouterr()
    assert main(base + ["--resume"]) == 0
    assert "is complete at step 4" in capsys.readouterr().out
    assert (run / "summary.json").read_text() == before


def test_paths_are_stored_absolute(tmp_path, text_dir, pretrain_shards, monkeypatch):
    from model.checkpoint import load_checkpoint

    monkeypatch.chdir(text_dir.parent)
    rel = os.path.relpath(text_dir, text_dir.parent)
    assert main(["--shards", str(pretrain_shards / "mmp-*.tar"), "--out", os.path.relpath(tmp_path / "run"),
                 "--text-model", rel, "--steps", "1", "--batch-size", "2"] + TINY) == 0
    cfg = _config(tmp_path / "run")
    assert cfg["out"] == str(tmp_path / "run") and cfg["text_model"] == str(text_dir)
    assert json.loads(load_checkpoint(tmp_path / "run")["model_config"])["text_model"] == str(text_dir)


@pytest.mark.parametrize("flag,value,said", [
    ("--batch-size", "-4", "--batch-size must be at least 1, got -4"),
    ("--batch-size", "0", "--batch-size must be at least 1, got 0"),
    ("--lr", "0", "--lr must be more than 0"),
    ("--loader-workers", "-1", "--loader-workers must be at least 0"),
    ("--mask-prob", "1.5", "--mask-prob must be below 1"),
    ("--keep", "-2", "--keep must be at least 0"),
])
def test_bad_numbers_are_one_sentence(tmp_path, text_dir, pretrain_shards, capsys, flag, value, said):
    err = _error(_base(pretrain_shards, tmp_path / "run", text_dir) + ["--steps", "1", flag, value], capsys)
    assert said in err and not (tmp_path / "run").exists()


def _wait_for_step(run: Path, proc, step: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        log = run / "train_log.jsonl"
        if log.exists() and sum(1 for _ in log.open()) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"the trainer did not reach step {step} (rc {proc.poll()})")


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_writes_a_checkpoint_and_resume_continues(tmp_path, text_dir, pretrain_shards, signum, code):
    from model.checkpoint import list_checkpoints, load_checkpoint

    run = tmp_path / "run"
    argv = _base(pretrain_shards, run, text_dir) + ["--steps", "100000", "--batch-size", "2", "--ckpt-every",
                                                    "100000"]
    argv[argv.index("--loader-workers") + 1] = "1"  # a loader worker gets the signal too, as from a terminal
    proc = subprocess.Popen([sys.executable, "-m", "model.trainer.train"] + argv, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _wait_for_step(run, proc, 3)
        os.killpg(proc.pid, signum)  # the whole process group, as Ctrl-C or Slurm's scancel does
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "interrupted at step" in out and "--resume" in out
    found = list_checkpoints(run)
    assert len(found) == 1  # no --ckpt-every step was reached: this is the stop's checkpoint
    stopped = found[-1][0]
    logged = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert stopped == logged[-1] >= 3  # every step trained is in the checkpoint
    assert not (run / "summary.json").exists()
    argv[argv.index("--loader-workers") + 1], argv[argv.index("--steps") + 1] = "0", str(stopped + 1)
    assert main(argv + ["--resume"]) == 0
    assert load_checkpoint(run)["step"] == stopped + 1


def test_a_config_file_sets_the_run_and_counts_as_given_on_resume(tmp_path, text_dir, pretrain_shards, capsys):
    run = tmp_path / "run"
    cfg = tmp_path / "run.yaml"
    cfg.write_text("batch-size: 2\nlosses: [inter]\nsteps: 2\n")
    base = _base(pretrain_shards, run, text_dir) + ["--config", str(cfg)]
    assert main(base) == 0
    assert _config(run)["batch_size"] == 2 and _config(run)["losses"] == ["inter"]
    cfg.write_text("batch-size: 4\nsteps: 3\n")  # the file now says otherwise: refused like the flag
    assert "--batch-size 4 (the run's: 2)" in _error(base + ["--resume"], capsys)


def test_member_size_caps_are_a_flag(tmp_path, text_dir, pretrain_shards, capsys):
    """--max-member-mb: a cap below every sample's feature member leaves nothing to train on,
    and the count says why; a malformed cap is one sentence."""
    base = _base(pretrain_shards, tmp_path / "run", text_dir) + ["--steps", "1", "--batch-size", "2"]
    assert "--max-member-mb: member size limit 'npy=big'" in _error(base + ["--max-member-mb", "npy=big"], capsys)
    err = _error(base[:3] + [str(tmp_path / "run2")] + base[4:] + ["--max-member-mb", "npy=0.000001"], capsys)
    assert "no sample" in err

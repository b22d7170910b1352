import json
import os
from pathlib import Path

import pytest

from demo.sample import build_sample
from demo.server import SampleServer

REAL_FIXTURES = os.environ.get("MMP_REAL_FIXTURES")


def real_fixtures() -> Path:
    """The shared real files, or skip: tests over them run when MMP_REAL_FIXTURES is set (CI sets it)."""
    if not REAL_FIXTURES or not Path(REAL_FIXTURES).is_dir():
        pytest.skip("MMP_REAL_FIXTURES not set")
    return Path(REAL_FIXTURES)


class Sample:
    def __init__(self, root: Path, server: SampleServer, summary: dict):
        self.root, self.server, self.summary = root, server, summary
        self.videos = Path(summary["list"])
        self.info = Path(summary["info_json"])
        self.files = Path(summary["files"])

    def many_videos(self, n: int, prefix: str) -> tuple[list[str], Path]:
        """``n`` more videos, copies of the pancake video's info JSON under ids ``PREFIX0000000``...,
        and a list file of them."""
        base = json.loads((self.info / "smplPancak1.info.json").read_text())
        ids = [f"{prefix}{i:07d}" for i in range(n)]
        for vid in ids:
            (self.info / f"{vid}.info.json").write_text(json.dumps(dict(base, id=vid)))
        path = self.root / "many.txt"
        path.write_text("\n".join(ids) + "\n")
        return ids, path

    def crawl_args(self, out: Path, *extra: str) -> list[str]:
        """A crawl of the sample into the dataset ``out`` (a path or a URL): its crawl goes to ``out/crawl``."""
        from shards.storage import as_path

        return ["--videos", str(self.videos), "--out", str(as_path(out) / "crawl"), "--info-json", str(self.info),
                "--budget-dir", str(self.root / "budget"), "--retries", "2", "--backoff-base", "0.05",
                "--backoff-max", "1.5", "--socket-timeout", "1", "--workers", "1", "--no-progress",
                "--no-request-limit", "--sleep-subtitles", "0", "--allow-host", self.host, *extra]

    @property
    def host(self) -> str:
        """The stand-in's host:port, which a crawl reaches only when allowed by name (it is loopback)."""
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture
def sample(tmp_path):
    root = tmp_path / "sample"
    root.mkdir()
    server = SampleServer(root / "files").start()
    try:
        summary = build_sample(root, server.base_url, videos=False)
        yield Sample(root, server, summary)
    finally:
        server.stop()


@pytest.fixture
def sample_with_videos(tmp_path):
    pytest.importorskip("av")
    root = tmp_path / "sample"
    root.mkdir()
    server = SampleServer(root / "files").start()
    try:
        yield Sample(root, server, build_sample(root, server.base_url, videos=True))
    finally:
        server.stop()


def read_all_rows(directory: Path) -> list[dict]:
    from shards.reader import read_rows

    rows = []
    for p in sorted(Path(directory).glob("*.parquet")):
        rows += read_rows(p)
    return rows


def read_all_samples(directory: Path) -> dict:
    from shards.reader import iter_samples

    out = {}
    for p in sorted(Path(directory).glob("*.tar")):
        for s in iter_samples(p):
            out[s["__key__"]] = s
    return out


def assert_final_files_whole(directory) -> None:
    """After a kill: every unit file under its final name is whole. A unit caught between its
    renames (tar or parquet in place, stats.json, the completion mark, not yet) is incomplete,
    never partial: its files still read to the end, and a re-run redoes it."""
    import tarfile

    import pyarrow.parquet as pq

    for p in Path(directory).iterdir():
        if p.suffix not in (".tar", ".parquet") or p.name.startswith("."):
            continue
        if (p.parent / (p.name.rsplit(".", 1)[0] + ".stats.json")).exists():
            continue
        if p.suffix == ".tar":
            with tarfile.open(p) as tar:
                assert tar.getmembers(), f"{p.name}: an empty tar under a final name"
        else:
            pq.read_table(p)


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    """The tiny text model with the test vocabulary (tests/textmodel.py), once per test module."""
    from tests.textmodel import build_text_model

    return build_text_model(tmp_path_factory.mktemp("textmodel"))


@pytest.fixture(scope="module")
def pretrain_shards(tmp_path_factory):
    """Two pre-training shards of four usable samples each: an epoch is 8 samples."""
    from tests.textmodel import pretrain_sample, write_tar

    d = tmp_path_factory.mktemp("mmp")
    for s in range(2):
        write_tar(d / f"mmp-{s:06d}.tar", [pretrain_sample(s * 10 + i) for i in range(4)])
    return d

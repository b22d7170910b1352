"""``mmp-crawl``: fetch YouTube subtitles in many languages (and optionally the video) with yt-dlp.

One ``extract_info`` per video serves every language (or a saved info JSON with
``--info-json``); one track is chosen per language (``tracks.select_tracks``) and
fetched as WebVTT, each through the machine's shared request budget. A unit of
~1,000 videos becomes ``crawl-000123.{tar,parquet,stats.json}``: a sample per
video whose metadata was read (``info.json`` plus ``<lang>.vtt`` per track
found), a parquet row per input video whatever became of it. The per-video work is
``pipeline.crawl.video``; the checks run before a crawl, ``pipeline.crawl.checks``;
the flags, ``pipeline.crawl.config``. Every URL an info dict names is checked by
``pipeline.crawl.url_policy`` before it is requested, and each process's scratch (its copy
of the cookies included) lives in the output's private work area, ``OUT/.work``.
``--out`` is the crawl directory itself (``DATA/crawl``); an earlier run's ``--out DATA`` resumes
in ``DATA/crawl`` (``pipeline.runtime.out_dir``). Everything a run writes there, ``--retry-failed``'s
reopening of units included, happens under the output's run lock.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from shards.errors import UserError, command
from shards.layout import CRAWL, UnitFiles, completed_units
from shards.storage import RemotePath, as_path, staging_dir, staging_name
from shards.reader import UNREADABLE_PARQUET, ShardError, read_rows, read_unit
from shards.rows import crawl_schema, lang_column
from shards.samples import is_track_member
from shards.writer import UnitWriter, atomic_write_json, sha256_file

from pipeline.crawl.fetch import Fetcher, RetryPolicy
from pipeline.runtime.runlock import pid_alive
from pipeline.crawl.politeness import CrawlHalted
from pipeline.crawl.ray_budget import RayRequestBudget
from pipeline.crawl.sessions import ANONYMOUS, KINDS, DeferringBudget, SessionKey, account_of, session_budgets
from pipeline.crawl.sources import InfoJsonSource, YtdlpSource, download_video
from pipeline.runtime.cli import executor_options, parse_args
from pipeline.runtime.out_dir import stage_out
from pipeline.runtime.stage import Stage, Unit, check_config, lock_output, prepare_output, print_summary, run_stage
from pipeline.crawl.checks import check_main, js_runtime_ready, preflight
from pipeline.crawl.hints import deferred_hint, refused_hint, video_hint
from pipeline.crawl.config import CrawlConfig, build_parser, config_from_args
from pipeline.crawl.video import crawl_video, held_from, lacks_video, needs_retry
from pipeline.crawl.url_policy import UrlPolicy
from pipeline.crawl.videolist import dedupe, read_video_list

log = logging.getLogger("mmp.crawl")

# ---------------------------------------------------------------- the private work area

def work_area(cfg: CrawlConfig) -> Path:
    """Where the crawl's processes keep their scratch (cookie copies, videos being fetched).

    A hidden directory of the output (``OUT/.work``), not the shared temp folder, so
    that a copy of the user's cookies never outlives the crawl there, even after a
    SIGKILL: the next run clears it. A remote output's is a local directory named after it.
    """
    out = as_path(cfg.out)
    if isinstance(out, RemotePath):
        return staging_dir() / f"crawl-work-{staging_name(out)}"
    return out / ".work"


def start_run_dir(cfg: CrawlConfig) -> Path:
    """This run's own directory in the work area (``HOST@PID``, mode 0700), after removing
    what runs killed on this host left. Other live runs on the same output (``--rank``
    slices) keep theirs."""
    root = work_area(cfg)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    host = socket.gethostname()
    for old in root.iterdir():
        name, _, pid = old.name.rpartition("@")
        if name == host and not (pid.isdigit() and pid_alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    run = root / f"{host}@{os.getpid()}"
    run.mkdir(mode=0o700, exist_ok=True)
    return run


def end_run_dir(run: Path) -> None:
    shutil.rmtree(run, ignore_errors=True)
    try:
        run.parent.rmdir()  # the work area goes too when no other run uses it
    except OSError:
        pass


def private_scratch(run_dir: Path) -> Path:
    """A directory of this process's own in the run's directory, removed when the process exits."""
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=run_dir))
    atexit.register(shutil.rmtree, scratch, True)
    return scratch


def private_copy(src: str, target: Path) -> str:
    """Copy ``src`` to ``target``, readable by the owner only from the moment it exists."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as dst, open(src, "rb") as f:
        shutil.copyfileobj(f, dst)
    return str(target)


class CrawlContext:
    """Per-process resources: the budget, the fetcher, the info source, a scratch directory."""

    def __init__(self, cfg: CrawlConfig, egress: str | None = None, run_dir: Path | None = None, warn=None):
        self.cfg, self.warn = cfg, warn  # warn: the stage's report_warning, for yt-dlp's warnings
        self.budgets = session_budgets(cfg, egress)
        self.budget = self.budgets.own
        self.scratch = private_scratch(run_dir or work_area(cfg) / f"{socket.gethostname()}@{os.getpid()}")
        # yt-dlp writes cookies back to its file: give each process a private copy.
        cookie_copy = private_copy(cfg.cookies, self.scratch / "cookies.txt") if cfg.cookies else None
        self.url_policy = UrlPolicy.allowing(cfg.allow_hosts)
        self.fetcher = Fetcher(self.budget, timeout=cfg.socket_timeout, request_timeout=cfg.request_timeout,
                               policy=RetryPolicy(cfg.retries, cfg.backoff_base, cfg.backoff_max),
                               proxies=cfg.proxies, cookies=cookie_copy, url_policy=self.url_policy,
                               impersonate=cfg.impersonate)
        if cfg.impersonate and not self.fetcher.impersonating:  # a worker unlike the machine that checked
            from pipeline.crawl.impersonate import impersonation_status

            raise UserError(f"this worker cannot send requests as a browser does: {impersonation_status().detail}")
        # translations: their own budget, never waited for past --translation-max-wait (sessions.py)
        self.translation_fetcher = self.fetcher.spending(
            DeferringBudget(self.budgets.translations, cfg.translation_max_wait),
            RetryPolicy(cfg.translation_retries, cfg.backoff_base, cfg.backoff_max))
        self.info_source = (InfoJsonSource(cfg.info_json) if cfg.info_json else
                            YtdlpSource(cfg, self.budget, cookie_copy, warn, self.url_policy, self.budgets.videos))
        self.cookie_copy = cookie_copy

    def download_video(self, info: dict) -> tuple[str, Path]:
        return download_video(info, self.cfg, self.budget, self.scratch, self.cookie_copy, self.url_policy,
                              self.warn)


# ---------------------------------------------------------------- the stage

def retry_marker(files: UnitFiles) -> Path:
    return files.directory / f".{files.stem}.retry.json"


def load_previous(files: UnitFiles) -> tuple[dict, dict]:
    """Rows and samples of an earlier version of a unit being retried, if intact."""
    marker = retry_marker(files)
    if not marker.exists():
        return {}, {}
    try:
        old = json.loads(marker.read_text())
        for kind, path in (("tar", files.tar), ("parquet", files.parquet)):
            if not path.exists() or sha256_file(path) != old["files"][kind]["sha256"]:
                log.warning("%s: earlier version changed or missing; re-crawling the whole unit", files.stem)
                return {}, {}
        rows, samples, broken = read_unit(files)
        if broken is not None:
            raise ShardError(broken)
        return {r["video_id"]: r for r in rows}, samples
    except (ValueError, KeyError, ShardError, OSError, RecursionError) as exc:
        log.warning("%s: earlier version unreadable (%s); re-crawling the whole unit", files.stem, exc)
        return {}, {}


class CrawlStage(Stage):
    name = "crawl"
    layout = CRAWL

    def __init__(self, cfg: CrawlConfig):
        self.cfg = cfg
        self.schema = crawl_schema(cfg.langs)
        self.out = as_path(cfg.out)
        self._ctxs: dict = {}
        self._input_sha = None
        self.duplicates = 0
        self.run_dir: Path | None = None  # set by main: this run's part of the private work area
        self.runtime_ready = False  # set by main: a JavaScript runtime is usable (what --retry-failed may redo)

    def __getstate__(self):
        state = super().__getstate__()
        state["_ctxs"] = {}
        return state

    def egress_for(self, unit: Unit) -> str | None:
        """Units are dealt round-robin over the ``--egress`` addresses (None without any)."""
        return self.cfg.egress[unit.index % len(self.cfg.egress)] if self.cfg.egress else None

    def unit_resources(self, unit: Unit) -> dict:
        egress = self.egress_for(unit)
        return {"num_cpus": 1, f"egress_{egress}": 1} if egress else {"num_cpus": 1}

    def context(self, egress: str | None = None) -> "CrawlContext":
        if egress not in self._ctxs:
            self._ctxs[egress] = CrawlContext(self.cfg, egress, self.run_dir, self.report_warning)
        return self._ctxs[egress]

    def plan(self) -> list[Unit]:
        entries, self.duplicates = dedupe(read_video_list(Path(self.cfg.videos)))
        if self.duplicates:
            log.warning("%d duplicate ids in %s are crawled once", self.duplicates, self.cfg.videos)
        self.input_videos = sum(1 for e in entries if e.valid)  # what would be asked of YouTube
        size = max(1, self.cfg.unit_size)
        return [Unit(i, entries[start:start + size]) for i, start in enumerate(range(0, len(entries), size))]

    def fingerprint(self) -> dict:
        if self._input_sha is None:
            self._input_sha = sha256_file(Path(self.cfg.videos))
        return {"input_sha256": self._input_sha, "unit_size": self.cfg.unit_size, "langs": list(self.cfg.langs)}

    def config(self) -> dict:
        """The settings, the session the budgets are keyed on (``sessions.py``) and the input's size: what
        the stats report projects the crawl's days from."""
        signed_in = account_of(self.cfg.cookies) != ANONYMOUS  # the account's digest stays out of outputs
        return {**self.cfg.public(), "session": "signed-in" if signed_in else ANONYMOUS,
                "input_videos": getattr(self, "input_videos", None)}

    def setup_worker(self) -> None:
        if not self.cfg.egress:
            self.context()

    def process(self, unit: Unit, writer: UnitWriter) -> None:
        ctx = self.context(self.egress_for(unit))
        files = writer.files
        prev_rows, prev_samples = load_previous(files)
        for entry in unit.items:
            key = entry.video_id if entry.valid else None
            prev = prev_rows.get(key) if key else None
            if prev is not None and not needs_retry(prev, self.cfg.langs, self.runtime_ready) and not (
                    self.cfg.download_video and lacks_video(prev)):
                row, members = prev, prev_samples.get(key)
                writer.count("carried_over")
            else:
                held = held_from(prev, prev_samples.get(key), self.runtime_ready) if prev is not None else None
                row, members = crawl_video(entry, ctx, held)
                if prev is not None:
                    row["attempts"] = int(prev.get("attempts") or 1) + 1
                    writer.count("retried")
            if members is not None:
                try:
                    writer.write_sample(entry.video_id, members)
                finally:  # a downloaded video is a scratch file, streamed into the tar
                    for value in members.values():
                        if isinstance(value, Path):
                            value.unlink(missing_ok=True)
                if row.get("video_ext") and row.get("video_status") == "ok":
                    writer.count("videos_downloaded")
                writer.count("tracks", sum(1 for m in members if is_track_member(m)))
            for lang in self.cfg.langs:
                if row.get(lang_column(lang, "status")):
                    writer.count(f"track_status/{row[lang_column(lang, 'status')]}")
            for kind in (row.get("ytdlp_warnings") or "").split(","):
                if kind:
                    writer.count(f"ytdlp_warnings/{kind}")
            writer.add_row(row)
            self.video_done(row["status"])
            log.info("%s %s %s", row["video_id"], row["status"], row.get("error") or "")
        writer.count("videos", len(unit.items))
        for name, n in ctx.budgets.take_counts().items():
            writer.count(name, n)

    def after_publish(self, files: UnitFiles) -> None:
        retry_marker(files).unlink(missing_ok=True)


def mark_transient_units(out, langs, retry_failed: bool = True, download_video: bool = False,
                         runtime_ready: bool = False) -> int:
    """Reopen every complete unit that holds work: with --retry-failed, failures to ask again for
    (``needs_retry``: transient ones or those of this machine's settings, of whole videos or single
    tracks); with --download-video, videos read without their download (``lacks_video``).

    The unit's stats go to a retry marker (with the checksums of its files) and the
    stats file is removed, so the unit is redone; its final rows are carried over, and
    a partial video keeps the tracks it has.
    A kill in between is safe: the unit is simply incomplete and is redone.
    """
    reopened = 0
    for files in completed_units(out, "crawl"):
        try:
            retry = any(retry_failed and needs_retry(r, langs, runtime_ready) or download_video and lacks_video(r)
                        for r in read_rows(files.parquet))
        except UNREADABLE_PARQUET as exc:
            log.warning("%s: parquet unreadable (%s); redoing the unit", files.stem, exc)
            retry = True
        if retry:
            atomic_write_json(retry_marker(files), json.loads(files.stats.read_text()))
            files.stats.unlink()
            reopened += 1
    return reopened


def reset_budgets(cfg: CrawlConfig, args) -> None:
    """Clear a halt an earlier run left in the budgets this crawl will use."""
    if cfg.budget_backend != "ray":
        session_budgets(cfg).reset_halt()
        return
    from pipeline.runtime.ray_executor import RayUnavailable, ensure_ray

    try:
        ensure_ray(args.ray_address, args.workers, {f"egress_{e}": 1 for e in cfg.egress})
    except RayUnavailable as exc:
        raise UserError(str(exc)) from exc
    if cfg.egress:
        for egress in cfg.egress:
            session_budgets(cfg, egress).reset_halt()
    elif cfg.proxies:
        session_budgets(cfg).reset_halt()
    else:
        import ray

        account = account_of(cfg.cookies)
        for node in ray.nodes():
            if node.get("Alive"):
                for kind in KINDS:
                    name = SessionKey(account, f"node-{node['NodeManagerAddress']}").name(cfg.budget_name, kind)
                    RayRequestBudget(name, max_trips=cfg.breaker_max_pauses).reset_halt()


def run_crawl(stage: CrawlStage, args):
    """Everything a crawl writes, under its output's run lock: the units reopened by
    --retry-failed, the budgets' halts cleared, the work area, then the units."""
    cfg = stage.cfg
    prepare_output(stage.out)
    with lock_output(stage.out, args.rank, args.world_size) as lock:
        check_config(stage.out, stage)  # before reopening any unit of a crawl over other input
        if args.retry_failed:
            reopened = mark_transient_units(stage.out, cfg.langs, True, cfg.download_video, stage.runtime_ready)
            print(f"mmp-crawl: {reopened} units hold transient failures (or failures of this machine's settings"
                  f"{', or videos not downloaded' if cfg.download_video else ''}) and will be retried")
        elif cfg.download_video:
            reopened = mark_transient_units(stage.out, cfg.langs, False, True)
            if reopened:
                print(f"mmp-crawl: {reopened} finished units hold videos not downloaded yet; fetching them "
                      f"(their tracks are kept)")
        reset_budgets(cfg, args)
        stage.run_dir = start_run_dir(cfg)
        try:
            return run_stage(stage, stage.out, lock=lock, **executor_options(args))
        finally:
            end_run_dir(stage.run_dir)


@command("mmp-crawl")
def main(argv=None) -> int:
    try:
        args = parse_args(build_parser(), argv)
    except SystemExit as exc:  # argparse has printed its one-line error (or --help, --version)
        if exc.code:
            return exc.code
        raise
    if args.check:
        return check_main(args)
    cfg = config_from_args(args)
    preflight(cfg, args.allow_no_js_runtime, args.allow_no_impersonation)
    cfg.out = str(stage_out(cfg.out, "crawl", "mmp-crawl"))
    stage = CrawlStage(cfg)
    stage.runtime_ready = js_runtime_ready(cfg)
    summary = run_crawl(stage, args)
    print_summary("mmp-crawl", stage.out, summary)
    for hint in (video_hint(cfg, summary), refused_hint(summary), deferred_hint(summary)):
        if hint:
            print(hint)
    if summary.raised(CrawlHalted):
        print("mmp-crawl: halted by the circuit breaker: YouTube keeps refusing requests from this address. "
              "Completed units are kept; re-run later (add --cookies, --proxy or lower --max-requests-per-second).",
              file=sys.stderr)
        return 3
    return 1 if summary.units_failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Where shards live: a local directory or any fsspec URL (``s3://``, ``gs://``, ...).

Stages hand each other directories. A plain path (or ``file://`` URL) stays a
``pathlib.Path`` and behaves exactly as before; any other URL becomes a
``RemotePath``, a small picklable stand-in with the part of the ``Path`` API the
shard code uses (``/``, ``name``, ``exists``, ``read_text``, ``glob``, ``stat``,
``unlink``...), so ``UnitFiles``, readers and verification work on both.

An object store has no rename. A unit is therefore written to local temporary
files (in ``staging_dir()``) and each file is uploaded under its final name in one
PUT, which an object store makes visible whole or not at all; the stats object goes
last and is the completion marker, as on a local disk.

Storage options (endpoint, credentials) for fsspec come from the environment, never
from flags that end up in ``config.json``:
  ``MMP_S3_ENDPOINT``       endpoint URL of an S3-compatible store (MinIO, Ceph, moto)
  ``MMP_STORAGE_OPTIONS``   JSON object passed to the fsspec filesystem, per protocol
                            (``{"s3": {"anon": false}, "gs": {"project": "x"}}``) or flat
Credentials are the filesystem's usual ones (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``~/.aws``, an instance role, ``GOOGLE_APPLICATION_CREDENTIALS``), read on each node.
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
import posixpath
import tempfile
from pathlib import Path

# Object stores where one upload is atomic: no temporary key and copy needed.
ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"})
WDS_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss", "memory")


def is_url(location) -> bool:
    """True for ``scheme://...`` other than ``file://`` (those are local paths)."""
    if isinstance(location, RemotePath):
        return True
    text = str(location)
    return "://" in text and not text.startswith("file://")


def storage_options(protocol: str) -> dict:
    """fsspec options for ``protocol`` from MMP_STORAGE_OPTIONS and MMP_S3_ENDPOINT."""
    opts: dict = {}
    raw = os.environ.get("MMP_STORAGE_OPTIONS")
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"MMP_STORAGE_OPTIONS is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ValueError("MMP_STORAGE_OPTIONS must be a JSON object")
        if any(isinstance(v, dict) for v in parsed.values()) and all(isinstance(v, dict) for v in parsed.values()):
            opts.update(parsed.get(protocol, {}))
        else:
            opts.update(parsed)
    endpoint = os.environ.get("MMP_S3_ENDPOINT")
    if endpoint and protocol in ("s3", "s3a"):
        opts.setdefault("endpoint_url", endpoint)
    return opts


def as_path(location):
    """A ``Path`` for a local path or ``file://`` URL, a ``RemotePath`` for any other URL."""
    if isinstance(location, (Path, RemotePath)):
        return location
    text = os.fspath(location) if not isinstance(location, str) else location
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if "://" in text:
        return RemotePath(text)
    return Path(text)


class _Stat:
    __slots__ = ("st_size", "st_mtime")

    def __init__(self, size: int, mtime: float):
        self.st_size, self.st_mtime = size, mtime


def _mtime(info: dict) -> float:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, _dt.datetime):
            return value.timestamp()
        try:
            return _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
    return 0.0


class RemotePath:
    """A file or directory under an fsspec URL, with the ``Path`` methods the shard code uses.

    Holds only the URL and the storage options (captured where it was made, so a Ray
    worker on another node opens the same store); the filesystem is made lazily in
    each process. ``str()`` is the URL; options (which may hold keys) never print.
    """

    __slots__ = ("url", "options", "_fs")

    def __init__(self, url: str, options: dict | None = None):
        url = url.rstrip("/") if not url.endswith("://") else url
        self.url = url
        self.options = dict(options) if options is not None else storage_options(self.protocol)
        self._fs = None

    # -- identity
    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def path(self) -> str:
        """The path inside the filesystem (``bucket/prefix/name``)."""
        return self.url.split("://", 1)[1]

    @property
    def fs(self):
        if self._fs is None:
            try:
                import fsspec
            except ImportError:
                raise ImportError(f"{self.url}: URLs need fsspec: pip install 'multi-howto100m[cluster]'") from None
            try:
                self._fs = fsspec.filesystem(self.protocol, **self.options)
            except ImportError as exc:
                raise ImportError(f"{self.url}: no filesystem for {self.protocol}:// is installed ({exc}); "
                                  f"install it (s3fs for s3://, gcsfs for gs://, adlfs for az://)") from None
        return self._fs

    def __getstate__(self):
        return {"url": self.url, "options": self.options}

    def __setstate__(self, state):
        self.url, self.options, self._fs = state["url"], state["options"], None

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other) -> bool:
        return self.url < other.url

    def __truediv__(self, name) -> "RemotePath":
        return RemotePath(f"{self.url}/{str(name).lstrip('/')}", self.options)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> "RemotePath":
        return RemotePath(f"{self.protocol}://{posixpath.dirname(self.path)}", self.options)

    def with_name(self, name: str) -> "RemotePath":
        return self.parent / name

    def resolve(self) -> "RemotePath":
        return self

    # -- queries (listings are re-read: another node may have published since)
    def _fresh(self) -> None:
        self.fs.invalidate_cache(self.path)
        self.fs.invalidate_cache(posixpath.dirname(self.path))

    def exists(self) -> bool:
        self._fresh()
        return self.fs.exists(self.path)

    def is_file(self) -> bool:
        self._fresh()
        return self.fs.isfile(self.path)

    def is_dir(self) -> bool:
        self._fresh()
        return self.fs.isdir(self.path)

    def stat(self) -> _Stat:
        self._fresh()
        info = self.fs.info(self.path)
        return _Stat(int(info.get("size") or 0), _mtime(info))

    def iterdir(self):
        self._fresh()
        try:
            entries = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return []
        return [RemotePath(f"{self.protocol}://{e.rstrip('/')}", self.options) for e in sorted(entries)
                if e.rstrip("/") != self.path]

    def glob(self, pattern: str):
        """Children whose name matches ``pattern`` (one level, like ``Path.glob`` without ``**``)."""
        return [p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern)]

    # -- reading and writing
    def open(self, mode: str = "rb", **kwargs):
        return self.fs.open(self.path, mode, **kwargs)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """Publish ``data`` under this name at once (one PUT; elsewhere a temporary name and a move)."""
        if self.protocol in ATOMIC_PUT_PROTOCOLS:
            self.fs.pipe_file(self.path, data)
        else:
            tmp = f"{posixpath.dirname(self.path)}/.{self.name}.tmp-{os.getpid()}"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, self.path)
        self._fresh()

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def upload(self, local: Path) -> None:
        """Publish the local file ``local`` under this name (atomically, as ``write_bytes``)."""
        if self.protocol in ATOMIC_PUT_PROTOCOLS:
            self.fs.put_file(str(local), self.path)
        else:
            tmp = f"{posixpath.dirname(self.path)}/.{self.name}.tmp-{os.getpid()}"
            self.fs.put_file(str(local), tmp)
            self.fs.mv(tmp, self.path)
        self._fresh()

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise
        self._fresh()

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no directories; elsewhere (sftp, hdfs) one is made."""
        if self.protocol not in ATOMIC_PUT_PROTOCOLS:
            self.fs.makedirs(self.path, exist_ok=True)


def open_file(path, mode: str = "rb"):
    """Open a local ``Path`` or a ``RemotePath`` (or a URL string) for reading or writing."""
    path = as_path(path)
    if isinstance(path, RemotePath):
        return path.open(mode)
    return open(path, mode)


def staging_dir() -> Path:
    """Local directory for the temporaries of units published to a remote store (private: ``shards.private``)."""
    from shards.private import private_dir

    return private_dir(os.environ.get("MMP_STAGING_DIR") or Path(tempfile.gettempdir()) / f"mmp-staging-{os.getuid()}")


def staging_name(directory) -> str:
    """A local name for a remote directory (its URL with separators flattened)."""
    text = str(directory).replace("://", "_").replace("/", "_")
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[-150:]


def local_copy(location, cache: Path | None = None) -> Path:
    """A local file with the contents of ``location`` (itself when it is already local)."""
    path = as_path(location)
    if not isinstance(path, RemotePath):
        return path
    target = (cache or staging_dir()) / f"input-{staging_name(path)}"
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    path.fs.get_file(path.path, str(tmp))
    os.replace(tmp, target)
    return target


def _wds_open(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    return RemotePath(url).open(mode)


def register_webdataset_schemes(schemes=WDS_SCHEMES) -> None:
    """Let WebDataset open ``s3://``, ``gs://``... shard URLs through fsspec (with our storage options).

    Call once before building a ``webdataset.WebDataset`` over remote shards; every
    process that reads them (DataLoader workers are forked or spawned from it) needs
    it, so call it where the dataset is built.
    """
    import importlib

    gopen = importlib.import_module("webdataset.gopen")  # the module; the package re-exports a function of that name
    for scheme in schemes:
        gopen.gopen_schemes[scheme] = _wds_open

"""Reading a file nobody on the team wrote: a regular file, up to a stated size, or a clear refusal.

A path in a list, a saved info JSON, a release file or a ``--config`` may name anything: a FIFO
(an open that never returns), ``/dev/zero`` (a read that never ends), a file of many gigabytes.
``read_regular`` opens without blocking, checks what it opened (not what the name said a moment
before), and reads at most ``max_bytes``; anything else is an ``UnreadableInput`` whose message is
one sentence naming the file. Symbolic links to regular files are read as usual: datasets are
often links into a shared store.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path


class UnreadableInput(ValueError):
    """A file that is not read: not a regular file, larger than its cap, or not there."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path, what: str = "file") -> int:
    """A read-only descriptor of ``path``, which must be a regular file (checked on the open file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UnreadableInput(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise UnreadableInput(f"{what} {path} cannot be opened: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnreadableInput(f"{what} {path} is {_kind(mode)}, not a regular file; give a file")
    os.set_blocking(fd, True)
    return fd


def read_regular(path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of regular file ``path``; more than ``max_bytes`` of them is an ``UnreadableInput``."""
    fd = open_regular(path, what)
    try:
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:
        raise UnreadableInput(f"{what} {path} is larger than {_size(max_bytes)}, the limit for such a file")
    return b"".join(chunks)


def read_regular_text(path, max_bytes: int, what: str = "file") -> str:
    """``read_regular`` decoded as UTF-8 (a BOM dropped); undecodable text is an ``UnreadableInput``."""
    data = read_regular(path, max_bytes, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableInput(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


def is_regular(path) -> bool:
    """Whether ``path`` is (a link to) a regular file, without opening it."""
    try:
        return Path(path).is_file()
    except OSError:
        return False

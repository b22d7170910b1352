"""The one line between a user's failure and a bug: ``UserError``.

Every error the user can fix (a bad flag, a missing or damaged input, a setting that
cannot work) derives from ``UserError``, whichever package raises it; a command prints it
as one sentence and exits 2 (``command``, the skeleton of every ``main``). Anything else is a bug
and keeps its traceback. The errors of an output's storage (a full disk, a read-only or
misplaced ``--out``) are the user's too: ``output_problem`` says them in one sentence.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import sys


class UserError(Exception):
    """Something the user can fix: its message is one sentence saying what; the command exits 2."""


def command(prog: str):
    """The skeleton of every command's ``main(argv=None) -> int``, as a decorator.

    A ``UserError`` raised in the body (or anything it calls) is printed as ``PROG: error: MSG``
    on stderr and the command returns 2. Everything else goes on as raised: a bug keeps its
    traceback, argparse's ``SystemExit`` and an interrupted stage's exit code (130/143) stay theirs.
    """
    def decorate(body):
        @functools.wraps(body)
        def main(argv=None) -> int:
            try:
                return body(argv)
            except UserError as exc:
                print(f"{prog}: error: {exc}", file=sys.stderr)
                return 2
        return main
    return decorate


# Errors of the output's storage, not of the code: the run stops with one sentence.
_STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                   errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                   errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is a file, not a directory",
                   errno.EEXIST: "it exists and is not a directory"}
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # wherever they strike, they are the storage's
_HINTS = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
          errno.ENOTDIR: "move the file away", errno.EEXIST: "move the file away"}


def output_problem(exc: OSError, out) -> str | None:
    """The one-sentence reason ``exc`` stops writing ``out``, or None if it is not the output's storage."""
    code = exc.errno
    if code is None and "no space left on device" in str(exc).lower():  # pyarrow's IOError has no errno
        code = errno.ENOSPC
    cause = _STORAGE_ERRNOS.get(code)
    if cause is None:
        return None
    path = getattr(exc, "filename", None) or out
    if code not in _FULL and str(out) not in str(path):
        return None  # somebody else's file (a cookie jar, an input): the stage's own business
    hint = _HINTS.get(code, "make it writable")
    return f"cannot write the output {out} ({path}): {cause}; {hint} or choose another --out, then run the same command"


@contextlib.contextmanager
def output_errors(out):
    """Turn a storage error of ``out`` (read-only, a file in the way, full) into a UserError."""
    try:
        yield
    except OSError as exc:
        problem = output_problem(exc, out)
        if problem is None:
            raise
        raise UserError(problem) from exc


def check_writable(directory, need: int, out=None) -> None:
    """Create ``directory``, write and remove a file in it, and see ``need`` bytes free there, so that
    a read-only, misplaced or full ``--out`` (``out``, default ``directory``) is one sentence (a
    UserError) before any work, not a traceback after it."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    directory = Path(directory)
    out = directory if out is None else out
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mmp-write-probe-", dir=directory)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            os.unlink(probe)
        if shutil.disk_usage(directory).free < need:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    except OSError as exc:
        # said of --out itself: the probe's own name means nothing to the user
        problem = output_problem(OSError(exc.errno, exc.strerror, str(out)), out)
        if problem is None:
            raise
        raise UserError(problem) from exc

"""Private working directories in shared places (the temp folder): ours alone, or refused.

The request budget's state (``$TMPDIR/mmp-budget-<uid>``), the staging area of units bound for an
object store (``mmp-staging-<uid>``) and the logs of such runs (``mmp-logs``) live under a folder
every local user can write. Another user could create the name first, as a directory of theirs or
as a symbolic link to a place of their choice, and have our files written there. So such a
directory is created with mode 0700, and an existing one is used only when it is a real directory
(not a link), owned by this user; one that is group- or world-accessible is closed to 0700.
Files inside are opened with ``O_NOFOLLOW`` by their users (``open_private``).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from shards.errors import UserError


class UnsafeDirectory(UserError):
    """A private directory's name is taken by something this user must not write through."""


def private_dir(path) -> Path:
    """``path`` as a directory only this user can enter (created 0700 if missing); else UnsafeDirectory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeDirectory(f"{path} is a symbolic link, not a private directory of this user; remove it "
                              "(someone may have planted it) or point the variable that names it elsewhere")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory; remove it or point the variable that names it elsewhere")
    if info.st_uid != os.getuid():
        raise UnsafeDirectory(f"{path} belongs to another user (uid {info.st_uid}); remove it or point the variable "
                              "that names it elsewhere")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def open_private(path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` of a file in a private directory that never follows a symbolic link."""
    return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)

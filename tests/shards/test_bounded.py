"""Reading untrusted files: regular files only, up to a cap, never a FIFO or a device."""
import os

import pytest

from shards.bounded import UnreadableInput, read_regular, read_regular_text
from tests.watchdog import run_bounded


def test_regular_files_are_read_up_to_their_cap(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"\xef\xbb\xbf{}")
    assert read_regular_text(path, 16) == "{}"
    link = tmp_path / "link.json"
    link.symlink_to(path)
    assert read_regular(link, 16) == b"\xef\xbb\xbf{}"
    with pytest.raises(UnreadableInput, match="larger than 4 bytes"):
        read_regular(path, 4)
    with pytest.raises(UnreadableInput, match="does not exist"):
        read_regular(tmp_path / "none", 4)


def test_devices_fifos_and_directories_are_refused_at_once(tmp_path):
    fifo = tmp_path / "x.info.json"
    os.mkfifo(fifo)  # an open for reading blocks until a writer comes: never, here
    zero = tmp_path / "zero.info.json"
    zero.symlink_to("/dev/zero")  # a read that never ends
    for path, kind in ((fifo, "a FIFO"), (zero, "a character device"), (tmp_path, "a directory")):
        with pytest.raises(UnreadableInput, match=kind):
            run_bounded(read_regular, path, 1 << 30, seconds=10, memory_mb=300)

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


def test_a_npy_header_claiming_terabytes_is_refused_before_numpy_allocates():
    """A few bytes whose header claims 8 TB: numpy would allocate the claim for a file-like object."""
    import io

    import numpy as np

    from shards.codec import load_npy, npy_bytes

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f2", "fortran_order": False, "shape": (10**12, 4)})
    lying = header.getvalue() + b"\0" * 24
    with pytest.raises(ValueError, match=r"claims shape \(1000000000000, 4\)"):
        run_bounded(load_npy, lying, seconds=10, memory_mb=100)
    assert load_npy(npy_bytes(np.ones((3, 4), np.float16))).shape == (3, 4)
    with pytest.raises(ValueError, match="pickled objects"):
        load_npy(npy_bytes(np.ones((3, 4), np.float16)).replace(b"'<f2'", b"'|O' "))

"""Which device a feature-extraction worker uses, and the per-GPU slot it holds.

``--gpus 0``: the CPU, the cores split between ``--workers`` processes; no slot and no
file. ``--gpus N``: each worker claims a free slot i with a non-blocking ``flock`` on
``OUT/.gpu-slot-HOST-i.lock`` (for an object-store ``--out``, a directory under the
temp dir named after it) and uses ``cuda:i``. The lock belongs to an open file
descriptor kept for the process lifetime, so the kernel releases it whenever the
process ends, killed or not; the small file itself may stay and is reused. Where a
scheduler already gave the process fewer visible GPUs than N (Ray, Slurm with
CUDA_VISIBLE_DEVICES), the worker uses ``cuda:0`` without a slot. What one process
picked and loaded is held by a ``Worker`` its stage owns.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import tempfile
from pathlib import Path

log = logging.getLogger("mmp.extract")

class Worker:
    """One process's device, GPU slot, the open file holding the slot's lock, and its loaded backbones."""

    def __init__(self):
        self.device: str | None = None
        self.slot: int | None = None
        self.lock = None
        self.models: dict | None = None
        self.models_key = None


class NoFreeSlot(RuntimeError):
    """Every slot is held: more workers than ``--gpus`` on this host share the output."""


def slot_directory(out) -> Path:
    """Lock files are local to the node: beside a local ``out``, in the temp dir for a URL."""
    if isinstance(out, Path):
        return out
    return Path(tempfile.gettempdir()) / ("mmp-gpu-slots-" + hashlib.sha1(str(out).encode()).hexdigest()[:12])


def claim_slot(out, slots: int) -> tuple[int, object]:
    """A free slot index in [0, slots) by a non-blocking flock kept open; (index, open file)."""
    host = socket.gethostname()
    where = slot_directory(out)
    where.mkdir(parents=True, exist_ok=True)
    for i in range(slots):
        f = open(where / f".gpu-slot-{host}-{i}.lock", "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        return i, f
    raise NoFreeSlot(f"no free device slot among {slots} in {where}: more workers than --gpus on {host}, "
                     f"or another extraction on this output still holds them")


def pick_device(out, gpus: int, workers: int, worker: Worker) -> str:
    """This process's device, kept in ``worker``: cuda:i by slot, cuda:0 under a scheduler that set
    fewer GPUs, or cpu."""
    if worker.device is not None:
        return worker.device
    import torch

    if gpus <= 0:
        slot, lock = None, None
        # Split the cores between CPU workers instead of each taking all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, workers)))
        device = "cpu"
    else:
        visible = torch.cuda.device_count()
        if visible == 0:
            raise RuntimeError("--gpus was given but this process sees no CUDA device")
        if visible < gpus:
            slot, lock, device = None, None, "cuda:0"
        else:
            slot, lock = claim_slot(out, gpus)
            device = f"cuda:{slot}"
        torch.cuda.set_device(torch.device(device))
    worker.device, worker.slot, worker.lock = device, slot, lock
    log.info("worker %d uses %s%s", os.getpid(), device, "" if slot is None else f" (slot {slot})")
    return device

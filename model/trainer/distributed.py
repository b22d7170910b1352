"""torchrun's environment for mmp-train: ranks, devices, and the few collectives outside DDP."""
from __future__ import annotations

import os

from model.trainer.run_setup import ConfigError

def ddp_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def pick_device(name: str, local_rank: int):
    import torch

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda but no CUDA device is visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def to_device(batch: dict, device) -> dict:
    import torch

    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def gather_objects(obj, world: int) -> list:
    import torch.distributed as dist

    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, world: int):
    """Rank 0's ``obj`` on every rank."""
    import torch.distributed as dist

    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown_distributed(finished: bool) -> None:
    """Tear the process group down on every rank together, while the interpreter is whole.

    A rank that finished waits for the others before it closes its Gloo/NCCL connections, so no
    rank loses its peer while it still writes the summary or the last checkpoint; a group left to
    interpreter shutdown can abort the process ("terminate called without an active exception")
    and turn a finished run into a failed one under torchrun. After an error there is no barrier:
    the other ranks may never reach it.
    """
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()
    gc.collect()


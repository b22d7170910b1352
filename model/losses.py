"""The MMP losses: inter-modal, intra-modal and visually-pivoted cross-lingual NCE.

Every term is the symmetric InfoNCE of two batches of L2-normalised embeddings, where
row i of each is a positive pair and every other row of the (global) batch a negative:

    nce(a, b) = 1/2 [ CE(a b^T / tau, diag) + CE(b a^T / tau, diag) ]

Embeddings are gathered from all ranks so the negatives span the global batch
(open_clip's approach). The gather keeps the gradient of this rank's part and sums the
gradients every rank computes for it, so DDP's gradient average equals the gradient of
one process holding the whole batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def nce(a: torch.Tensor, b: torch.Tensor, temperature: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between rows of ``a`` and ``b`` ([N, D], normalised).

    ``valid`` (bool [N]) leaves rows out entirely: neither anchors nor negatives (samples
    without a parallel caption in the cross-lingual term). No valid row gives 0 (still a
    graph node, so every rank runs the same backward).
    """
    a, b = a.float(), b.float()
    logits = a @ b.t() / temperature
    target = torch.arange(len(a), device=a.device)
    if valid is None:
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    valid = valid.bool().to(a.device)
    if not valid.any():
        return logits.sum() * 0.0
    keep = valid.nonzero().squeeze(1)
    sub = logits[keep][:, keep]
    target = torch.arange(len(keep), device=a.device)
    return 0.5 * (F.cross_entropy(sub, target) + F.cross_entropy(sub.t(), target))


def inter_modal_nce(text: torch.Tensor, video: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Text i and video i are the positive pair."""
    return nce(text, video, temperature)


def intra_modal_nce(text, text_noisy, video, video_noisy, temperature: float = 0.1) -> torch.Tensor:
    """Each text against its masked copy, each video against its masked copy (5% of tokens /
    frames masked in the data pipeline); the two terms are summed."""
    return nce(text, text_noisy, temperature) + nce(video, video_noisy, temperature)


def cross_lingual_nce(pivot_a, pivot_b, valid, temperature: float = 0.1) -> torch.Tensor:
    """Two languages of one caption, each read with the same video, are the positive pair."""
    return nce(pivot_a, pivot_b, temperature, valid)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        world = dist.get_world_size()
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather(x: torch.Tensor) -> torch.Tensor:
    """``x`` from every rank, concatenated in rank order; gradient flows to the local part."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    if not x.requires_grad:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)
    return _GatherWithGrad.apply(x)


def mmp_loss(out: dict, temperature: float = 0.1) -> dict:
    """Every term over the global batch, and their sum as ``loss``."""
    g = {k: gather(v.to(torch.uint8) if v.dtype == torch.bool else v) for k, v in out.items()}
    terms = {
        "inter": inter_modal_nce(g["text"], g["video"], temperature),
        "intra": intra_modal_nce(g["text"], g["text_noisy"], g["video"], g["video_noisy"], temperature),
    }
    if "pivot_a" in g:
        terms["cross"] = cross_lingual_nce(g["pivot_a"], g["pivot_b"], g["pair_valid"], temperature)
    terms["loss"] = sum(terms.values())
    return terms

"""The MMP losses: inter-modal, intra-modal and visually-pivoted cross-lingual NCE.

Every term is the symmetric InfoNCE of two batches of L2-normalised embeddings, where
row i of each is a positive pair and every other row of the (global) batch a negative:

    nce(a, b) = 1/2 [ CE(a b^T / tau, diag) + CE(b a^T / tau, diag) ]

Which terms a run trains is its choice (``mmp-train --losses``, from ``TERMS``), after the
paper (Eq. 1-6): pre-training on Multi-HowTo100M uses ``inter`` and ``intra`` alone; with
parallel captions (x, v, y) the objective is L(X,V) + L(Y,V) + the intra-modal terms of
X, Y and V + the cross-lingual term. So ``xling`` is what brings the parallel text y in:
with it, ``inter`` adds L(Y,V) and ``intra`` adds y against its masked copy, besides the
cross-lingual term itself. Every term that involves y runs over the rows that have one
(``pair_valid``) and only those: the other rows are cut out of both sides before the
logits are formed, so they are neither positives nor negatives.

Embeddings are gathered from all ranks so the negatives span the global batch
(open_clip's approach). The gather keeps the gradient of this rank's part and sums the
gradients every rank computes for it, so DDP's gradient average equals the gradient of
one process holding the whole batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

TERMS = ("inter", "intra", "xling")

def nce(a: torch.Tensor, b: torch.Tensor, temperature: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between rows of ``a`` and ``b`` ([N, D], normalised).

    ``valid`` (bool [N]) leaves rows out entirely: they are dropped from both sides before
    the logits, so they are neither anchors, positives nor negatives (samples without a
    parallel text). No valid row gives 0 (still a graph node, so every rank runs the same
    backward).
    """
    a, b = a.float(), b.float()
    if valid is not None:
        valid = valid.bool().to(a.device)
        if not valid.any():
            return (a.sum() + b.sum()) * 0.0
        keep = valid.nonzero().squeeze(1)
        a, b = a[keep], b[keep]
    logits = a @ b.t() / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


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


def parse_terms(text: str) -> tuple[str, ...]:
    """``"inter,intra"`` as ``("inter", "intra")``; ValueError naming what is wrong for an
    empty list, an unknown term or one given twice."""
    names = [t.strip() for t in text.split(",")]
    if not any(names) or not all(names):
        raise ValueError(f"{text!r} has an empty term; give a comma list from {', '.join(TERMS)}")
    unknown = [t for t in names if t not in TERMS]
    if unknown:
        raise ValueError(f"unknown term {unknown[0]!r} in {text!r}; choose from {', '.join(TERMS)}")
    twice = sorted({t for t in names if names.count(t) > 1})
    if twice:
        raise ValueError(f"{text!r} names {twice[0]} twice")
    return tuple(names)


def mmp_loss(out: dict, temperature: float = 0.1, terms: tuple[str, ...] = TERMS) -> dict:
    """The chosen ``terms`` (from ``TERMS``) over the global batch, and their sum as ``loss``.

    ``out`` is the model's forward: ``text``, ``video``, ``text_noisy``, ``video_noisy`` and,
    when the batch carries parallel text, ``pair_text``, ``pair_text_noisy``, ``pivot_a``,
    ``pivot_b`` and ``pair_valid``. The y parts count only with ``xling`` among ``terms`` (the
    paper's objective with parallel captions); without parallel text ``xling`` is 0.
    """
    unknown = [t for t in terms if t not in TERMS]
    if not terms or unknown:
        raise ValueError(f"loss terms {list(terms)}: choose from {', '.join(TERMS)}")
    g = {k: gather(v.to(torch.uint8) if v.dtype == torch.bool else v) for k, v in out.items()}
    pairs = "xling" in terms and "pivot_a" in g
    valid = g["pair_valid"] if pairs else None
    result = {}
    if "inter" in terms:
        result["inter"] = inter_modal_nce(g["text"], g["video"], temperature)
        if pairs:  # L(Y,V): the parallel text against the same videos
            result["inter"] = result["inter"] + nce(g["pair_text"], g["video"], temperature, valid)
    if "intra" in terms:
        result["intra"] = intra_modal_nce(g["text"], g["text_noisy"], g["video"], g["video_noisy"], temperature)
        if pairs:  # y against its own masked copy
            result["intra"] = result["intra"] + nce(g["pair_text"], g["pair_text_noisy"], temperature, valid)
    if "xling" in terms:
        result["xling"] = (cross_lingual_nce(g["pivot_a"], g["pivot_b"], valid, temperature) if pairs
                           else g["text"].sum() * 0.0)
    result["loss"] = sum(result.values())
    return result

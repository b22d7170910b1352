"""The NCE losses against values computed by hand, and the cross-rank gather against one process."""
import math
import os
import socket

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny tensors on a shared machine: extra threads only wait on each other

from model.losses import (TERMS, cross_lingual_nce, inter_modal_nce, intra_modal_nce, mmp_loss, nce,  # noqa: E402
                          parse_terms)


def _lse(*xs):
    return math.log(sum(math.exp(x) for x in xs))


def test_nce_matches_hand_computed_value():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # logits = a b^T / 0.5 = [[1.2, 0.0], [1.6, 2.0]]
    rows = ((-1.2 + _lse(1.2, 0.0)) + (-2.0 + _lse(1.6, 2.0))) / 2
    cols = ((-1.2 + _lse(1.2, 1.6)) + (-2.0 + _lse(0.0, 2.0))) / 2
    expected = 0.5 * (rows + cols)
    assert nce(a, b, 0.5).item() == pytest.approx(expected, rel=1e-6)
    assert inter_modal_nce(a, b, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_nce_temperature_point_one_on_orthogonal_pairs():
    e = torch.eye(3)
    # each row: positive logit 10, two negatives at 0
    assert nce(e, e, 0.1).item() == pytest.approx(-10 + _lse(10, 0, 0), abs=1e-6)


def test_intra_modal_sums_text_and_video_terms():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tn = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    v = torch.eye(2)
    expected = nce(t, tn, 0.1).item() + (-10 + _lse(10, 0))
    assert intra_modal_nce(t, tn, v, v, 0.1).item() == pytest.approx(expected, abs=1e-6)


def test_cross_lingual_leaves_out_rows_without_a_pair():
    a = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    b = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    valid = torch.tensor([True, False, True])
    # rows 0 and 2 only: logits / 0.1 = [[6, 0], [8, 10]]
    rows = ((-6 + _lse(6, 0)) + (-10 + _lse(8, 10))) / 2
    cols = ((-6 + _lse(6, 8)) + (-10 + _lse(0, 10))) / 2
    assert cross_lingual_nce(a, b, valid, 0.1).item() == pytest.approx(0.5 * (rows + cols), rel=1e-6)


def test_no_valid_pair_gives_zero_and_a_gradient_path():
    a = torch.randn(3, 4, requires_grad=True)
    loss = cross_lingual_nce(a, a.detach(), torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert a.grad is not None and torch.all(a.grad == 0)


PAIR_KEYS = ("text", "video", "text_noisy", "video_noisy", "pair_text", "pair_text_noisy", "pivot_a", "pivot_b")


def _random_out(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {k: torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=-1) for k in PAIR_KEYS}
    out["pair_valid"] = torch.tensor([True, True, False, True][:n])
    return out


def test_mmp_loss_is_the_sum_of_its_terms():
    out = _random_out()
    terms = mmp_loss(out, 0.1)
    assert set(terms) == {"inter", "intra", "xling", "loss"}
    assert terms["loss"].item() == pytest.approx(terms["inter"].item() + terms["intra"].item() + terms["xling"].item())


def _hand_nce(a, b, tau):
    """Symmetric InfoNCE of two lists of vectors, in plain Python."""
    logits = [[sum(x * y for x, y in zip(u, v)) / tau for v in b] for u in a]
    n = len(a)
    rows = sum(-logits[i][i] + _lse(*logits[i]) for i in range(n)) / n
    cols = sum(-logits[i][i] + _lse(*(logits[j][i] for j in range(n))) for i in range(n)) / n
    return 0.5 * (rows + cols)


def _unit(*x):
    norm = math.sqrt(sum(v * v for v in x))
    return [v / norm for v in x]


def test_full_objective_with_parallel_captions_matches_a_hand_computation():
    """Eq. 1-6 with parallel captions: L(X,V) + L(Y,V) + intra(X) + intra(V) + intra(Y) + cross-lingual,
    every y term over the rows with a parallel text only (row 1 has none)."""
    rows = {
        "text": [_unit(1, 0), _unit(0.6, 0.8), _unit(0, 1)],
        "video": [_unit(0.8, 0.6), _unit(0, 1), _unit(-0.6, 0.8)],
        "text_noisy": [_unit(0.9, 0.1), _unit(0.5, 0.9), _unit(0.1, 1)],
        "video_noisy": [_unit(0.7, 0.7), _unit(0.2, 1), _unit(-0.5, 0.9)],
        "pair_text": [_unit(0.9, 0.4), _unit(-1, 0), _unit(-0.3, 1)],
        "pair_text_noisy": [_unit(1, 0.3), _unit(0, -1), _unit(-0.2, 0.9)],
        "pivot_a": [_unit(1, 0.2), _unit(0.3, 0.3), _unit(0.1, 0.9)],
        "pivot_b": [_unit(0.8, 0.3), _unit(1, -1), _unit(0, 1)],
    }
    out = {k: torch.tensor(v) for k, v in rows.items()}
    out["pair_valid"] = torch.tensor([True, False, True])
    tau = 0.5
    keep = lambda k: [rows[k][0], rows[k][2]]  # noqa: E731
    inter = _hand_nce(rows["text"], rows["video"], tau) + _hand_nce(keep("pair_text"), keep("video"), tau)
    intra = (_hand_nce(rows["text"], rows["text_noisy"], tau) + _hand_nce(rows["video"], rows["video_noisy"], tau)
             + _hand_nce(keep("pair_text"), keep("pair_text_noisy"), tau))
    xling = _hand_nce(keep("pivot_a"), keep("pivot_b"), tau)
    terms = mmp_loss(out, tau, ("inter", "intra", "xling"))
    assert terms["inter"].item() == pytest.approx(inter, rel=1e-6)
    assert terms["intra"].item() == pytest.approx(intra, rel=1e-6)
    assert terms["xling"].item() == pytest.approx(xling, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(inter + intra + xling, rel=1e-6)


def test_rows_without_a_parallel_text_are_neither_positives_nor_negatives():
    out = _random_out()
    for k in PAIR_KEYS:
        out[k] = out[k].clone().requires_grad_(True)
    base = mmp_loss(out, 0.1)
    base["loss"].backward()
    for k in ("pair_text", "pair_text_noisy", "pivot_a", "pivot_b"):
        assert torch.all(out[k].grad[2] == 0), k  # row 2 has no pair: no gradient reaches its y embeddings
    moved = {k: v.detach().clone() for k, v in out.items()}
    for k in ("pair_text", "pair_text_noisy", "pivot_a", "pivot_b"):
        moved[k][2] = moved["video"][0]  # whatever row 2's y embeddings are, no term changes
    again = mmp_loss(moved, 0.1)
    for k in base:
        assert again[k].item() == pytest.approx(base[k].item(), rel=1e-6), k


def test_only_the_chosen_terms_are_computed_and_returned():
    out = _random_out()
    terms = mmp_loss(out, 0.1, ("inter", "intra"))
    assert set(terms) == {"inter", "intra", "loss"}
    # without xling the parallel text takes no part: the paper's pre-training objective
    assert terms["inter"].item() == pytest.approx(nce(out["text"], out["video"], 0.1).item(), rel=1e-6)
    assert terms["intra"].item() == pytest.approx(
        intra_modal_nce(out["text"], out["text_noisy"], out["video"], out["video_noisy"], 0.1).item(), rel=1e-6)
    assert set(mmp_loss(out, 0.1, ("xling",))) == {"xling", "loss"}
    no_pairs = {k: out[k] for k in ("text", "video", "text_noisy", "video_noisy")}
    assert mmp_loss(no_pairs, 0.1)["xling"].item() == 0.0  # a batch without parallel text
    with pytest.raises(ValueError, match="choose from"):
        mmp_loss(out, 0.1, ("inter", "cross"))


@pytest.mark.parametrize("text, message", [
    ("", "empty term"), ("inter,,intra", "empty term"), ("inter,cross", "unknown term 'cross'"),
    ("inter,inter", "names inter twice"),
])
def test_term_lists_are_checked(text, message):
    assert parse_terms("intra, xling") == ("intra", "xling") and parse_terms(",".join(TERMS)) == TERMS
    with pytest.raises(ValueError, match=message):
        parse_terms(text)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank, world, port, x_all, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = len(x_all) // world
    x = x_all[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    out = {"text": x, "video": x.flip(1), "text_noisy": x * 0.9, "video_noisy": x.flip(1) * 0.9,
           "pair_text": x.roll(2, 1), "pair_text_noisy": x.roll(2, 1) * 0.9, "pivot_a": x, "pivot_b": x.roll(1, 1),
           "pair_valid": torch.arange(n) % 2 == rank}
    loss = mmp_loss(out, 0.1)["loss"]
    loss.backward()
    torch.save({"loss": loss.detach(), "grad": x.grad}, os.path.join(out_dir, f"r{rank}.pt"))
    dist.destroy_process_group()


def test_gather_spans_the_global_batch_and_its_gradient_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    x_all = torch.nn.functional.normalize(torch.randn(6, 5, generator=torch.Generator().manual_seed(1)), dim=-1)
    mp.spawn(_gather_worker, args=(2, _free_port(), x_all, str(tmp_path)), nprocs=2, join=True)
    x = x_all.clone().requires_grad_(True)
    out = {"text": x, "video": x.flip(1), "text_noisy": x * 0.9, "video_noisy": x.flip(1) * 0.9,
           "pair_text": x.roll(2, 1), "pair_text_noisy": x.roll(2, 1) * 0.9, "pivot_a": x, "pivot_b": x.roll(1, 1),
           "pair_valid": torch.tensor([True, False, True, False, True, False])}
    loss = mmp_loss(out, 0.1)["loss"]
    loss.backward()
    parts = [torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(2)]
    for r, part in enumerate(parts):
        assert part["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        # each rank's gradient is world_size times its slice of the one-process gradient, so DDP's
        # average over ranks gives exactly the one-process parameter gradient
        assert torch.allclose(part["grad"], 2 * x.grad[r * 3:(r + 1) * 3], atol=1e-5)


def test_parallel_text_is_drawn_only_for_the_xling_term():
    """Without ``xling`` nothing reads the parallel text, so no clip carries one (no tokenising wasted)."""
    import random

    import numpy as np

    from model.clips import ClipConfig, caption_clip, pretrain_clip

    subs = {"tracks": {lang: {"cues": [[0.0, 30.0, f"{lang} words"]]} for lang in ("en", "de", "fr")}}
    video = np.zeros((30, 4), dtype=np.float16)
    captions = {"parallel": [{"en": "a cat", "de": "eine Katze"}], "captions": {"en": ["a dog"]}}
    for pairs in (True, False):
        cfg = ClipConfig(langs=("en", "de", "fr"), max_video_len=8, pairs=pairs)
        drawn = [pretrain_clip(subs, video, cfg, random.Random(s)) for s in range(20)]
        assert all((c[2] is not None) == pairs for c in drawn)
        cfg = ClipConfig(task="finetune", langs=("en", "de"), max_video_len=8, pairs=pairs)
        texts = [caption_clip(captions, video, cfg, random.Random(s)) for s in range(40)]
        assert {t[1] for t in texts} == {"a cat", "eine Katze", "a dog"}  # every caption is still drawn
        assert any(t[2] is not None for t in texts) == pairs

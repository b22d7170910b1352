"""The NCE losses against values computed by hand, and the cross-rank gather against one process."""
import math
import os
import socket

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny tensors on a shared machine: extra threads only wait on each other

from model.losses import cross_lingual_nce, inter_modal_nce, intra_modal_nce, mmp_loss, nce  # noqa: E402


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


def test_mmp_loss_is_the_sum_of_its_terms():
    g = torch.Generator().manual_seed(0)
    out = {k: torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
           for k in ("text", "video", "text_noisy", "video_noisy", "pivot_a", "pivot_b")}
    out["pair_valid"] = torch.tensor([True, True, False, True])
    terms = mmp_loss(out, 0.1)
    assert terms["loss"].item() == pytest.approx(terms["inter"].item() + terms["intra"].item() + terms["cross"].item())
    assert terms["inter"].item() == pytest.approx(nce(out["text"], out["video"], 0.1).item())


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
           "pivot_a": x, "pivot_b": x.roll(1, 1), "pair_valid": torch.ones(n, dtype=torch.bool)}
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
           "pivot_a": x, "pivot_b": x.roll(1, 1), "pair_valid": torch.ones(6, dtype=torch.bool)}
    loss = mmp_loss(out, 0.1)["loss"]
    loss.backward()
    parts = [torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(2)]
    for r, part in enumerate(parts):
        assert part["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        # each rank's gradient is world_size times its slice of the one-process gradient, so DDP's
        # average over ranks gives exactly the one-process parameter gradient
        assert torch.allclose(part["grad"], 2 * x.grad[r * 3:(r + 1) * 3], atol=1e-5)

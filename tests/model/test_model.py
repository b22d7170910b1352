"""The model: text encoder loading, frozen layers, embeddings; checkpoints load without unpickling."""
import json

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny tensors on a shared machine: extra threads only wait on each other
pytest.importorskip("transformers")

from model.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint  # noqa: E402
from model.mmp import MMPConfig, build_model  # noqa: E402
from model.text import TextModelError, load_text_encoder  # noqa: E402
from pipeline.runtime.hub import load_tokenizer  # noqa: E402
from tests.textmodel import build_text_model  # noqa: E402


def _config(text_dir, **kw):
    base = dict(text_model=str(text_dir), video_dim=24, d_model=16, output_layer=2, trainable_layers=1, dropout=0.0)
    base.update(kw)
    return MMPConfig(**base)


def _trained_layers(enc) -> list[int]:
    return [i + 1 for i, layer in enumerate(enc.backbone.encoder.layer) if all(p.requires_grad for p in layer.parameters())]


def test_text_trainable_layers_mean_what_the_paper_means(tmp_path_factory):
    """12 layers, output 12: 3 trainable = layers 10-12 (the paper's 'freeze below 9'); 0 = all frozen."""
    twelve = build_text_model(tmp_path_factory.mktemp("twelve"), hidden=16, layers=12)
    paper = load_text_encoder(str(twelve), output_layer=12, trainable_layers=3)
    assert _trained_layers(paper) == [10, 11, 12]
    assert not any(p.requires_grad for p in paper.backbone.embeddings.parameters())
    frozen = load_text_encoder(str(twelve), output_layer=12, trainable_layers=0)
    assert _trained_layers(frozen) == [] and not any(p.requires_grad for p in frozen.parameters())
    whole = load_text_encoder(str(twelve), output_layer=12, trainable_layers=12)
    assert all(p.requires_grad for p in whole.parameters())
    with pytest.raises(TextModelError, match="between 0 .all frozen. and the output layer 12"):
        load_text_encoder(str(twelve), output_layer=12, trainable_layers=13)
    # a checkpoint config written with the old field keeps what it trained: freeze_below 9 -> 4 layers
    old = json.loads(MMPConfig(text_model="-", video_dim=4).to_json())
    del old["trainable_layers"]
    old["freeze_below"] = 9
    assert MMPConfig.from_json(json.dumps(old)).trainable_layers == 4


def test_text_encoder_cuts_above_the_output_layer(text_dir):
    enc = load_text_encoder(str(text_dir), output_layer=2, trainable_layers=1)
    layers = enc.backbone.encoder.layer
    assert len(layers) == 2 and enc.backbone.pooler is None
    assert not any(p.requires_grad for p in enc.backbone.embeddings.parameters())
    assert _trained_layers(enc) == [2]
    cut = load_text_encoder(str(text_dir), output_layer=1, trainable_layers=1)
    assert len(cut.backbone.encoder.layer) == 1
    assert all(p.requires_grad for p in cut.parameters())


def test_text_model_errors_are_one_clear_sentence(tmp_path, text_dir):
    with pytest.raises(TextModelError, match="not a model directory"):
        load_tokenizer(str(tmp_path / "missing-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextModelError, match="without config.json"):
        load_text_encoder(str(tmp_path / "empty"), 2, 1)
    with pytest.raises(TextModelError, match="outside the model's 1..2 layers"):
        load_text_encoder(str(text_dir), 12, 9)


def _batch(tok, texts):
    from model.trainer.data import _pad

    ids, mask = _pad([tok(t)["input_ids"] for t in texts], tok.pad_token_id)
    return ids, mask


def test_embeddings_are_normalised_and_padding_does_not_change_them(text_dir):
    torch.manual_seed(0)
    model = build_model(_config(text_dir)).eval()
    tok = load_tokenizer(str(text_dir))
    ids, mask = _batch(tok, ["cut the onion", "cut the onion slowly in the pan with oil"])
    alone, alone_mask = _batch(tok, ["cut the onion"])
    with torch.no_grad():
        both = model.embed_text(ids, mask)
        one = model.embed_text(alone, alone_mask)
        assert torch.allclose(both.norm(dim=-1), torch.ones(2), atol=1e-5)
        assert torch.allclose(both[0], one[0], atol=1e-5)
        video = torch.randn(2, 7, 24)
        vmask = torch.ones(2, 7, dtype=torch.bool)
        vmask[0, 3:] = False
        v = model.embed_video(video, vmask)
        v0 = model.embed_video(video[:1, :3], vmask[:1, :3])
        assert torch.allclose(v[0], v0[0], atol=1e-5)
        pivot = model.embed_pivoted(ids, mask, model.video_tokens(video), vmask)
        assert pivot.shape == (2, 16)
        assert not torch.allclose(pivot, both)  # the text head did attend to the video


def _forward_batch(tok):
    ids, mask = _batch(tok, ["cut the onion", "boil water"])
    pair_ids, pair_mask = _batch(tok, ["schneiden zwiebel", "wasser kochen"])
    return {"text_ids": ids, "text_mask": mask, "noisy_ids": ids, "pair_ids": pair_ids, "pair_mask": pair_mask,
            "pair_noisy_ids": pair_ids, "pair_valid": torch.tensor([True, False]), "video": torch.randn(2, 5, 24),
            "video_mask": torch.ones(2, 5, dtype=torch.bool), "frame_noise": torch.zeros(2, 5, dtype=torch.bool)}


def test_forward_gives_every_embedding_the_losses_need(text_dir):
    from model.losses import mmp_loss

    torch.manual_seed(0)
    model = build_model(_config(text_dir, dropout=0.3))
    batch = _forward_batch(load_tokenizer(str(text_dir)))
    out = model(batch)
    assert {"text", "video", "text_noisy", "video_noisy", "pair_text", "pair_text_noisy", "pivot_a", "pivot_b"} <= set(out)
    loss = mmp_loss(out)["loss"]
    loss.backward()
    frozen = model.text.backbone.embeddings.word_embeddings.weight
    assert frozen.grad is None
    assert model.video_proj.weight.grad is not None and model.text_proj.weight.grad is not None


def test_without_pairs_the_pivot_branch_is_not_run_and_every_trained_parameter_still_learns(text_dir, monkeypatch):
    """What DDP (no find_unused_parameters) needs when --losses has no xling: the same parameters
    get a gradient as with it, while the parallel text is never embedded."""
    from model.losses import mmp_loss

    torch.manual_seed(0)
    model = build_model(_config(text_dir, dropout=0.0))
    batch = _forward_batch(load_tokenizer(str(text_dir)))
    mmp_loss(model(batch, with_pairs=True))["loss"].backward()
    with_pairs = {n for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    def refuse(*a, **k):
        raise AssertionError("the pivot branch ran without pairs")

    monkeypatch.setattr(model, "embed_pivoted", refuse)
    calls = []
    embed_text = model.embed_text
    monkeypatch.setattr(model, "embed_text", lambda ids, mask: calls.append(ids) or embed_text(ids, mask))
    out = model(batch, with_pairs=False)
    assert set(out) == {"text", "video", "text_noisy", "video_noisy"} and len(calls) == 2
    assert set(mmp_loss(out, 0.1, ("inter", "intra"))) == {"inter", "intra", "loss"}
    mmp_loss(out, 0.1, ("inter", "intra"))["loss"].backward()
    without = {n for n, p in model.named_parameters() if p.grad is not None}
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert without == with_pairs == trained


def test_checkpoint_round_trip_and_rebuild_without_weights(tmp_path, text_dir):
    torch.manual_seed(0)
    cfg = _config(text_dir)
    model = build_model(cfg)
    save_checkpoint(tmp_path, 7, model.state_dict(), None, model_config=cfg.to_json(), run_config={"lr": 1e-3},
                    data_position={"ranks": [{"0": [1, 5]}]})
    (tmp_path / ".ckpt-000009.pt.tmp-dead0000").write_bytes(b"half a checkpoint")  # a killed writer's leftover
    assert [s for s, _ in list_checkpoints(tmp_path)] == [7]
    ck = load_checkpoint(tmp_path)
    assert ck["step"] == 7 and ck["run_config"] == {"lr": 1e-3} and ck["data_position"]["ranks"][0]["0"] == [1, 5]
    cfg2 = MMPConfig.from_json(ck["model_config"])
    assert cfg2.text_config is not None
    rebuilt = build_model(cfg2)
    rebuilt.load_state_dict(ck["model"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, rebuilt.state_dict()[k]), k


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "ckpt-000001.pt"
    torch.save({"model": {}, "model_config": "{}", "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="pickled objects"):
        load_checkpoint(path)


def test_truncated_or_missing_checkpoint_is_a_clear_error(tmp_path, text_dir):
    cfg = _config(text_dir)
    model = build_model(cfg)
    path = save_checkpoint(tmp_path, 1, model.state_dict(), None, model_config=cfg.to_json(), run_config={},
                           data_position={})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(tmp_path / "empty-run")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "ckpt-000099.pt")

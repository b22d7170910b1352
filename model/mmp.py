"""The MMP model: a multilingual text encoder and a video encoder, each with a Transformer
pooling head, embedding text and video into one D-dimensional space.

Text: pretrained encoder states at the output layer -> linear to D -> 2-layer, 4-head
Transformer -> first token. Video: linear from the concatenated backbone features to D,
a learned first token, 2-layer Transformer -> first token. No positional embeddings in the
heads (the paper's choice; the text encoder has its own). For the visually-pivoted
cross-lingual loss the text head attends over text || video tokens.

The paper's S3D input is MIL-NCE's 512-d ``video_embedding``, the S3D checkpoint's ``fc``
applied to pooled mixed_5c; released and extracted features store the 1024-d mixed_5c.
With ``s3d_fc`` the model holds that fc as fixed buffers (never trained, saved with the
weights) and applies it to the s3d columns of its input, so a checkpoint evaluated or
fine-tuned later maps the same rows the same way without the file it came from.
"""
from __future__ import annotations

import json
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from shards.errors import UserError

from model.text import TextEncoder, load_text_encoder

# S3D's embedding layer in s3d_howto100m.pth: fc.weight [512, 1024], fc.bias [512].
S3D_FC_IN, S3D_FC_OUT = 1024, 512


class S3DFcError(UserError, ValueError):
    """An ``--s3d-fc`` file that does not hold S3D's embedding layer."""


@dataclass
class MMPConfig:
    text_model: str  # hub name or save_pretrained directory (tokenizer is read from it too)
    # width of the video projection's input: the concatenated feature width read from the
    # shards (1536 for r21d + s3d), or with s3d_fc that width after the map (512 + 512)
    video_dim: int
    video_features: list = field(default_factory=lambda: ["r21d", "s3d"])  # which members, in order
    d_model: int = 1024  # joint space and head width (paper: 1024)
    heads: int = 4  # attention heads in each pooling head
    layers: int = 2  # Transformer layers in each pooling head
    dropout: float = 0.3  # in the heads and after the projections
    output_layer: int = 12  # text encoder layer whose states feed the head (1-based)
    trainable_layers: int = 3  # top text encoder layers (up to output_layer) that are trained; the paper: 3
    temperature: float = 0.1  # softmax temperature of every NCE term
    text_config: dict | None = None  # the transformers config, so a checkpoint rebuilds without weights
    # The fixed S3D fc on the s3d columns: {"offset", "in_dim", "out_dim", "file", "sha256"}; its
    # weights are the model's buffers s3d_fc_weight / s3d_fc_bias. None: rows go in as stored.
    s3d_fc: dict | None = None
    # The video input layer (video_proj) trains at this multiple of the rate: 2 for a new input
    # layer on a pre-trained model (the paper's Multi30K region features), else 1.
    video_input_lr_scale: float = 1.0

    @property
    def row_dim(self) -> int:
        """Width of the feature rows the model takes from the shards (before the s3d fc)."""
        if self.s3d_fc is None:
            return self.video_dim
        return self.video_dim - self.s3d_fc["out_dim"] + self.s3d_fc["in_dim"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "MMPConfig":
        data = json.loads(text)
        if "freeze_below" in data:  # checkpoints written before the rename: layers >= freeze_below were trained
            below = data.pop("freeze_below")
            data["trainable_layers"] = data.get("output_layer", 12) - below + 1 if below > 0 else data.get("output_layer", 12)
        return cls(**data)


class PoolingHead(nn.Module):
    """A small Transformer over token vectors; its first output token is the embedding."""

    def __init__(self, d: int, heads: int, layers: int, dropout: float):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=4 * d, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        out = self.encoder(tokens, src_key_padding_mask=~valid.bool())
        return self.norm(out[:, 0])


class MMP(nn.Module):
    def __init__(self, config: MMPConfig, text: TextEncoder):
        super().__init__()
        self.config = config
        d = config.d_model
        self.text = text
        self.text_proj = nn.Linear(text.hidden_size, d)
        self.text_head = PoolingHead(d, config.heads, config.layers, config.dropout)
        self.video_proj = nn.Linear(config.video_dim, d)
        self.video_first = nn.Parameter(torch.randn(d) * 0.02)
        self.video_head = PoolingHead(d, config.heads, config.layers, config.dropout)
        self.drop = nn.Dropout(config.dropout)
        if config.s3d_fc is not None:
            fc = config.s3d_fc
            # buffers, not parameters: in the state dict (so in every checkpoint), never in the optimiser
            self.register_buffer("s3d_fc_weight", torch.zeros(fc["out_dim"], fc["in_dim"]))
            self.register_buffer("s3d_fc_bias", torch.zeros(fc["out_dim"]))

    def set_s3d_fc(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Fill the fixed S3D fc (from ``load_s3d_fc``) into a model built with ``s3d_fc``."""
        if self.config.s3d_fc is None:
            raise ValueError("this model was built without s3d_fc")
        with torch.no_grad():
            self.s3d_fc_weight.copy_(weight)
            self.s3d_fc_bias.copy_(bias)

    def video_input(self, video: torch.Tensor) -> torch.Tensor:
        """Feature rows ``[..., row_dim]`` as the video projection takes them ``[..., video_dim]``:
        widened from the stored float16 and, with ``s3d_fc``, the s3d columns mapped by S3D's fc
        (in float32 whatever the autocast: it stands for the backbone, not for the model)."""
        video = video.to(self.video_proj.weight.dtype)
        fc = self.config.s3d_fc
        if fc is None:
            return video
        a, b = fc["offset"], fc["offset"] + fc["in_dim"]
        with torch.autocast(device_type=video.device.type, enabled=False):
            s3d = F.linear(video[..., a:b].float(), self.s3d_fc_weight.float(), self.s3d_fc_bias.float())
        return torch.cat([video[..., :a], s3d.to(video.dtype), video[..., b:]], -1)

    # -- token states in the joint width
    def text_tokens(self, ids, mask):
        return self.drop(self.text_proj(self.text(ids, mask)))

    def video_tokens(self, video, noise=None):
        video = self.video_input(video)  # batches carry the stored float16 rows
        if noise is not None:
            video = video.masked_fill(noise.unsqueeze(-1), 0.0)  # masked frames carry no signal
        return self.drop(self.video_proj(video))

    # -- pooled, L2-normalised embeddings
    def embed_text(self, ids, mask):
        return F.normalize(self.text_head(self.text_tokens(ids, mask), mask.bool()), dim=-1)

    def _pool_video(self, tokens, video_mask):
        b = tokens.shape[0]
        first = self.video_first.to(tokens.dtype).expand(b, 1, -1)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=tokens.device), video_mask.bool()], 1)
        return F.normalize(self.video_head(torch.cat([first, tokens], 1), valid), dim=-1)

    def embed_video(self, video, video_mask, noise=None):
        return self._pool_video(self.video_tokens(video, noise), video_mask)

    def embed_pivoted(self, ids, mask, video_tokens, video_mask):
        """Text attending over its own tokens and the video's: the text's first token out."""
        tokens = torch.cat([self.text_tokens(ids, mask), video_tokens], 1)
        valid = torch.cat([mask.bool(), video_mask.bool()], 1)
        return F.normalize(self.text_head(tokens, valid), dim=-1)

    def forward(self, batch: dict, with_pairs: bool = True) -> dict:
        """All embeddings the losses need, for one batch from ``model.trainer.data.collate``.

        ``with_pairs`` adds the parallel text's embeddings (``pair_text`` and its masked copy
        ``pair_text_noisy``) and the pivoted ones (``pivot_a``, ``pivot_b``). The trainer turns it
        off when the run does not train ``xling`` or no sample has a parallel text: that branch
        then costs nothing, and the parameters it uses are the text branch's, so every trained
        parameter gets a gradient either way (DDP runs without ``find_unused_parameters``). A
        batch without ``pair_noisy_ids`` (one built by hand) takes ``pair_ids`` for the masked copy.
        """
        ids, mask = batch["text_ids"], batch["text_mask"]
        video, vmask = batch["video"], batch["video_mask"]
        vtok = self.video_tokens(video)
        out = {
            "text": self.embed_text(ids, mask),
            "video": self._pool_video(vtok, vmask),
            "text_noisy": self.embed_text(batch["noisy_ids"], mask),
            "video_noisy": self.embed_video(video, vmask, batch["frame_noise"]),
        }
        if with_pairs:
            pair_ids, pair_mask = batch["pair_ids"], batch["pair_mask"]
            out["pair_text"] = self.embed_text(pair_ids, pair_mask)
            out["pair_text_noisy"] = self.embed_text(batch.get("pair_noisy_ids", pair_ids), pair_mask)
            out["pivot_a"] = self.embed_pivoted(ids, mask, vtok, vmask)
            out["pivot_b"] = self.embed_pivoted(pair_ids, pair_mask, vtok, vmask)
            out["pair_valid"] = batch["pair_valid"]
        return out


def build_model(config: MMPConfig) -> MMP:
    """A model from pretrained text weights (``config.text_config`` None) or, when a checkpoint
    will supply every weight, from the saved transformers config."""
    text = load_text_encoder(config.text_model, config.output_layer, config.trainable_layers, config=config.text_config)
    if config.text_config is None:
        config.text_config = json.loads(text.backbone.config.to_json_string(use_diff=False))
    return MMP(config, text)


def load_s3d_fc(path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(weight [512, 1024], bias [512], sha256)`` of S3D's embedding layer from a checkpoint
    such as ``s3d_howto100m.pth`` (wrapped or not: ``features.weights.unwrap_state_dict``), read
    with ``torch.load(weights_only=True)``. Raises S3DFcError naming what is wrong."""
    from features.weights import WeightsError, file_sha256, unwrap_state_dict

    path = Path(path)
    want = f"fc.weight [{S3D_FC_OUT}, {S3D_FC_IN}] and fc.bias [{S3D_FC_OUT}]"
    if not path.is_file():
        raise S3DFcError(f"--s3d-fc {path} does not exist; pass the S3D checkpoint (s3d_howto100m.pth) whose {want} "
                         "map pooled mixed_5c to the 512-d embedding")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:  # a reference to Python code in the file: loading it would run that code
            raise S3DFcError(f"--s3d-fc {path} holds pickled Python objects, not only tensors; refusing to load "
                             f"it (torch.load weights_only=True refused {found.group(1)})") from None
        detail = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        reason = detail[0] if detail and "WeightsUnpickler error:" in str(exc) else type(exc).__name__
        raise S3DFcError(f"--s3d-fc {path} is not a readable PyTorch checkpoint ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise S3DFcError(f"--s3d-fc {path} is not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})") from None
    try:
        state = unwrap_state_dict(obj, source=f"--s3d-fc {path}")
    except WeightsError as exc:
        raise S3DFcError(str(exc)) from None
    weight, bias = state.get("fc.weight"), state.get("fc.bias")
    if weight is None or bias is None:
        raise S3DFcError(f"--s3d-fc {path} has no {want} (S3D's embedding layer); it holds "
                         f"{len(state)} tensors, e.g. {', '.join(sorted(state)[:4])}")
    if tuple(weight.shape) != (S3D_FC_OUT, S3D_FC_IN) or tuple(bias.shape) != (S3D_FC_OUT,):
        raise S3DFcError(f"--s3d-fc {path}: fc.weight is {list(weight.shape)} and fc.bias {list(bias.shape)}; "
                         f"expected {want}")
    if not (weight.is_floating_point() and bias.is_floating_point()):
        raise S3DFcError(f"--s3d-fc {path}: fc.weight and fc.bias are {weight.dtype} and {bias.dtype}, not floats")
    weight, bias = weight.float(), bias.float()
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise S3DFcError(f"--s3d-fc {path}: fc.weight or fc.bias holds NaN or infinite values")
    return weight, bias, file_sha256(path)

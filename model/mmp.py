"""The MMP model: a multilingual text encoder and a video encoder, each with a Transformer
pooling head, embedding text and video into one D-dimensional space.

Text: pretrained encoder states at the output layer -> linear to D -> 2-layer, 4-head
Transformer -> first token. Video: linear from the concatenated backbone features to D,
a learned first token, 2-layer Transformer -> first token. No positional embeddings in the
heads (the paper's choice; the text encoder has its own). For the visually-pivoted
cross-lingual loss the text head attends over text || video tokens.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .text import TextEncoder, load_text_encoder


@dataclass
class MMPConfig:
    text_model: str  # hub name or save_pretrained directory (tokenizer is read from it too)
    video_dim: int  # concatenated feature width, read from the shards (1536 for r21d + s3d)
    video_features: list = field(default_factory=lambda: ["r21d", "s3d"])  # which members, in order
    d_model: int = 1024  # joint space and head width (paper: 1024)
    heads: int = 4  # attention heads in each pooling head
    layers: int = 2  # Transformer layers in each pooling head
    dropout: float = 0.3  # in the heads and after the projections
    output_layer: int = 12  # text encoder layer whose states feed the head (1-based)
    freeze_below: int = 9  # text encoder layers below this one get no gradient
    temperature: float = 0.1  # softmax temperature of every NCE term
    text_config: dict | None = None  # the transformers config, so a checkpoint rebuilds without weights

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "MMPConfig":
        return cls(**json.loads(text))


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

    # -- token states in the joint width
    def text_tokens(self, ids, mask):
        return self.drop(self.text_proj(self.text(ids, mask)))

    def video_tokens(self, video, noise=None):
        video = video.to(self.video_proj.weight.dtype)  # batches carry the stored float16
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
        """All embeddings the losses need, for one batch from ``model.data.collate``."""
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
            out["pivot_a"] = self.embed_pivoted(ids, mask, vtok, vmask)
            out["pivot_b"] = self.embed_pivoted(batch["pair_ids"], batch["pair_mask"], vtok, vmask)
            out["pair_valid"] = batch["pair_valid"]
        return out


def build_model(config: MMPConfig) -> MMP:
    """A model from pretrained text weights (``config.text_config`` None) or, when a checkpoint
    will supply every weight, from the saved transformers config."""
    text = load_text_encoder(config.text_model, config.output_layer, config.freeze_below, config=config.text_config)
    if config.text_config is None:
        config.text_config = json.loads(text.backbone.config.to_json_string(use_diff=False))
    return MMP(config, text)

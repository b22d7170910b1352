"""The multilingual text encoder: a transformers model cut at an output layer, lower layers frozen.

A hub name (``xlm-roberta-large``, ``bert-base-multilingual-cased``) and a local directory
written by ``save_pretrained`` go through the same AutoModel / AutoTokenizer path, so the
tiny model the tests build is loaded exactly as a real one (the name's check and the tokenizer:
``pipeline.runtime.hub``, which mmp-stats' --tokenizer loads through too).
"""
from __future__ import annotations

import os

import torch
from torch import nn

from pipeline.runtime.hub import TextModelError, check_text_model


def _layers(model) -> nn.ModuleList:
    for path in ("encoder.layer", "encoder.layers", "layers", "transformer.layer"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, nn.ModuleList):
            return obj
    raise TextModelError(f"cannot find the layer stack of {type(model).__name__}")


class TextEncoder(nn.Module):
    """Token states at ``output_layer`` (1-based) of a pretrained encoder.

    Layers above the output layer are dropped (they would cost compute and never get a
    gradient, which DDP rejects). The top ``trainable_layers`` layers up to the output layer
    are trained and everything below them is frozen: the paper trains the top 3 of XLM-R's 12
    ("freeze below 9" in its wording: layers 10-12) and studies all 12 frozen (0). When every
    layer up to the output layer is trainable, the embeddings are too (the whole encoder).
    """

    def __init__(self, backbone, output_layer: int, trainable_layers: int):
        super().__init__()
        layers = _layers(backbone)
        if not 1 <= output_layer <= len(layers):
            raise TextModelError(f"--text-output-layer {output_layer} is outside the model's 1..{len(layers)} layers")
        if not 0 <= trainable_layers <= output_layer:
            raise TextModelError(f"--text-trainable-layers {trainable_layers} must be between 0 (all frozen) and "
                                 f"the output layer {output_layer} (all trained)")
        del layers[output_layer:]
        backbone.config.num_hidden_layers = output_layer
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None  # never used: the pooling head reads token states
        whole = trainable_layers == output_layer
        for p in backbone.get_input_embeddings().parameters():
            p.requires_grad_(whole)
        emb = getattr(backbone, "embeddings", None)
        if emb is not None:
            for p in emb.parameters():
                p.requires_grad_(whole)
        first_trained = output_layer - trainable_layers  # 0-based index of the lowest trained layer
        for i, layer in enumerate(layers):
            for p in layer.parameters():
                p.requires_grad_(i >= first_trained)
        self.trainable_layers = trainable_layers
        self.backbone = backbone
        self.hidden_size = backbone.config.hidden_size

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state


def load_text_encoder(name: str, output_layer: int, trainable_layers: int, *,
                      config: dict | None = None) -> TextEncoder:
    """From pretrained weights, or (``config`` given, when a checkpoint holds the weights)
    built from the saved transformers config without reading weights twice."""
    from transformers import AutoConfig, AutoModel

    if config is not None:
        cfg = AutoConfig.for_model(**config)
        backbone = AutoModel.from_config(cfg)
    else:
        check_text_model(name)
        try:
            backbone = AutoModel.from_pretrained(os.path.expanduser(name))
        except (OSError, ValueError) as exc:
            raise TextModelError(f"--text-model {name}: cannot load it ({str(exc).splitlines()[0]})") from exc
    return TextEncoder(backbone, output_layer, trainable_layers)

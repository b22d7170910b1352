"""bench/gpu_train.py's inputs: a text model of the asked size with a tokenizer from the corpus,
and the training shards it reads."""
from __future__ import annotations

import os
import time
from pathlib import Path

from shards.samples import LANGS


def build_text_model(directory: Path, texts: list, *, layers: int, hidden: int, heads: int, intermediate: int,
                     vocab: int, tokenizer_vocab: int) -> dict:
    """An XLM-R-shaped encoder with random weights and a small WordPiece tokenizer, saved
    with save_pretrained; returns what it took (seconds, parameters, bytes on disk)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]  # XLM-R's ids: <s> 0, <pad> 1, </s> 2, <unk> 3
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=tokenizer_vocab, special_tokens=specials,
                                                             show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                      sep_token="[SEP]", mask_token="[MASK]", strip_accents=False).save_pretrained(directory)
    t1 = time.perf_counter()
    cfg = XLMRobertaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=intermediate, max_position_embeddings=514, type_vocab_size=1,
                           layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    model = XLMRobertaModel(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    t2 = time.perf_counter()
    model.save_pretrained(directory)
    del model
    t3 = time.perf_counter()
    size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
    return {"tokenizer_s": t1 - t0, "init_s": t2 - t1, "save_s": t3 - t2, "params": n_params, "bytes": size,
            "tokenizer_vocab": tok.get_vocab_size()}


def write_inputs(tmp: Path, args) -> tuple[Path, Path]:
    from demo.sample import load_texts
    from train import write_shards  # bench/train.py: the shards bench/train.py measures the loader on

    from pipeline.runtime.hub import load_tokenizer

    corpus = [s for t in load_texts().values() for lang in LANGS for s in t.get(lang, [])]
    text_dir = tmp / "xlmr-shaped"
    info = build_text_model(text_dir, corpus, layers=args.layers, hidden=args.hidden, heads=args.attn_heads,
                            intermediate=args.intermediate, vocab=args.vocab, tokenizer_vocab=args.tokenizer_vocab)
    tokenizer = load_tokenizer(str(text_dir))  # the trainer's own load path; fails here before any timing
    print(f"text encoder: XLMRobertaConfig {args.layers} layers, hidden {args.hidden}, {args.attn_heads} heads, "
          f"intermediate {args.intermediate}, vocab {args.vocab}: {info['params'] / 1e6:.1f} M parameters, random "
          f"init {info['init_s']:.1f} s, save_pretrained {info['save_s']:.1f} s, {info['bytes'] / 1e9:.2f} GB; "
          f"tokenizer {type(tokenizer).__name__} with {info['tokenizer_vocab']} pieces (pad id "
          f"{tokenizer.pad_token_id}, mask id {tokenizer.mask_token_id}), learnt in {info['tokenizer_s']:.1f} s")
    shard_dir = tmp / "mmp"
    shard_dir.mkdir()
    t0 = time.perf_counter()
    paths = write_shards(shard_dir, args.videos, args.seconds, args.per_shard)
    mb = sum(os.path.getsize(p) for p in paths) / 1e6
    print(f"shards: {len(paths)} tars, {args.videos} videos of {args.seconds} s (r21d 512 + s3d 1024 float16, "
          f"9 languages), {mb:.0f} MB, written in {time.perf_counter() - t0:.1f} s")
    return text_dir, shard_dir

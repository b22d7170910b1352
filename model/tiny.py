"""A tiny random BERT-like text model with a WordPiece tokenizer trained on given text.

For smoke runs (``make demo``), tests and benchmarks on machines that cannot download a
real encoder. It is saved with ``save_pretrained``, so ``--text-model DIR`` loads it
through AutoModel / AutoTokenizer exactly as it loads ``xlm-roberta-large``. Its outputs
mean nothing until it is trained: never report numbers from it as the paper's.
"""
from __future__ import annotations

from pathlib import Path

LAYERS = 2  # use --text-output-layer 2 --text-trainable-layers 2 with this model


def build_text_model(directory: Path, texts: list[str] | None = None, hidden: int = 32, layers: int = LAYERS,
                     dropout: float = 0.0, vocab_size: int = 400, extra_words: tuple = ()) -> Path:
    """Write the model and tokenizer to ``directory`` (once) and return it."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    corpus = list(texts or []) + list(extra_words)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", strip_accents=False)
    fast.save_pretrained(directory)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=256,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory

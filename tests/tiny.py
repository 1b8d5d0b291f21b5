"""Tiny, randomly initialised Llama models and an offline word-level tokenizer, for fast tests."""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from pathlib import Path

import torch

from sae_lab.models import LoadedModel, wrap_hf_model

SPECIALS = ["<unk>", "<bos>", "<eos>", "<pad>"]


def tiny_tokenizer(vocab_size: int = 512):
    """A word-level tokenizer whose vocabulary is the most common words of Python's docs."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Counter(w for text in topics.values() for w in re.findall(r"\w+|[^\w\s]", text))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for word, _ in words.most_common(vocab_size - len(SPECIALS)):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    # TransformerLens reloads tokenizers by path, so give this one a directory of its own.
    from transformers import AutoTokenizer

    where = Path(tempfile.gettempdir()) / f"sae_lab_tiny_tokenizer_{vocab_size}_{os.getpid()}"
    fast.save_pretrained(where)
    return AutoTokenizer.from_pretrained(where)


def tiny_llama(n_layers: int = 4, d_model: int = 64, seed: int = 0, vocab_size: int = 512) -> LoadedModel:
    """A random LlamaForCausalLM wrapped in a TransformerBridge."""
    model, tok = tiny_hf(n_layers, d_model, seed, vocab_size)
    return wrap_hf_model(model, tok, "tiny-llama", name="tiny-llama")


def tiny_hf(n_layers: int = 4, d_model: int = 64, seed: int = 0, vocab_size: int = 512):
    """A random LlamaForCausalLM and its tokenizer (plain Hugging Face objects)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = tiny_tokenizer(vocab_size)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(cfg), tok

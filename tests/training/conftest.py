"""Fixtures for the torch tests: offline hub, small threads, a tiny local Llama checkpoint."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory):
    """A Llama-architecture checkpoint (random, tiny) + word-level tokenizer, saved locally."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    from training.data import load_reviews

    data = load_reviews()
    words = sorted({w for text in data.train_texts + data.test_texts for w in text.lower().replace(".", " . ").replace(",", " , ").split()})
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3} | {w: i + 4 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    from tokenizers import normalizers

    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    import torch

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=3, bos_token_id=1, eos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def small_data():
    """A slice of the reviews task (keeps the CPU tests fast; the full set is tested in test_run)."""
    pytest.importorskip("torch")
    from training.data import TextClassificationData, load_reviews

    data = load_reviews()
    return TextClassificationData(
        label_names=data.label_names,
        train_texts=data.train_texts[:32], train_labels=data.train_labels[:32],
        test_texts=data.test_texts[:16], test_labels=data.test_labels[:16],
    )

"""Tiny random-weight models of the families SAEs are published for, built offline.

Each family is built from its `transformers` config class (3 layers, d_model 64) with a byte-level
tokenizer built here: no hub, a fraction of a second per model. Shared by the tests of our hook
points against HF (`test_model_families.py`) and against TransformerLens (`test_transformer_lens.py`).
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, Gemma2Config, GPT2Config, GPTNeoXConfig, LlamaConfig,
                          PreTrainedTokenizerFast, Qwen2Config)

from saebench_scaffold.sources.model import LanguageModel, ModelSpec

D_MODEL, N_LAYERS, N_HEADS = 64, 3, 4
SPECIALS = ["<bos>", "<eos>", "<pad>"]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with no merges: every byte is a token, ids 3..258; 0-2 are special."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({c: i + len(SPECIALS) for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))})
    t = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


TOKENIZER = byte_tokenizer()
VOCAB = len(TOKENIZER)
IDS = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=1, pad_token_id=2)
DECODER = dict(hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, intermediate_size=128,
               max_position_embeddings=256, **IDS)
FAMILIES = {
    "llama": lambda: LlamaConfig(num_key_value_heads=2, **DECODER),
    # sliding_window below the test length, so the sliding layers' mask really differs from causal
    "gemma2": lambda: Gemma2Config(num_key_value_heads=2, head_dim=16, sliding_window=4, **DECODER),
    "gpt2": lambda: GPT2Config(n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS, n_positions=256, **IDS),
    "gpt_neox": lambda: GPTNeoXConfig(**DECODER),
    "qwen2": lambda: Qwen2Config(num_key_value_heads=2, **DECODER),
}


def tiny_model(family: str, config=None) -> LanguageModel:
    """The tiny model of `family` (seeded: the same weights every call); `config` overrides its config."""
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(config if config is not None else FAMILIES[family](), dtype=torch.float32)
    return LanguageModel(ModelSpec(name=f"tiny-{family}", device="cpu"), hf, TOKENIZER, f"tiny-{family}")


def random_tokens(n=2, ctx=12, seed=1) -> torch.Tensor:
    """[n, ctx] non-special byte tokens with BOS at position 0."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(len(SPECIALS), VOCAB, (n, ctx), generator=g)
    t[:, 0] = TOKENIZER.bos_token_id
    return t

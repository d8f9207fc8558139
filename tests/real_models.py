"""Random-init models in the real formats, made by the tests (nothing is downloaded): an open_clip checkpoint file of a
real architecture, and a Hugging Face GPT-2 directory (save_pretrained) with a byte-level BPE tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch


def open_clip_checkpoint(path: Path, model: str = "ViT-B-32", seed: int = 0) -> Path:
    """A randomly initialised open_clip model saved as the {"state_dict": ...} checkpoint open_clip loads from a
    file."""
    import open_clip

    from listener_sub.models.listener import register_model_configs

    register_model_configs()  # the package's small configs (ls-rn-tiny-64, ...) too
    torch.manual_seed(seed)
    clip = open_clip.create_model(model, pretrained=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": clip.state_dict()}, path)
    return path


def gpt2_directory(
    path: Path,
    texts: list[str],
    n_layer: int = 12,
    n_embd: int = 768,
    n_head: int = 12,
    vocab_size: int | None = 50257,
    seed: int = 0,
) -> Path:
    """A randomly initialised GPT-2 (12 layers x 768 and 50,257 embedding rows: the 124M model's shape by default) and a
    byte-level BPE tokenizer trained on `texts` (a few hundred tokens), both written with save_pretrained.
    vocab_size None: as many embedding rows as the tokenizer has tokens."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from listener_sub.bench import byte_level_tokenizer

    tokenizer = byte_level_tokenizer(texts)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size or len(tokenizer),
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path

"""Random-init vision-language models in the real format, for measuring and testing without downloads: an Idefics3
(SmolVLM's architecture: a SigLIP-style tower, pixel shuffle, a Llama) of a named size, saved with `save_pretrained`
beside its processor (the given tokenizer with the image tokens added and a chat template), so that
`create_vlm_speaker(path)` loads it like any hub VLM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

IMAGE_TOKENS = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : {% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


@dataclass(frozen=True)
class VLMSize:
    """The sizes of an Idefics3: its vision tower, pixel shuffle and language model."""

    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    image_size: int  # the side the tower reads (the processor resizes to it)
    patch_size: int
    scale_factor: int  # pixel shuffle: (image_size / patch_size / scale_factor)^2 image tokens
    text_width: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_mlp: int
    vocab_rows: int | None  # embedding rows (None: the tokenizer's size)

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size // self.scale_factor) ** 2


VLM_SIZES = {
    "tiny": VLMSize(32, 1, 2, 64, 32, 8, 2, 32, 2, 2, 2, 64, None),  # 4 image tokens; seconds on a CPU
    # SmolVLM-256M's published sizes: a 12-layer 768-wide SigLIP at 512 px (16 px patches, shuffled by 4: 64 image
    # tokens) and SmolLM2-135M (30 layers, 576 wide, 9 heads, 3 KV heads, 49,280 embedding rows)
    "smolvlm-256m": VLMSize(768, 12, 12, 3072, 512, 16, 4, 576, 30, 9, 3, 1536, 49280),
}


def with_image_tokens(tokenizer: Any) -> Any:
    """The tokenizer with Idefics3's image tokens added as special tokens and the chat template set."""
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_random_vlm(path: str | Path, tokenizer: Any, size: VLMSize, seed: int = 0) -> Path:
    """A random-init Idefics3 of `size` with its processor (`tokenizer` gains the image tokens), saved at `path`."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    tokenizer = with_image_tokens(tokenizer)
    eos = tokenizer.eos_token_id
    text = LlamaConfig(
        vocab_size=size.vocab_rows or len(tokenizer), hidden_size=size.text_width, intermediate_size=size.text_mlp,
        num_hidden_layers=size.text_layers, num_attention_heads=size.text_heads, num_key_value_heads=size.text_kv_heads,
        max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, bos_token_id=eos,
        tie_word_embeddings=False,
    )  # fmt: skip
    vision = Idefics3VisionConfig(
        hidden_size=size.vision_width, intermediate_size=size.vision_mlp, num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads, image_size=size.image_size, patch_size=size.patch_size,
    )  # fmt: skip
    config = Idefics3Config(
        vision_config=vision, text_config=text, scale_factor=size.scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Idefics3ForConditionalGeneration(config).save_pretrained(path)
    images = Idefics3ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": size.image_size},
        max_image_size={"longest_edge": size.image_size},
    )
    Idefics3Processor(images, tokenizer, image_seq_len=size.image_tokens, chat_template=CHAT_TEMPLATE).save_pretrained(
        path
    )
    return Path(path)

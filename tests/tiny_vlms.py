"""Tiny random-init vision-language models in the real formats, made by the tests: a LLaVA (CLIP vision tower +
Llama) and an Idefics3 / SmolVLM (its own vision tower + Llama; the library's `save_random_vlm`), each saved with
`save_pretrained` beside its processor (a word-level tokenizer trained here on the world's caption words, the image
tokens and a chat template added)."""

from __future__ import annotations

from pathlib import Path

import torch
from test_speaker import caption_words
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from listener_sub.models.random_vlm import CHAT_TEMPLATE, VLM_SIZES, save_random_vlm, with_image_tokens

SPECIAL = ["[PAD]", "[EOS]", "[UNK]"]
CHAT_WORDS = ["user", "assistant", ":", "describe", "the", "image", "in", "few", "words", "picture"]
SIDE = 32  # image side the tiny towers read
PATCH = 8


def vlm_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the caption and prompt words, its special tokens (the image token among them)."""
    words = list(dict.fromkeys(caption_words() + CHAT_WORDS))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(SPECIAL + words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")
    return with_image_tokens(fast)


def text_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip


def save_llava(path: Path, seed: int = 0) -> Path:
    """A LLaVA with a CLIP ViT (32x32 images, 8x8 patches: 16 image tokens) and a 2-layer Llama."""
    tokenizer = vlm_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=SIDE,
        patch_size=PATCH, projection_dim=32,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-1, projector_hidden_act="gelu",
    )  # fmt: skip
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    images = CLIPImageProcessor(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE})
    processor = LlavaProcessor(
        image_processor=images, tokenizer=tokenizer, patch_size=PATCH, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,  # the CLS token, which "default" drops
    )  # fmt: skip
    processor.save_pretrained(path)
    return path


def save_idefics3(path: Path, seed: int = 0) -> Path:
    """An Idefics3 (SmolVLM's architecture) of the library's tiny size: a SigLIP-style tower (32x32, 8x8 patches, pixel
    shuffle by 2: 4 image tokens), no image splitting, a 2-layer Llama."""
    return save_random_vlm(path, vlm_tokenizer(), VLM_SIZES["tiny"], seed)

"""The embedded VLM: a LLaVA built from a locally trained open_clip ViT and a small Llama, trained by captioning.

`speaker=vlm` with no `speaker.name` plays with this model: a real Hugging Face `LlavaForConditionalGeneration` saved
with `save_pretrained` beside its `LlavaProcessor`, so it loads and trains (LoRA) through the same path as any hub VLM.
Its vision tower is the open_clip ViT's own weights, converted exactly into transformers' `CLIPVisionModel` (the
patch tokens of its last layer, the class token dropped, are the image tokens); the projector, the Llama and its
head are trained on captions of the pretraining images, the tower frozen -- the counterpart of the adapter speaker's
captioning warm-up.

    model, processor = build_llava(clip_visual, tokenizer, VLMRecipe())
    train_vlm_captioner(model, processor, images, captions, VLMRecipe(), prompt="Describe the image.")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from listener_sub.models.vlm import lora_targets, prompt_text
from listener_sub.optim import Schedule
from listener_sub.pretrain.lm import IGNORE, train_tokenizer
from listener_sub.pretrain.speaker import fit_captions
from listener_sub.world import Vocabulary

if TYPE_CHECKING:
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

IMAGE_TOKEN = "<image>"
CONTEXT = 256  # the Llama's positions: the prompt with its image tokens and the longest caption fit with room


@dataclass
class VLMRecipe:
    """The embedded VLM (speaker=vlm without a name): its vision CLIP, its Llama's sizes and how it is trained by
    captioning (every field is part of its cache key)."""

    vision_model: str = "ls-vit-tiny-64"  # an open_clip ViT, trained locally like a full-colour listener
    vision_seed: int = 1  # that CLIP's training seed
    text_width: int = 128  # the Llama's hidden size
    text_layers: int = 2
    text_heads: int = 4
    text_mlp: int = 512  # the Llama's MLP width
    steps: int = 1500  # optimizer steps
    batch_size: int = 64  # images per step, one random caption each
    lr: float = 2e-3  # AdamW peak learning rate
    # linear warmup, then a cosine decay to a tenth of the peak rate
    schedule: Schedule = field(default_factory=lambda: Schedule(warmup=50, floor=0.1))
    weight_decay: float = 0.01  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping (global L2 norm)
    scenes: int = 8000  # images of the pretraining split
    per_scene: int = 5  # captions per scene
    seed: int = 0  # the Llama's initialisation, batch order and caption choice


def clip_vision_config(visual: nn.Module) -> CLIPVisionConfig:
    """The transformers `CLIPVisionConfig` of an open_clip `VisionTransformer` (class-token pooling, GELU, no attention
    pooler): ValueError for any other tower."""
    from open_clip.transformer import VisionTransformer
    from transformers import CLIPVisionConfig

    if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None or visual.pool_type != "tok":
        kind = type(visual).__name__
        raise ValueError(f"the embedded VLM needs an open_clip ViT with class-token pooling, not a {kind}")
    block = visual.transformer.resblocks[0]
    if not isinstance(block.mlp.gelu, nn.GELU):
        raise ValueError("the embedded VLM needs a ViT with GELU (not QuickGELU) activations")
    width, layers = visual.transformer.width, len(visual.transformer.resblocks)
    return CLIPVisionConfig(
        hidden_size=width, intermediate_size=block.mlp.c_fc.out_features, num_hidden_layers=layers,
        num_attention_heads=block.attn.num_heads, image_size=visual.image_size[0], patch_size=visual.patch_size[0],
        hidden_act="gelu", layer_norm_eps=block.ln_1.eps, projection_dim=width,
    )  # fmt: skip


def clip_vision_state(visual: nn.Module) -> dict[str, torch.Tensor]:
    """An open_clip ViT's weights under `CLIPVisionModel.vision_model`'s names (q, k, v split out of in_proj)."""
    state = {
        "embeddings.class_embedding": visual.class_embedding,
        "embeddings.patch_embedding.weight": visual.conv1.weight,
        "embeddings.position_embedding.weight": visual.positional_embedding,
        "pre_layrnorm.weight": visual.ln_pre.weight,
        "pre_layrnorm.bias": visual.ln_pre.bias,
        "post_layernorm.weight": visual.ln_post.weight,
        "post_layernorm.bias": visual.ln_post.bias,
    }
    for i, block in enumerate(visual.transformer.resblocks):
        layer = f"encoder.layers.{i}."
        q, k, v = block.attn.in_proj_weight.chunk(3)  # (W, W) each
        qb, kb, vb = block.attn.in_proj_bias.chunk(3)  # (W,) each
        state |= {
            layer + "self_attn.q_proj.weight": q, layer + "self_attn.q_proj.bias": qb,
            layer + "self_attn.k_proj.weight": k, layer + "self_attn.k_proj.bias": kb,
            layer + "self_attn.v_proj.weight": v, layer + "self_attn.v_proj.bias": vb,
            layer + "self_attn.out_proj.weight": block.attn.out_proj.weight,
            layer + "self_attn.out_proj.bias": block.attn.out_proj.bias,
            layer + "layer_norm1.weight": block.ln_1.weight, layer + "layer_norm1.bias": block.ln_1.bias,
            layer + "layer_norm2.weight": block.ln_2.weight, layer + "layer_norm2.bias": block.ln_2.bias,
            layer + "mlp.fc1.weight": block.mlp.c_fc.weight, layer + "mlp.fc1.bias": block.mlp.c_fc.bias,
            layer + "mlp.fc2.weight": block.mlp.c_proj.weight, layer + "mlp.fc2.bias": block.mlp.c_proj.bias,
        }  # fmt: skip
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def vlm_tokenizer(captions: list[str], prompt: str, vocab: Vocabulary) -> PreTrainedTokenizerFast:
    """The word-level tokenizer of the captions and the prompt (the embedded LM's kind), with the image token added."""
    tokenizer = train_tokenizer([*captions, prompt], vocab)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer


def llama_config(recipe: VLMRecipe, vocab_size: int, pad_id: int, eos_id: int) -> LlamaConfig:
    """The embedded VLM's language model: a Llama of the recipe's sizes."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=recipe.text_width, intermediate_size=recipe.text_mlp,
        num_hidden_layers=recipe.text_layers, num_attention_heads=recipe.text_heads,
        num_key_value_heads=recipe.text_heads, max_position_embeddings=CONTEXT, pad_token_id=pad_id,
        eos_token_id=eos_id, bos_token_id=eos_id, tie_word_embeddings=False,
    )  # fmt: skip


def check_recipe(recipe: VLMRecipe, target_modules: list[str]) -> str | None:
    """What makes the embedded VLM's recipe unusable with these LoRA targets, in one line (None: nothing), from models
    built on the meta device (no weights): a vision CLIP that is no plain ViT, a Llama without the target modules."""
    from transformers import LlamaForCausalLM

    from listener_sub.models.listener import clip_skeleton

    try:
        clip_vision_config(clip_skeleton(recipe.vision_model).visual)
    except (RuntimeError, ValueError) as error:
        return f"speaker.train.vision_model={recipe.vision_model}: {str(error).splitlines()[0]}"
    with torch.device("meta"):
        llama = LlamaForCausalLM(llama_config(recipe, vocab_size=8, pad_id=1, eos_id=2))
    try:
        lora_targets(llama, list(target_modules))
    except ValueError as error:
        return f"speaker.target_modules={list(target_modules)}: {error}"
    return None


def build_llava(
    visual: nn.Module, mean: torch.Tensor, std: torch.Tensor, tokenizer: PreTrainedTokenizerFast, recipe: VLMRecipe
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A LLaVA of the open_clip ViT `visual` (its weights, frozen; `mean`/`std` its normalisation) and a fresh Llama
    of the recipe's sizes (initialised from recipe.seed on a forked RNG), with its processor."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    vision = clip_vision_config(visual)
    text = llama_config(recipe, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default", vision_feature_layer=-1, projector_hidden_act="gelu",
        image_seq_length=(vision.image_size // vision.patch_size) ** 2, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(clip_vision_state(visual))
    model.model.vision_tower.requires_grad_(False)
    side = vision.image_size
    images = CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, resample=3,
        image_mean=mean.flatten().tolist(), image_std=std.flatten().tolist(),
    )  # fmt: skip
    processor = LlavaProcessor(
        image_processor=images, tokenizer=tokenizer, patch_size=vision.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the class token, which "default" drops
    )  # fmt: skip
    return model, processor


def caption_batch(
    processor: LlavaProcessor, prompt: str, images: np.ndarray, texts: list[str]
) -> dict[str, torch.Tensor]:
    """[prompt with the image; caption; EOS] rows, right-padded, labels on the caption and EOS only."""
    tokenizer = processor.tokenizer
    inputs = processor(text=[prompt] * len(images), images=[[image] for image in images], return_tensors="pt")
    ids, P = inputs["input_ids"], inputs["input_ids"].shape[1]  # (B, P): every row the same prompt
    captions = [tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for text in texts]
    L = max(len(c) for c in captions)
    caption_ids = torch.full((len(texts), L), tokenizer.pad_token_id, dtype=torch.long)  # (B, L)
    caption_mask = torch.zeros(len(texts), L, dtype=torch.long)  # (B, L)
    for row, caption in enumerate(captions):
        caption_ids[row, : len(caption)] = torch.tensor(caption)
        caption_mask[row, : len(caption)] = 1
    labels = torch.cat([torch.full((len(texts), P), IGNORE), caption_ids.masked_fill(caption_mask == 0, IGNORE)], 1)
    return {
        "input_ids": torch.cat([ids, caption_ids], 1),  # (B, P + L)
        "attention_mask": torch.cat([inputs["attention_mask"], caption_mask], 1),  # (B, P + L)
        "pixel_values": inputs["pixel_values"],  # (B, 3, S, S)
        "labels": labels,  # (B, P + L)
    }


def train_vlm_captioner(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    images: np.ndarray,
    captions: list[list[str]],
    recipe: VLMRecipe,
    prompt: str,
    progress: bool = True,
) -> list[float]:
    """AdamW on everything but the vision tower: each step a random batch of images (N, H, W, 3) uint8, one random
    caption each, the cross-entropy of the caption after the prompt (`prompt`: the user's turn, as the speaker asks)."""
    if len(images) != len(captions):
        raise ValueError(f"need at least one caption per image: {len(images)} images, {len(captions)} caption lists")
    text = prompt_text(processor, prompt)
    model.train()

    def loss(index: np.ndarray, texts: list[str]) -> torch.Tensor:
        return model(**caption_batch(processor, text, images[index], texts), use_cache=False).loss

    params = [p for p in model.parameters() if p.requires_grad]
    losses = fit_captions(params, loss, captions, recipe, "VLM captioning", progress)
    model.eval()
    return losses

"""Speaker recipe: supervised captioning of the adapter (vision tower and LM stay frozen)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from listener_sub.models.speaker import Speaker
from listener_sub.optim import adamw, warmup_cosine


@dataclass
class CaptionerRecipe:
    """How the captioning adapter is trained (every field is part of its cache key)."""

    steps: int = 1200  # optimizer steps (600 left sampled captions 0.875 truthful)
    batch_size: int = 64  # images per step, one random caption each
    lr: float = 2e-3  # AdamW peak learning rate
    warmup: int = 50  # steps of linear warmup, then cosine decay
    min_lr_factor: float = 0.1  # the cosine decay ends at this fraction of the peak rate
    weight_decay: float = 0.01  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping (global L2 norm)
    scenes: int = 8000  # train-split scenes (synthetic world)
    per_scene: int = 5  # captions per scene
    seed: int = 0  # batch order and caption choice


def train_captioner(
    speaker: Speaker, images: np.ndarray, captions: list[list[str]], recipe: CaptionerRecipe = CaptionerRecipe(), progress: bool = True
) -> list[float]:
    """AdamW on the adapter: each step a random batch of images (N, H, W, 3) uint8, one random caption each."""
    if len(images) != len(captions) or not all(captions):
        raise ValueError(f"need at least one caption per image: {len(images)} images, {len(captions)} caption lists")
    rng = np.random.default_rng(recipe.seed)
    params = list(speaker.adapter.parameters())
    optimizer = adamw(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, recipe.steps, recipe.warmup, recipe.min_lr_factor)
    )
    speaker.train()
    losses = []
    bar = tqdm(range(recipe.steps), desc="speaker captioning", disable=not progress)
    for _ in bar:
        index = rng.choice(len(images), size=min(recipe.batch_size, len(images)), replace=False)  # (b,)
        texts = [captions[i][rng.integers(len(captions[i]))] for i in index]
        loss = speaker.caption_loss(images[index], texts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    speaker.eval()
    return losses

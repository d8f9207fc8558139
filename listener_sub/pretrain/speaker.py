"""Speaker recipe: supervised captioning of the adapter (vision tower and LM stay frozen)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from listener_sub.models.speaker import Speaker, VisionFeatures
from listener_sub.optim import Schedule, adamw, key_fields, lr_scheduler
from listener_sub.pretrain.progress import StepProgress

FEATURE_BYTES = 1 << 30  # the training images' vision features are kept in memory up to this size
FEATURE_CHUNK = 512  # images per vision-tower pass when computing them


@dataclass
class CaptionerRecipe:
    """How the captioning adapter is trained (every field is part of its cache key)."""

    steps: int = 1200  # optimizer steps (600 left sampled captions 0.875 truthful)
    batch_size: int = 64  # images per step, one random caption each
    lr: float = 2e-3  # AdamW peak learning rate
    # linear warmup, then a cosine decay to a tenth of the peak rate
    schedule: Schedule = field(default_factory=lambda: Schedule(warmup=50, floor=0.1))
    weight_decay: float = 0.01  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping (global L2 norm)
    scenes: int = 8000  # images of the pretraining split (the embedded world's: every combination, the broad style)
    per_scene: int = 5  # captions per scene
    seed: int = 0  # batch order and caption choice

    def key_fields(self) -> dict[str, Any]:
        """The settings the captioning adapter's cache key reads (`optim.key_fields`)."""
        s = self.schedule
        return key_fields(self, {"warmup": s.warmup, "min_lr_factor": s.floor}, Schedule(s.warmup, s.floor))


def vision_features(speaker: Speaker, images: np.ndarray) -> VisionFeatures | None:
    """The frozen vision tower's features of every image (N, H, W, 3), FEATURE_CHUNK images a pass; None when they would
    take more than FEATURE_BYTES (the training step then encodes its batch)."""
    first = speaker.encode(images[:1])
    per_image = (first.pooled.numel() + first.tokens.numel()) * first.pooled.element_size()
    if per_image * len(images) > FEATURE_BYTES:
        return None
    return VisionFeatures.cat(
        [speaker.encode(images[start : start + FEATURE_CHUNK]) for start in range(0, len(images), FEATURE_CHUNK)]
    )


def fit_captions(
    params: list[torch.nn.Parameter],
    loss: Callable[[np.ndarray, list[str]], torch.Tensor],
    captions: list[list[str]],
    recipe: CaptionerRecipe | Any,
    desc: str,
    progress: bool = True,
) -> list[float]:
    """The captioning loop both captioners share: AdamW on `params` by `recipe` (its lr, weight_decay, schedule,
    steps, batch_size, max_grad_norm, seed); each step a random batch of image indices (b,), one random caption each,
    and `loss(index, texts)`. Returns each step's loss."""
    if not all(captions):
        raise ValueError(f"need at least one caption per image: {sum(not c for c in captions)} image(s) have none")
    rng = np.random.default_rng(recipe.seed)
    optimizer = adamw(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = lr_scheduler(optimizer, recipe.schedule, recipe.steps)
    losses = []
    bar = StepProgress(recipe.steps, desc, progress)
    for _ in bar:
        index = rng.choice(len(captions), size=min(recipe.batch_size, len(captions)), replace=False)  # (b,)
        texts = [captions[i][rng.integers(len(captions[i]))] for i in index]
        step_loss = loss(index, texts)
        optimizer.zero_grad(set_to_none=True)
        step_loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(step_loss.item())
        bar.show(loss=losses[-1])
    return losses


def train_captioner(
    speaker: Speaker,
    images: np.ndarray,
    captions: list[list[str]],
    recipe: CaptionerRecipe = CaptionerRecipe(),
    progress: bool = True,
) -> list[float]:
    """AdamW on the adapter: each step a random batch of images (N, H, W, 3) uint8, one random caption each."""
    if len(images) != len(captions):
        raise ValueError(f"need at least one caption per image: {len(images)} images, {len(captions)} caption lists")
    features = vision_features(speaker, images)  # the frozen tower's view of every image, once (None: too large)
    speaker.train()

    def loss(index: np.ndarray, texts: list[str]) -> torch.Tensor:
        return speaker.caption_loss(images[index] if features is None else features[index], texts)

    losses = fit_captions(list(speaker.adapter.parameters()), loss, captions, recipe, "speaker captioning", progress)
    speaker.eval()
    return losses

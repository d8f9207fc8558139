"""Speaker recipe: supervised captioning of the adapter (vision tower and LM stay frozen)."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from listener_sub.models.speaker import Speaker
from listener_sub.pretrain.schedule import warmup_cosine

MIN_LR_FACTOR = 0.1  # the cosine decay ends at this fraction of the peak learning rate


def train_captioner(
    speaker: Speaker,
    images: np.ndarray,
    captions: list[list[str]],
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    warmup: int = 50,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    progress: bool = True,
) -> list[float]:
    """AdamW on the adapter: each step a random batch of images (N, H, W, 3) uint8, one random caption each."""
    if len(images) != len(captions) or not all(captions):
        raise ValueError(f"need at least one caption per image: {len(images)} images, {len(captions)} caption lists")
    rng = np.random.default_rng(seed)
    params = list(speaker.adapter.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, steps, warmup, MIN_LR_FACTOR))
    speaker.train()
    losses = []
    bar = tqdm(range(steps), desc="speaker captioning", disable=not progress)
    for _ in bar:
        index = rng.choice(len(images), size=min(batch_size, len(images)), replace=False)  # (b,)
        texts = [captions[i][rng.integers(len(captions[i]))] for i in index]
        loss = speaker.caption_loss(images[index], texts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    speaker.eval()
    return losses

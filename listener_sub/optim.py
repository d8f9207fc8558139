"""The optimizer and learning-rate schedule shared by the training algorithms (RL and the pretraining recipes)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def adamw(params: Iterable[Any], **settings: Any) -> torch.optim.AdamW:
    """torch's AdamW with its fused kernel (one pass over each parameter for all of Adam's updates, CPU and CUDA)."""
    return torch.optim.AdamW(params, fused=True, **settings)


def warmup_cosine(step: int, steps: int, warmup: int, floor: float = 0.0) -> float:
    """Factor on the peak rate: linear warmup over `warmup` steps, then cosine decay to `floor` at `steps`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

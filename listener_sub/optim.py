"""The optimizer and the learning-rate schedule every training recipe shares (RL, the CLIP, LM and captioner recipes).

schedule = Schedule(warmup=50, floor=0.1)
scheduler = lr_scheduler(optimizer, schedule, steps=1200)  # step it once per optimizer step
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Schedule:
    """The learning rate over training as a factor on the peak rate: a linear warmup, then a cosine decay to `floor`."""

    warmup: int = 0  # steps of linear warmup (step s runs at (s + 1) / warmup of the peak rate)
    floor: float = 0.0  # the rate at the last step as a fraction of the peak; 1: constant after the warmup
    # False: the cosine decays over the steps after the warmup; True: over every step, the warmup ramp multiplied on
    # top (the CLIP recipe's shape)
    overlap: bool = False

    def __post_init__(self) -> None:
        if self.warmup < 0 or not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"schedule warmup={self.warmup}, floor={self.floor} (warmup >= 0, floor in [0, 1])")

    def factor(self, step: int, steps: int) -> float:
        """The factor on the peak rate at `step` of `steps`."""
        if self.overlap:
            ramp = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
            return ramp * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, steps - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


def key_fields(recipe: Any, flat: dict[str, Any], shape: Schedule) -> dict[str, Any]:
    """A recipe's settings as its cache key reads them: its schedule spelled `flat` while the schedule is `shape` --
    the spelling the keys of models already trained by the recipe use, so they are found again --, keyed whole
    otherwise."""
    settings = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe) if f.name != "schedule"}
    return settings | (flat if recipe.schedule == shape else {"schedule": recipe.schedule})


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """torch's LambdaLR over `steps` optimizer steps by `schedule`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule.factor(step, steps))


def adamw(params: Iterable[Any], **settings: Any) -> torch.optim.AdamW:
    """torch's AdamW with its fused kernel (one pass over each parameter for all of Adam's updates, CPU and CUDA)."""
    return torch.optim.AdamW(params, fused=True, **settings)

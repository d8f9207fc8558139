"""A picture of scenes under each perception, with a caption per scene."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from listener_sub.perception import make_perception, to_float_images, to_uint8_images  # noqa: E402
from listener_sub.world import CaptionConfig, WorldConfig, caption_scenes, render, sample_scenes  # noqa: E402


def perceive_all(images: np.ndarray, perceptions: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """label -> (B, H, W, 3) uint8 images as that perception sees them."""
    floats = to_float_images(images)  # (B, 3, H, W)
    with torch.no_grad():
        return {label: to_uint8_images(make_perception(spec)(floats)) for label, spec in perceptions.items()}


def write_preview(
    path: str | Path,
    world: WorldConfig,
    captions: CaptionConfig,
    perceptions: Mapping[str, Any],
    split: str = "val",
    n_scenes: int = 8,
    scale: int = 3,
) -> Path:
    """Render n_scenes of a split, each under every perception, and save the grid as a PNG."""
    scenes = sample_scenes(world, split, 0, n_scenes)
    images = render(scenes, world.image_size)  # (B, H, W, 3)
    texts = caption_scenes(scenes, captions, per_scene=1, seed=world.seed)
    views = perceive_all(images, perceptions)
    side = world.image_size * scale / 100  # inches at 100 dpi
    fig, axes = plt.subplots(
        n_scenes, len(views), figsize=(side * len(views) + 3.2, side * n_scenes + 0.4), squeeze=False, dpi=100
    )
    for col, (label, view) in enumerate(views.items()):
        axes[0, col].set_title(label, fontsize=10)
        for row in range(n_scenes):
            ax = axes[row, col]
            ax.imshow(view[row], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for row in range(n_scenes):
        axes[row, -1].text(1.06, 0.5, texts[row][0], transform=axes[row, -1].transAxes, va="center", fontsize=9)
    fig.suptitle(f"{split} split: each scene under each perception", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

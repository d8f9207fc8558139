"""A picture of scenes under each perception, with a caption per scene."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from listener_sub.data import ImageSet  # noqa: E402
from listener_sub.images import perceived  # noqa: E402
from listener_sub.perception import make_perception  # noqa: E402


def perceive_all(images: np.ndarray, perceptions: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """label -> (B, H, W, 3) uint8 images as that perception sees them."""
    return {label: perceived(make_perception(spec), images) for label, spec in perceptions.items()}


def write_preview(
    path: str | Path,
    images: ImageSet,
    captions: list[str],
    perceptions: Mapping[str, Any],
    n_items: int = 8,
    scale: int = 3,
) -> Path:
    """The first n_items of an image set, each under every perception with its caption, as a PNG."""
    n_items = min(n_items, len(images))
    pixels = images.images[np.arange(n_items)]  # (n, H, W, 3)
    views = perceive_all(pixels, perceptions)  # label -> (n, H, W, 3)
    side = pixels.shape[1] * scale / 100  # inches at 100 dpi
    fig, axes = plt.subplots(
        n_items, len(perceptions), figsize=(side * len(perceptions) + 3.2, side * n_items + 0.4), squeeze=False, dpi=100
    )
    for col, label in enumerate(perceptions):
        axes[0, col].set_title(label, fontsize=10)
        for row in range(n_items):
            ax = axes[row, col]
            ax.imshow(views[label][row], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for row, caption in enumerate(captions[:n_items]):
        axes[row, -1].text(1.06, 0.5, caption, transform=axes[row, -1].transAxes, va="center", fontsize=9)
    fig.suptitle("each item under each perception", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

"""A picture of scenes under each perception, with a caption per scene."""

from __future__ import annotations

import textwrap
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

DPI = 100
MIN_SIDE = 0.9  # inches: the smallest an image is drawn, so a column is never narrower than its header
CAPTION_WIDTH = 3.2  # inches of the caption column
CAPTION_CHARS = 40  # characters per caption line: what fits CAPTION_WIDTH at 9 pt
CAPTION_LINE_PT = 12  # height of a 9 pt caption line, in points


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
    """The first n_items of an image set, each under every perception with its caption, as a PNG.

    One column per perception and a last column for the captions (wrapped to its width); constrained layout keeps the
    title, the column headers and the captions apart at any image size and scale.
    """
    n_items = min(n_items, len(images))
    pixels = images.images[np.arange(n_items)]  # (n, H, W, 3)
    views = perceive_all(pixels, perceptions)  # label -> (n, H, W, 3)
    side = max(pixels.shape[1] * scale / DPI, MIN_SIDE)  # inches per image
    fig, axes = plt.subplots(
        n_items,
        len(perceptions) + 1,
        figsize=(side * len(perceptions) + CAPTION_WIDTH, side * n_items + 0.7),
        width_ratios=[side] * len(perceptions) + [CAPTION_WIDTH],
        squeeze=False,
        dpi=DPI,
        layout="constrained",
    )
    for col, label in enumerate(perceptions):
        axes[0, col].set_title(label, fontsize=10)
        for row in range(n_items):
            ax = axes[row, col]
            ax.imshow(views[label][row], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for row in range(n_items):
        ax = axes[row, -1]
        ax.axis("off")
        lines = max(1, int(side * 72 / CAPTION_LINE_PT))  # as many as fit beside the row's images
        caption = textwrap.fill(captions[row], CAPTION_CHARS, max_lines=lines, placeholder=" ...")
        ax.text(0.0, 0.5, caption, transform=ax.transAxes, va="center", ha="left", fontsize=9)
    fig.suptitle("each item under each perception", fontsize=11)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

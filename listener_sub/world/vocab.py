"""Attribute vocabularies: which attributes a world has, their values, and caption word order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Vocabulary:
    """Value words per attribute; `attributes` fixes the index order used in scene arrays."""

    values: dict[str, tuple[str, ...]]
    generic_noun: str = "object"

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.values)

    def word_to_value(self) -> dict[str, tuple[str, int]]:
        """Map every value word to (attribute, value index)."""
        table: dict[str, tuple[str, int]] = {}
        for attr, words in self.values.items():
            for i, word in enumerate(words):
                if word in table:
                    raise ValueError(f"word {word!r} is a value of both {table[word][0]} and {attr}")
                table[word] = (attr, i)
        return table

    def sizes(self) -> dict[str, int]:
        return {a: len(v) for a, v in self.values.items()}


WORLD_VOCAB = Vocabulary(
    values={
        "color": ("red", "brown", "green", "cyan", "blue", "purple"),
        "shape": ("circle", "square", "triangle", "diamond", "cross"),
        "size": ("small", "large"),
        "fill": ("solid", "striped", "outlined"),
        "position": ("left", "center", "right"),
    }
)

ATTRIBUTES = WORLD_VOCAB.attributes  # index order of SceneBatch.attrs

# CLEVR scenes: material takes the place of fill; position is derived from pixel coordinates.
CLEVR_VOCAB = Vocabulary(
    values={
        "color": ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"),
        "shape": ("cube", "sphere", "cylinder"),
        "size": ("small", "large"),
        "fill": ("rubber", "metal"),
        "position": ("left", "center", "right"),
    }
)

VOCABULARIES = {"world": WORLD_VOCAB, "clevr": CLEVR_VOCAB}  # by the name a scene file or a data config gives

# Perceived luma weights (ITU-R BT.601), used to make the palette isoluminant.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
OBJECT_LUMA = 100.0  # every hue has this luma (0..255)
STRIPE_DELTA = 26  # stripes alternate colour +/- this neutral offset (mean = the solid colour)


def isoluminant_palette(n_hues: int, luma: float = OBJECT_LUMA, margin: int = STRIPE_DELTA) -> np.ndarray:
    """(n_hues, 3) uint8 colours at equally spaced hue angles, all of the same luma.

    Each colour is luma * (1, 1, 1) plus a chroma vector orthogonal to the luma weights, so the
    luma is exact before rounding (rounding moves it by < 0.5/255). The chroma is the largest that
    keeps every channel within [margin, 255 - margin], leaving room for the stripe offset.
    """
    w = LUMA_WEIGHTS
    red = np.array([1.0, 0.0, 0.0]) - w * (w[0] / (w @ w))
    red /= np.linalg.norm(red)
    other = np.cross(w / np.linalg.norm(w), red)
    colours = []
    for angle in np.deg2rad(np.arange(n_hues) * 360.0 / n_hues):
        u = np.cos(angle) * red + np.sin(angle) * other  # chroma direction, u @ w == 0
        limits = [((255 - margin - luma) / c) if c > 0 else ((luma - margin) / -c) for c in u if abs(c) > 1e-9]
        colours.append(np.round(luma + min(limits) * u))
    return np.array(colours, dtype=np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
    """Luma of (..., 3) RGB values on the 0..255 scale."""
    return np.asarray(rgb, dtype=np.float64) @ LUMA_WEIGHTS

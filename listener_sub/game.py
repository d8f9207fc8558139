"""The batched game core: boards of N images drawn from a pool of scenes, whole batches at once."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Boards:
    """B boards of N pool indices; the target sits at position `target` of its board."""

    items: np.ndarray  # (B, N) int64 pool indices, all distinct within a board
    target: np.ndarray  # (B,) int64 position of the target in its board

    @property
    def target_items(self) -> np.ndarray:
        """(B,) pool index of each board's target."""
        return self.items[np.arange(len(self.items)), self.target]


def _distinct_rows(rows: np.ndarray) -> np.ndarray:
    """(B,) True where a row of indices has no repeated value."""
    s = np.sort(rows, axis=1)
    return (np.diff(s, axis=1) != 0).all(axis=1)


def sample_boards(pool_size: int, n_boards: int, n_images: int, rng: np.random.Generator) -> Boards:
    """Random boards: a target and N-1 distinct random distractors; the target's position is uniform."""
    if pool_size < n_images:
        raise ValueError(f"a pool of {pool_size} scenes cannot fill boards of {n_images} images")
    items = rng.integers(0, pool_size, size=(n_boards, n_images))  # (B, N), column 0 the target
    bad = ~_distinct_rows(items)
    while bad.any():  # redraw the few boards with a repeated scene
        items[bad] = rng.integers(0, pool_size, size=(int(bad.sum()), n_images))
        bad = ~_distinct_rows(items)
    target = rng.integers(0, n_images, size=n_boards)
    rows = np.arange(n_boards)
    items[rows, 0], items[rows, target] = items[rows, target], items[rows, 0].copy()  # move the target
    return Boards(items=items, target=target)

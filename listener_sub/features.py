"""Listeners' image features of a pool: each listener's table computed once, a bounded number of pixels at a time, and
kept on disk keyed by (the listener's fingerprint: model, weights, perception; the images' key)."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from listener_sub.data import ImageSet
from listener_sub.files import atomic_path, config_key

if TYPE_CHECKING:  # annotations only: importing open_clip costs seconds
    from listener_sub.models.listener import Listener

FEATURE_PIXELS = 512 * 64 * 64  # image pixels per listener forward pass when filling a table (512 images at 64 px)
PROGRESS_MIN = 8192  # pools from this size show a progress bar while their features are computed


class PoolFeatures:
    """Each listener's (P, D) unit-norm features of the P images of an ImageSet, as it sees them (its perception).

    Tables live in memory, filled lazily for the images asked for; `warm` fills a listener's whole table in a fixed
    order and, given a `cache` directory, keeps it on disk, so the next run reads it instead.
    """

    def __init__(self, data: ImageSet, cache: Path | None = None) -> None:
        self.data = data
        self.cache = cache  # directory of on-disk feature tables (None: memory only)
        # listener -> ((P, D) table or None before its first pass, (P,) bool filled rows)
        self._tables: weakref.WeakKeyDictionary[Listener, tuple[torch.Tensor | None, np.ndarray]] = (
            weakref.WeakKeyDictionary()
        )

    def _table(self, listener: Listener) -> tuple[torch.Tensor | None, np.ndarray]:
        if listener not in self._tables:
            self._tables[listener] = (None, np.zeros(len(self.data), dtype=bool))
        return self._tables[listener]

    def _fill(self, listener: Listener, missing: np.ndarray, progress: bool = False) -> None:
        """Encode the images `missing` (sorted, distinct) into the listener's table, FEATURE_PIXELS of image at a time
        (the transient memory of a pass does not grow with the pool or the image size)."""
        table, filled = self._table(listener)
        images = self.data.images
        per_pass = max(1, FEATURE_PIXELS // int(np.prod(images.shape[1:3])))
        chunks = range(0, len(missing), per_pass)
        bar = tqdm(
            chunks,
            desc=f"features: {listener.name} on {self.data.name}",
            unit="chunk",
            disable=not progress,
            leave=False,
        )
        for start in bar:
            rows = missing[start : start + per_pass]
            new = listener.encode_images(images[rows])  # (n, D)
            if table is None:
                table = new.new_zeros(len(self.data), new.shape[-1])  # (P, D)
                self._tables[listener] = (table, filled)
            table[torch.from_numpy(rows).to(table.device)] = new
            filled[rows] = True

    @torch.no_grad()
    def lookup(self, listener: Listener, items: np.ndarray) -> torch.Tensor:
        """(*items.shape, D) features of the images `items`, computing the missing ones."""
        _, filled = self._table(listener)
        missing = np.unique(items[~filled[items]])
        if len(missing):
            self._fill(listener, missing)
        table, _ = self._table(listener)
        return table[torch.from_numpy(np.asarray(items)).to(table.device)]

    @torch.no_grad()
    def warm(self, listener: Listener) -> None:
        """Every image's features for the listener, in a fixed order (read from the disk cache when it holds them)."""
        table, filled = self._table(listener)
        if filled.all():
            return
        path = self._cache_path(listener)
        stored = _load_table(path) if path is not None else None  # (P, D)
        if (
            stored is not None
            and stored.shape[0] == len(self.data)
            and (table is None or stored.shape[1] == table.shape[1])
        ):
            self._tables[listener] = (torch.from_numpy(stored).to(listener.device), np.ones(len(self.data), dtype=bool))
            return
        self._fill(listener, np.flatnonzero(~filled), progress=len(self.data) >= PROGRESS_MIN)
        if path is not None:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as out:
                    np.save(out, self._table(listener)[0].cpu().numpy())

    def _cache_path(self, listener: Listener) -> Path | None:
        """Where the listener's table is kept on disk (None: no cache, or a listener without a fingerprint)."""
        if self.cache is None:
            return None
        fingerprint = getattr(listener, "fingerprint", None)
        if fingerprint is None:
            return None
        return Path(self.cache) / "features" / f"{config_key(fingerprint, self.data.key)}.npy"


def _load_table(path: Path) -> np.ndarray | None:
    """A table saved by `PoolFeatures.warm`, or None when there is none or it is unreadable (it is computed again)."""
    try:
        return np.load(path, allow_pickle=False) if path.is_file() else None
    except (OSError, ValueError, EOFError):
        return None

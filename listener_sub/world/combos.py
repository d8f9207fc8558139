"""Attribute combinations of one object as integer ids, mention masks, and the canonical caption of a (combo, mask).

A `Combos` belongs to one vocabulary (the embedded world's, CLEVR's, ...). The oracle speakers, listener evaluation
and listener pretraining all name "the attributes in this mask of this object" through `Combos.caption`, so they
say exactly the same words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from listener_sub.world.grammar import CaptionSpec, realize
from listener_sub.world.vocab import WORLD_VOCAB, Vocabulary


class Combos:
    """Mixed-radix ids of one object's attribute values (in the vocabulary's attribute order) and mention bit masks."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.attributes = vocab.attributes
        self.n_values = np.array(
            [len(vocab.values[a]) for a in self.attributes], dtype=np.int64
        )  # (A,) values per attribute
        self.radix = np.concatenate([np.cumprod(self.n_values[::-1])[::-1][1:], [1]]).astype(
            np.int64
        )  # (A,) place values
        self.count = int(self.n_values.prod())  # attribute combinations of one object (540 in the embedded world)
        self.full_mask = (1 << len(self.attributes)) - 1  # bit a set: attribute a is mentioned

    def ids(self, attrs: np.ndarray) -> np.ndarray:
        """(..., A) attribute value indices -> (...) combination ids in [0, count)."""
        return (np.asarray(attrs, dtype=np.int64) * self.radix).sum(-1)

    def attrs(self, ids: np.ndarray | int) -> np.ndarray:
        """(...) combination ids -> (..., A) attribute value indices."""
        return (np.asarray(ids, dtype=np.int64)[..., None] // self.radix) % self.n_values

    def mask_of(self, attributes: Sequence[str]) -> int:
        """Bit mask of the named attributes."""
        unknown = set(attributes) - set(self.attributes)
        if unknown:
            raise ValueError(f"unknown attribute(s) {sorted(unknown)}; choose from {', '.join(self.attributes)}")
        return sum(1 << self.attributes.index(a) for a in attributes)

    def caption(self, combo: int, mask: int, prefix: int = 0) -> str:
        """The canonical caption naming the attributes in `mask` of the object `combo`."""
        values = self.attrs(combo)
        obj = {a: self.vocab.values[a][int(values[i])] for i, a in enumerate(self.attributes) if mask >> i & 1}
        return realize(CaptionSpec((obj,), None, prefix), self.vocab)


WORLD_COMBOS = Combos(WORLD_VOCAB)

"""Attribute combinations of one object as integer ids, mention masks, and the canonical caption of a (combo, mask).

The oracle speakers and listener pretraining both name "the attributes in this mask of this object" through
`caption_text`, so they say exactly the same words.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from listener_sub.world.grammar import CaptionSpec, realize
from listener_sub.world.vocab import ATTRIBUTES, WORLD_VOCAB

N_VALUES = np.array([WORLD_VOCAB.sizes()[a] for a in ATTRIBUTES], dtype=np.int64)  # (A,) values per attribute
RADIX = np.concatenate([np.cumprod(N_VALUES[::-1])[::-1][1:], [1]]).astype(np.int64)  # (A,) mixed-radix place values
N_COMBOS = int(N_VALUES.prod())  # 540 attribute combinations of one object
FULL_MASK = (1 << len(ATTRIBUTES)) - 1  # bit a set: attribute a is mentioned


def combo_ids(attrs: np.ndarray) -> np.ndarray:
    """(..., A) attribute value indices -> (...) combination ids in [0, N_COMBOS)."""
    return (np.asarray(attrs, dtype=np.int64) * RADIX).sum(-1)


def combo_attrs(ids: np.ndarray) -> np.ndarray:
    """(...) combination ids -> (..., A) attribute value indices."""
    return (np.asarray(ids, dtype=np.int64)[..., None] // RADIX) % N_VALUES


def mask_of(attributes: Sequence[str]) -> int:
    """Bit mask of the named attributes."""
    unknown = set(attributes) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown attribute(s) {sorted(unknown)}; choose from {', '.join(ATTRIBUTES)}")
    return sum(1 << ATTRIBUTES.index(a) for a in attributes)


def caption_text(combo: int, mask: int, prefix: int = 0) -> str:
    """The canonical caption naming the attributes in `mask` of the object `combo`."""
    values = combo_attrs(combo)
    obj = {a: WORLD_VOCAB.values[a][int(values[i])] for i, a in enumerate(ATTRIBUTES) if mask >> i & 1}
    return realize(CaptionSpec((obj,), None, prefix))

"""Language metrics of captions about scenes (one definition each), shared by every evaluation and the report."""
from __future__ import annotations

from collections.abc import Sequence
import numpy as np

from listener_sub.world import ATTRIBUTES, parse, truthful
from listener_sub.world.parser import tokenize

def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the captions (0 when there are none)."""
    grams = [tuple(words[i : i + n]) for t in texts for words in [tokenize(t)] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def caption_metrics(
    texts: Sequence[str],
    objects: Sequence[list[dict[str, str]]],
    x: Sequence[list[float]] | None = None,
    prefix: str = "",
) -> dict[str, float]:
    """Language metrics of captions about scenes: mention/<a>, truthful, grammatical, length, distinct_1/2."""
    parsed = [parse(t) for t in texts]
    x = x if x is not None else [None] * len(texts)
    metrics = {f"mention/{a}": float(np.mean([a in p.mentioned() for p in parsed])) for a in ATTRIBUTES}
    metrics["truthful"] = float(np.mean([truthful(t, o, xs) for t, o, xs in zip(texts, objects, x)]))
    metrics["grammatical"] = float(np.mean([p.grammatical for p in parsed]))
    metrics["length"] = float(np.mean([len(tokenize(t)) for t in texts]))
    metrics["distinct_1"] = distinct_n(texts, 1)
    metrics["distinct_2"] = distinct_n(texts, 2)
    return {f"{prefix}{k}": v for k, v in metrics.items()}

"""Language metrics of captions about images (one definition each), shared by every evaluation and the report.

What is measured follows what the data provides: images with scenes (the embedded world, CLEVR) give
mention/<attribute> through the scenes' own vocabulary and grammar, truthful and grammatical; images without
(COCO, plain folders) give mention/<attribute> from a lexicon (words per attribute). Every caption set gets
length, distinct_1 and distinct_2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from listener_sub.world import SceneBatch, parse, truthful
from listener_sub.world.parser import tokenize

WORD = re.compile(r"[a-z]+")  # a lexicon word: letters only, lower case


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the captions (0 when there are none)."""
    grams = [tuple(words[i : i + n]) for t in texts for words in [tokenize(t)] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def lexicon_mentions(texts: Sequence[str], lexicon: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """mention/<attribute>: the fraction of captions holding any of the attribute's words (as whole words)."""
    words = [set(WORD.findall(t.lower())) for t in texts]
    return {f"mention/{a}": float(np.mean([bool(w & set(vocab)) for w in words])) for a, vocab in lexicon.items()}


def caption_metrics(
    texts: Sequence[str],
    scenes: SceneBatch | None,
    items: Sequence[int] | np.ndarray,
    lexicon: Mapping[str, Sequence[str]] | None = None,
    prefix: str = "",
) -> dict[str, float]:
    """Language metrics of captions, caption i about image items[i] (its scene in `scenes`, when there are scenes).

    With scenes: mention/<attribute> (what the caption's parse names), truthful, grammatical. Without:
    mention/<attribute> from `lexicon`. Always: length (words), distinct_1, distinct_2.
    """
    if scenes is not None:
        vocab = scenes.vocab
        parsed = [parse(t, vocab) for t in texts]
        metrics = {f"mention/{a}": float(np.mean([a in p.mentioned() for p in parsed])) for a in vocab.attributes}
        metrics["truthful"] = float(
            np.mean([truthful(t, scenes.objects(int(i)), scenes.x(int(i)), vocab) for t, i in zip(texts, items)])
        )
        metrics["grammatical"] = float(np.mean([p.grammatical for p in parsed]))
    else:
        metrics = lexicon_mentions(texts, lexicon or {})
    metrics["length"] = float(np.mean([len(tokenize(t)) for t in texts]))
    metrics["distinct_1"] = distinct_n(texts, 1)
    metrics["distinct_2"] = distinct_n(texts, 2)
    return {f"{prefix}{k}": v for k, v in metrics.items()}

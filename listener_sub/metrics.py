"""Language metrics of captions about images (one definition each), shared by every evaluation and the report.

What is measured follows what the data provides: images with scenes (the embedded world, CLEVR) give
mention/<attribute> through the scenes' own vocabulary and grammar, truthful and grammatical; images without
(COCO, plain folders) give mention/<attribute> from a lexicon (words per attribute). Every caption set gets
length, distinct_1 and distinct_2. Also the bootstrap interval of a mean that the results document and the human
study report their numbers with.
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


def lexicon_mentions(texts: Sequence[str], lexicon: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """mention/<attribute>: (N,) whether each caption holds any of the attribute's words (as whole words)."""
    words = [set(WORD.findall(t.lower())) for t in texts]
    return {f"mention/{a}": np.array([bool(w & set(vocab)) for w in words], float) for a, vocab in lexicon.items()}


def caption_values(
    texts: Sequence[str],
    scenes: SceneBatch | None,
    items: Sequence[int] | np.ndarray,
    lexicon: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, np.ndarray]:
    """Each caption's own value (N,) of the language metrics that have one, caption i about image items[i].

    With scenes: mention/<attribute> (what the caption's parse names), wrong/<attribute> (it names a value of the
    attribute for its referent that the target's referent does not have), truthful, grammatical. Without:
    mention/<attribute> from `lexicon`. Always: length (words).
    """
    if scenes is not None:
        vocab = scenes.vocab
        parsed = [parse(t, vocab) for t in texts]
        values = {f"mention/{a}": np.array([a in p.mentioned() for p in parsed], float) for a in vocab.attributes}
        objects = [scenes.objects(int(i)) for i in items]  # each target's objects, its referent first
        referents = [p.spec.objects[0] for p in parsed]  # attribute -> value word the caption gives its referent
        values |= {
            f"wrong/{a}": np.array([a in said and said[a] != obj[0][a] for said, obj in zip(referents, objects)], float)
            for a in vocab.attributes
        }
        values["truthful"] = np.array(
            [truthful(t, seen, scenes.x(int(i)), vocab) for t, seen, i in zip(texts, objects, items)], float
        )
        values["grammatical"] = np.array([p.grammatical for p in parsed], float)
    else:
        values = lexicon_mentions(texts, lexicon or {})
    values["length"] = np.array([len(tokenize(t)) for t in texts], float)
    return values


def caption_metrics(
    texts: Sequence[str],
    scenes: SceneBatch | None,
    items: Sequence[int] | np.ndarray,
    lexicon: Mapping[str, Sequence[str]] | None = None,
    prefix: str = "",
) -> dict[str, float]:
    """Language metrics of captions: the means of `caption_values`, and distinct_1, distinct_2 of the whole set."""
    return summarise(caption_values(texts, scenes, items, lexicon), texts, prefix)


def summarise(values: Mapping[str, np.ndarray], texts: Sequence[str], prefix: str = "") -> dict[str, float]:
    """The means of the captions' own values (`caption_values`), and distinct_1, distinct_2 of the whole set."""
    metrics = {key: float(np.mean(v)) for key, v in values.items()}
    metrics["distinct_1"] = distinct_n(texts, 1)
    metrics["distinct_2"] = distinct_n(texts, 2)
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def bootstrap_interval(
    values: np.ndarray, resamples: int, seed: int = 0, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """95% percentile interval of the mean of (B,) per-board values, boards resampled with replacement.

    weights: (B,) the sizes of the clusters whose means `values` are (e.g. each participant's number of answers): the
    interval of the pooled mean over the clusters' items, whole clusters resampled (a cluster bootstrap, for items
    correlated within a cluster). Every weight must be positive.
    """
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(values), size=(resamples, len(values)))  # (R, B)
    if weights is None:
        means = values[index].mean(1)  # (R,)
    else:
        means = (values * weights)[index].sum(1) / weights[index].sum(1)  # (R,)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))

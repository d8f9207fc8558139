"""Caption grammar: which attributes a caption mentions, and how it is phrased."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from listener_sub.world.scene import SPLITS, SceneBatch
from listener_sub.world.vocab import WORLD_VOCAB, Vocabulary

ADJECTIVE_ORDER = ("size", "color", "fill")  # adjectives come in this order before the noun
PREFIXES = ("", "there is", "a picture of")  # surface variants before the first noun phrase
POSITION_PHRASES = {"left": "on the left", "center": "in the center", "right": "on the right"}
RELATIONS = {"left": "to the left of", "right": "to the right of"}  # relation -> phrase
END = "."  # every caption ends with this token


@dataclass
class CaptionConfig:
    """How often each attribute is mentioned and how captions are phrased."""

    mention: dict[str, float] = field(
        default_factory=lambda: {"color": 0.5, "shape": 0.6, "size": 0.5, "fill": 0.4, "position": 0.4}
    )
    prefix_probs: tuple[float, ...] = (0.8, 0.1, 0.1)  # probability of each entry of PREFIXES
    relation_prob: float = 0.5  # scenes with > 1 object: chance the caption relates two objects


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption says: attribute -> value word per noun phrase, an optional relation."""

    objects: tuple[dict[str, str], ...]
    relation: str | None = None  # "left" | "right": objects[0] is left/right of objects[1]
    prefix: int = 0  # index into PREFIXES

    def mentioned(self) -> set[str]:
        """Attributes the caption mentions (a relation mentions position)."""
        attrs = {a for obj in self.objects for a in obj}
        return attrs | {"position"} if self.relation else attrs


def article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def noun_phrase(obj: dict[str, str], vocab: Vocabulary = WORLD_VOCAB) -> str:
    """'a small red circle on the left' from attribute -> value words."""
    words = [obj[a] for a in ADJECTIVE_ORDER if a in obj]
    words.append(obj.get("shape", vocab.generic_noun))
    phrase = " ".join([article(words[0]), *words])
    return f"{phrase} {POSITION_PHRASES[obj['position']]}" if "position" in obj else phrase


def realize(spec: CaptionSpec, vocab: Vocabulary = WORLD_VOCAB) -> str:
    """The caption text of a spec."""
    text = noun_phrase(spec.objects[0], vocab)
    if spec.relation is not None:
        text = f"{text} {RELATIONS[spec.relation]} {noun_phrase(spec.objects[1], vocab)}"
    prefix = PREFIXES[spec.prefix]
    return f"{prefix} {text}{END}" if prefix else f"{text}{END}"


def _mention_subset(rng: np.random.Generator, attrs: tuple[str, ...], probs: dict[str, float]) -> list[str]:
    """A non-empty random subset of attrs, each kept with its probability (resampled if empty)."""
    while True:
        chosen = [a for a in attrs if rng.random() < probs.get(a, 0.0)]
        if chosen:
            return chosen


def sample_spec(
    rng: np.random.Generator,
    objects: list[dict[str, str]],
    cfg: CaptionConfig,
    x: list[float] | None = None,
) -> CaptionSpec:
    """Sample what to say about a scene whose objects[0] is the referent; x: object centres (for relations)."""
    prefix = int(rng.choice(len(PREFIXES), p=np.asarray(cfg.prefix_probs) / sum(cfg.prefix_probs)))
    if len(objects) > 1 and x is not None and rng.random() < cfg.relation_prob:
        other = int(rng.integers(1, len(objects)))
        relation = "left" if x[0] < x[other] else "right"
        no_pos = tuple(a for a in objects[0] if a != "position")
        first = {a: objects[0][a] for a in _mention_subset(rng, no_pos, cfg.mention)}
        second = {a: objects[other][a] for a in _mention_subset(rng, no_pos, cfg.mention)}
        return CaptionSpec((first, second), relation, prefix)
    attrs = tuple(objects[0])
    chosen = _mention_subset(rng, attrs, cfg.mention)
    return CaptionSpec(({a: objects[0][a] for a in chosen},), None, prefix)


def canonical_caption(
    obj: dict[str, str], attributes: tuple[str, ...] | list[str], vocab: Vocabulary = WORLD_VOCAB
) -> str:
    """The plain caption naming exactly `attributes` of one object (used by oracle speakers)."""
    return realize(CaptionSpec(({a: obj[a] for a in attributes},)), vocab)


def split_stream(split: str) -> int:
    """A number per split name that seeds its caption stream: the world's splits by position, others by a checksum."""
    return SPLITS.index(split) if split in SPLITS else len(SPLITS) + zlib.crc32(split.encode())


def caption_scenes(scenes: SceneBatch, cfg: CaptionConfig, per_scene: int, seed: int = 0) -> list[list[str]]:
    """per_scene captions for each scene, in the scenes' vocabulary; scene i of a split always gets the same
    captions."""
    captions = []
    stream = split_stream(scenes.split)
    for b, index in enumerate(scenes.index):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, int(index), 1)))
        objects, x = scenes.objects(b), scenes.x(b)
        captions.append([realize(sample_spec(rng, objects, cfg, x), scenes.vocab) for _ in range(per_scene)])
    return captions

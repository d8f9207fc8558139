"""A set of same-sized images and what its data says about them: scene objects, reference captions, or only files."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from listener_sub.data.store import StoredImages
from listener_sub.errors import DataError
from listener_sub.world import CaptionConfig, SceneBatch, canonical_caption, caption_scenes

Pixels = np.ndarray | StoredImages  # (N, H, W, 3) uint8, in memory or read from disk on demand


@dataclass(eq=False)
class ImageSet:
    """N images of one split of a dataset; item i is image i with scene i (attribute data) or captions i (COCO).

    `key` names the pixels (the data, split, count, image size and, for folders, every file's name, size and time),
    so caches of anything computed from the images (listener features) are keyed by it.
    """

    images: Pixels  # (N, H, W, 3) uint8
    kind: str  # synthetic | clevr | coco | folder
    split: str  # the dataset's own split name
    name: str  # what it is, for messages and reports, e.g. "coco val2017 (/data/coco)"
    key: str
    scenes: SceneBatch | None = None  # objects of every image (synthetic, clevr); None: no attributes
    captions: list[list[str]] | None = None  # reference captions of every image (coco)
    files: list[str] | None = None  # each image's file, relative to the data root (folders)
    lexicon: dict[str, tuple[str, ...]] = field(default_factory=dict)  # data without scenes: words per attribute
    skipped: list[str] = field(default_factory=list)  # why items were left out (data.skip_bad=true)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attributes mention rates are measured for: the scene vocabulary's, else the lexicon's."""
        return self.scenes.vocab.attributes if self.scenes is not None else tuple(self.lexicon)

    @property
    def attrs(self) -> np.ndarray:
        """(N, A) attribute value indices of each image's referent (object 0); only for data with scenes."""
        if self.scenes is None:
            raise DataError(f"{self.name} has no scene attributes; use data with scenes (synthetic, clevr)")
        return self.scenes.attrs[:, 0]

    def describe(self, item: int) -> str:
        """Image `item` in words: its referent with every attribute, else its first reference caption, else its file."""
        if self.scenes is not None:
            return canonical_caption(self.scenes.objects(item)[0], self.scenes.vocab.attributes, self.scenes.vocab)
        if self.captions is not None:
            return self.captions[item][0]
        return self.files[item] if self.files is not None else f"image {item}"

    def caption_texts(self, cfg: CaptionConfig, per_scene: int, seed: int) -> list[list[str]]:
        """Captions of every image: scenes through the grammar (per_scene each, seeded), else the reference captions."""
        if self.scenes is not None:
            return caption_scenes(self.scenes, cfg, per_scene, seed)
        if self.captions is not None:
            return self.captions
        raise DataError(
            f"{self.name} has no captions (a plain folder of images); "
            "train on data with captions (synthetic, clevr, coco)"
        )

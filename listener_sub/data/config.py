"""Where a pool of images comes from: the `data` config node (config group data=synthetic|clevr|coco|folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from listener_sub.errors import UserError
from listener_sub.world import PRETRAIN_SPLIT, VOCABULARIES

KINDS = ("synthetic", "clevr", "coco", "folder")
ATTRIBUTE_KINDS = ("synthetic", "clevr")  # data whose images come with scene objects (attributes)
ROOT_SPLIT = "."  # a split name that means the data root itself (a plain folder of images)
COLOR_WORDS = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "gray",
    "grey",
    "cyan",
)


@dataclass
class DataConfig:
    """A dataset: the embedded world, a CLEVR-format folder, a COCO-captions folder or a plain folder of images.

    A game split (train, val, test, shifted; `trainer.split`, `evaluation.split`; pretrain, what locally trained
    models learn from) is looked up in `splits` first, else used as the dataset's own split name (pretrain: a
    folder's train split): synthetic -> the world's split; clevr -> scenes/CLEVR_<split>_scenes.json
    and images/<split>/; coco -> annotations/captions_<split>.json and images in <split>/, images/ or the root;
    folder -> the image files under <root>/<split>/ (split "." is the root itself), searched recursively.
    """

    kind: str = "synthetic"  # synthetic | clevr | coco | folder
    root: Optional[str] = None  # the dataset folder (clevr, coco, folder)
    splits: dict[str, str] = field(default_factory=dict)  # game split -> this dataset's split, e.g. {test: val2017}
    # pool images are resized to this square side; null: as they are (synthetic: world.image_size)
    image_size: Optional[int] = None
    # true: skip missing, unreadable or malformed items, counted and reported once; false: stop at the first
    skip_bad: bool = False
    # clevr: the attribute words (clevr | world); null: the scene file's info.vocabulary, else clevr
    vocab: Optional[str] = None
    lexicon: dict[str, list[str]] = field(
        default_factory=lambda: {"color": list(COLOR_WORDS)}
    )  # data without scenes: words per attribute for mention/<attribute>

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"data.kind: unknown kind {self.kind!r}; choose one with data={'|'.join(KINDS)}")
        if self.kind != "synthetic" and not self.root:
            raise UserError(
                f"data.root is not set; data={self.kind} needs the dataset folder: data.root=/path/to/folder"
            )
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"data.image_size={self.image_size}; use a positive side in pixels or null")
        if self.vocab is not None and self.vocab not in VOCABULARIES:
            raise UserError(
                f"data.vocab: unknown vocabulary {self.vocab!r}; choose one of: {', '.join(VOCABULARIES)} (or null)"
            )
        if not self.lexicon or not all(self.lexicon.values()):
            raise UserError(
                "data.lexicon needs at least one attribute with at least one word, e.g. {color: [red, blue]}"
            )

    @property
    def has_attributes(self) -> bool:
        """Whether items come with scene objects (attributes for hard distractors, oracle speakers, truthfulness)."""
        return self.kind in ATTRIBUTE_KINDS

    @property
    def has_captions(self) -> bool:
        """Whether items can be captioned: scene objects through the grammar, or reference captions (COCO)."""
        return self.kind != "folder"

    def split_name(self, split: str) -> str:
        """The dataset's own name for a game split (a folder's pretraining split is the one its train split names,
        unless mapped)."""
        if split == PRETRAIN_SPLIT and self.kind != "synthetic":
            return self.splits.get(split, self.splits.get("train", "train"))
        return self.splits.get(split, split)

"""What the folder formats share: the item a reader lists, bad-item handling, index-file helpers, and `Reader`, the
interface each format implements (`clevr.py`, `coco.py`, `plain.py`; `folders.py` loads any of them).

Bad data -- a missing or unreadable image, a truncated file, malformed JSON, an entry pointing nowhere, an empty
folder -- raises a DataError naming the file and the problem; with data.skip_bad=true such items are skipped,
counted and reported in one warning.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from listener_sub.data.config import DataConfig
from listener_sub.errors import DataError
from listener_sub.world import SceneBatch

logger = logging.getLogger(__name__)

REPORT_REASONS = 3  # reasons quoted in the one warning about skipped items
SKIP_HINT = "fix the data or pass data.skip_bad=true to skip such items"


@dataclass
class Item:
    """One candidate image of a folder: its file and what the index says about it."""

    path: Path
    file: str  # relative to the data root
    index: int = 0  # its position in the index file (clevr: seeds its captions)
    captions: list[str] | None = None  # coco
    objects: list[dict[str, Any]] = field(default_factory=list)  # clevr: attribute -> value word, "pixel_coords"


@dataclass
class Listing:
    """A split's candidate items, in index order, and the scene vocabulary they are described in."""

    items: list[Item]
    vocab: str | None = None  # the name of the scene vocabulary (data with scenes); part of the store key


class BadItems:
    """Bad items of one source: the first raises, or with skip_bad all are kept and reported once."""

    def __init__(self, source: Path, skip_bad: bool):
        self.source, self.skip_bad, self.reasons = source, skip_bad, []

    def add(self, reason: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{reason}; {SKIP_HINT}")
        self.reasons.append(reason)

    def report(self, n_items: int) -> None:
        """Warn once about the skipped items; fail when no usable item is left."""
        if self.reasons:
            logger.warning(
                "%s: skipped %d bad item(s) (data.skip_bad=true), e.g. %s",
                self.source,
                len(self.reasons),
                "; ".join(self.reasons[:REPORT_REASONS]),
            )
        if n_items == 0:
            skipped = f" ({len(self.reasons)} bad item(s) skipped)" if self.reasons else ""
            raise DataError(f"{self.source}: no usable images{skipped}; check data.root and the split")


class Reader(ABC):
    """One folder format: what a split is read from, the items it lists, and what the kept items say."""

    crop: bool = True  # resize from the centre square; False: squash the whole image

    @abstractmethod
    def split_source(self, root: Path, name: str) -> Path:
        """What split `name` is read from (an index file or a folder); a DataError naming what is missing and what is
        there."""

    @abstractmethod
    def list_items(self, cfg: DataConfig, root: Path, name: str, source: Path, bad: BadItems) -> Listing:
        """The split's candidate items from its `source`; a bad entry goes to `bad`."""

    def scenes(self, listing: Listing, kept: list[Item], rows: list[dict[str, Any]], split: str) -> SceneBatch | None:
        """The scenes of the items kept in the store (rows: what the store recorded of each), or None: no scenes."""
        return None

    def captions(self, kept: list[Item]) -> list[list[str]] | None:
        """The reference captions of the items kept in the store, or None: no captions."""
        return None


def index_file(path: Path, pattern: str, what: str) -> Path:
    """`path` if it is a file, else a DataError naming it and the files matching `pattern` beside it."""
    if path.is_file():
        return path
    found = sorted(p.name for p in path.parent.glob(pattern)) if path.parent.is_dir() else []
    hint = (
        f"found {', '.join(found)} there; choose the split accordingly (data.splits maps game splits to them)"
        if found
        else "check data.root and the split"
    )
    raise DataError(f"{what} not found: {path}; {hint}")


def read_json(path: Path) -> Any:
    """Parsed JSON, or a DataError naming the file and where it is malformed."""
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}; fix or re-download the file"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def top_list(data: Any, key: str, path: Path) -> list:
    """data[key], which must be a list in a JSON object."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(f"{path}: expected a JSON object with a {key!r} list; is this the right file?")
    return data[key]


def within(file_name: str) -> bool:
    """Whether a file name from an index file stays inside the dataset folder: relative, without '..' (a scene or
    captions file never makes the loader read elsewhere)."""
    path = PurePosixPath(file_name)
    return bool(file_name) and not path.is_absolute() and ".." not in path.parts

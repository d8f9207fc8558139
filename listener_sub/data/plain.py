"""Plain folders of images: a split is a subfolder of the root (or the root itself), every image file under it, with
no index, scenes or captions."""

from __future__ import annotations

from pathlib import Path

from listener_sub.data.config import ROOT_SPLIT, DataConfig
from listener_sub.data.reader import BadItems, Item, Listing, Reader
from listener_sub.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class PlainReader(Reader):
    """Every image file under a split's folder, sorted by path."""

    def split_source(self, root: Path, name: str) -> Path:
        """The folder of the split: root/<name>, or the root itself for ROOT_SPLIT."""
        folder = root if name == ROOT_SPLIT else root / name
        if not folder.is_dir():
            subfolders = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise DataError(
                f"{folder} is not a folder; a plain-folder split is a subfolder of data.root "
                f"({', '.join(subfolders) or 'none there'}) or {ROOT_SPLIT!r} for the root itself: "
                f"map it with data.splits (e.g. data.splits.test={ROOT_SPLIT})"
            )
        return folder

    def list_items(self, cfg: DataConfig, root: Path, name: str, source: Path, bad: BadItems) -> Listing:
        """Every image file under the folder (recursively), sorted by path; a DataError when there is none."""
        files = sorted(
            p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise DataError(
                f"{source} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                "point data.root (and the split) at a folder of images"
            )
        return Listing([Item(path, str(path.relative_to(root))) for path in files])

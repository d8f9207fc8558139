"""Image sets read from folders: any format with a reader (CLEVR-format scenes, COCO-format captions, plain folders
of images), loaded the same way.

The format's reader (`READERS`, by data.kind) lists a split's items, validating its index file; the images are then
decoded once into an on-disk store (`listener_sub.data.store`) keyed by the files, and later loads read the store.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from stat import S_ISREG
from typing import Any

import numpy as np
from PIL import Image

from listener_sub.data.clevr import ClevrReader
from listener_sub.data.coco import CocoReader
from listener_sub.data.config import DataConfig
from listener_sub.data.imageset import ImageSet
from listener_sub.data.plain import PlainReader
from listener_sub.data.reader import BadItems, Item, Reader
from listener_sub.data.store import build_store, open_store
from listener_sub.errors import DataError
from listener_sub.files import config_key

STORE_VERSION = 1  # bump when decoding or resizing changes, so stores of older versions are not reused
READERS: dict[str, Reader] = {"clevr": ClevrReader(), "coco": CocoReader(), "folder": PlainReader()}  # by data.kind
# what PIL raises on bad image files
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
_LOADED: dict[
    tuple[str, str, str], ImageSet
] = {}  # image sets this process loaded, by (cache, store key, lexicon): each read (and its skips reported) once


def existing_root(root: str | os.PathLike) -> Path:
    """`root` as a Path, which must be a directory."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root {path} is not a directory; set data.root to the dataset folder")
    return path


def reader(kind: str) -> Reader:
    """The reader of a folder format; a DataError for a kind that is not one."""
    if kind not in READERS:
        raise DataError(f"data.kind={kind} is not a folder dataset")
    return READERS[kind]


def split_source(kind: str, root: Path, name: str) -> Path:
    """What a split of a folder dataset is read from: its scenes file (clevr), captions file (coco) or folder (folder);
    a DataError naming what is missing and what is there."""
    return reader(kind).split_source(root, name)


def fit(im: Image.Image, size: int | None, crop: bool) -> np.ndarray:
    """(H, W, 3) uint8 as is (size None or already size x size), else (size, size, 3) bicubic, from the centre square
    (crop) or the whole image."""
    if size is None or im.size == (size, size):
        return np.asarray(im, dtype=np.uint8)
    side = min(im.size)
    box = ((im.width - side) / 2, (im.height - side) / 2, (im.width + side) / 2, (im.height + side) / 2)
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC, box=box if crop else None), dtype=np.uint8)


def _decoder(size: int | None, crop: bool) -> Callable[[Item], tuple[np.ndarray | None, str | None, dict[str, Any]]]:
    """decode(item) -> (image or None, the problem or None, {file, width, height}) for `build_store`."""

    def decode(item: Item) -> tuple[np.ndarray | None, str | None, dict[str, Any]]:
        facts: dict[str, Any] = {"file": item.file}
        try:
            with Image.open(item.path) as im:
                im.load()  # decodes every byte: a truncated file fails here
                facts |= {"width": im.width, "height": im.height}
                return fit(im.convert("RGB"), size, crop), None, facts
        except IMAGE_ERRORS as err:
            return None, f"cannot read image {item.path}: {err}", facts

    return decode


def _stat_key(items: list[Item], bad: BadItems) -> tuple[list[Item], list[tuple[str, int, int]]]:
    """The items whose file exists, and (file, size, mtime) of each (a missing file is a bad item)."""
    found, stats = [], []
    for item in items:
        try:
            stat = item.path.stat()
        except OSError:
            bad.add(f"image file {item.path} not found")
            continue
        if not S_ISREG(stat.st_mode):
            bad.add(f"image path {item.path} is not a file")
            continue
        found.append(item)
        stats.append((item.file, stat.st_size, stat.st_mtime_ns))
    return found, stats


def folder_images(cfg: DataConfig, split: str, size: int | None, cache: Path) -> ImageSet:
    """Split `split` (a game split, mapped by data.splits) of a clevr, coco or plain folder as an ImageSet of at most
    `size` images (None: all), decoded once into the cache."""
    root, name = existing_root(cfg.root), cfg.split_name(split)
    format_reader = reader(cfg.kind)
    source = format_reader.split_source(root, name)
    bad = BadItems(source, cfg.skip_bad)
    listing = format_reader.list_items(cfg, root, name, source, bad)
    items, stats = _stat_key(listing.items, bad)
    index_stat = source.stat()
    key = config_key(
        STORE_VERSION,
        cfg.kind,
        str(root.resolve()),
        name,
        cfg.image_size,
        format_reader.crop,
        cfg.skip_bad,
        size,
        listing.vocab,
        [index_stat.st_size, index_stat.st_mtime_ns] if source.is_file() else None,
        stats,
    )
    request = (str(cache), key, config_key(cfg.lexicon))  # the store key covers every other setting of the image set
    if request in _LOADED:
        return _LOADED[request]
    folder = cache / "images" / key
    opened = open_store(folder)
    if opened is None:
        opened = build_store(
            folder, items, _decoder(cfg.image_size, format_reader.crop), size, bad.add, f"decoding {cfg.kind} {name}"
        )
    else:
        for reason in opened[1]["skipped"]:
            bad.add(reason)
    images, index = opened
    bad.report(len(images))
    kept = [items[row["item"]] for row in index["kept"]]
    lexicon = {attr: tuple(w.lower() for w in words) for attr, words in cfg.lexicon.items()}
    _LOADED[request] = ImageSet(
        images,
        cfg.kind,
        name,
        f"{cfg.kind} {name} ({root})",
        key,
        scenes=format_reader.scenes(listing, kept, index["kept"], name),
        captions=format_reader.captions(kept),
        files=[item.file for item in kept],
        lexicon=lexicon,
        skipped=list(bad.reasons),
    )
    return _LOADED[request]

"""Image sets read from folders: CLEVR-format scenes, COCO-format captions, and plain folders of images.

Each reader lists a split's items (validating its index file), then decodes the images once into an on-disk store
(`listener_sub.data.store`) keyed by the files; later loads read the store. Bad data -- a missing or unreadable
image, a truncated file, malformed JSON, an entry pointing nowhere, an empty folder -- raises a DataError naming
the file and the problem; with data.skip_bad=true such items are skipped, counted and reported in one warning.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import Any

import numpy as np
from PIL import Image

from listener_sub.data.config import ROOT_SPLIT, DataConfig
from listener_sub.data.imageset import ImageSet
from listener_sub.data.store import build_store, open_store
from listener_sub.errors import DataError
from listener_sub.files import config_key
from listener_sub.world import VOCABULARIES, SceneBatch, Vocabulary

logger = logging.getLogger(__name__)

STORE_VERSION = 1  # bump when decoding or resizing changes, so stores of older versions are not reused
REPORT_REASONS = 3  # reasons quoted in the one warning about skipped items
SKIP_HINT = "fix the data or pass data.skip_bad=true to skip such items"
FLOAT32_MAX = float(np.finfo(np.float32).max)  # pixel coordinates are kept as float32: larger ones are refused
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SCENE_KEYS = {  # scene-file object key -> attribute, per vocabulary (CLEVR's material plays the part of fill)
    "clevr": {"color": "color", "shape": "shape", "size": "size", "material": "fill"},
    "world": {"color": "color", "shape": "shape", "size": "size", "fill": "fill"},
}
# what PIL raises on bad image files
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
_LOADED: dict[
    tuple[str, str, str], ImageSet
] = {}  # image sets this process loaded, by (cache, store key, lexicon): each read (and its skips reported) once


@dataclass
class _Item:
    """One candidate image of a folder: its file and what the index says about it."""

    path: Path
    file: str  # relative to the data root
    index: int = 0  # its position in the index file (clevr: seeds its captions)
    captions: list[str] | None = None  # coco
    objects: list[dict[str, Any]] = field(default_factory=list)  # clevr: attribute -> value word, "pixel_coords"


class _BadItems:
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


# ---------------------------------------------------------------- shared helpers


def existing_root(root: str | os.PathLike) -> Path:
    """`root` as a Path, which must be a directory."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root {path} is not a directory; set data.root to the dataset folder")
    return path


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


def _top_list(data: Any, key: str, path: Path) -> list:
    """data[key], which must be a list in a JSON object."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(f"{path}: expected a JSON object with a {key!r} list; is this the right file?")
    return data[key]


def fit(im: Image.Image, size: int | None, crop: bool) -> np.ndarray:
    """(H, W, 3) uint8 as is (size None or already size x size), else (size, size, 3) bicubic, from the centre square
    (crop) or the whole image."""
    if size is None or im.size == (size, size):
        return np.asarray(im, dtype=np.uint8)
    side = min(im.size)
    box = ((im.width - side) / 2, (im.height - side) / 2, (im.width + side) / 2, (im.height + side) / 2)
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC, box=box if crop else None), dtype=np.uint8)


def _decoder(size: int | None, crop: bool):
    """decode(item) -> (image or None, the problem or None, {file, width, height}) for `build_store`."""

    def decode(item: _Item) -> tuple[np.ndarray | None, str | None, dict[str, Any]]:
        facts: dict[str, Any] = {"file": item.file}
        try:
            with Image.open(item.path) as im:
                im.load()  # decodes every byte: a truncated file fails here
                facts |= {"width": im.width, "height": im.height}
                return fit(im.convert("RGB"), size, crop), None, facts
        except IMAGE_ERRORS as err:
            return None, f"cannot read image {item.path}: {err}", facts

    return decode


def _stat_key(items: list[_Item], bad: _BadItems) -> tuple[list[_Item], list[tuple[str, int, int]]]:
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


# ---------------------------------------------------------------- the readers


def folder_images(cfg: DataConfig, split: str, size: int | None, cache: Path) -> ImageSet:
    """Split `split` (a game split, mapped by data.splits) of a clevr, coco or plain folder as an ImageSet of at most
    `size` images (None: all), decoded once into the cache."""
    root, name = existing_root(cfg.root), cfg.split_name(split)
    source = split_source(cfg.kind, root, name)
    bad = _BadItems(source, cfg.skip_bad)
    vocab_name = None
    if cfg.kind == "clevr":
        data = read_json(source)
        entries = _top_list(data, "scenes", source)
        info = data.get("info") if isinstance(data.get("info"), dict) else {}
        vocab_name = cfg.vocab or info.get("vocabulary") or "clevr"
        if not isinstance(vocab_name, str) or vocab_name not in VOCABULARIES:
            raise DataError(
                f"{source}: info.vocabulary {vocab_name!r} is not one of {', '.join(VOCABULARIES)}; set data.vocab"
            )
        items = _clevr_items(entries, source, root / "images" / name, root, VOCABULARIES[vocab_name], vocab_name, bad)
    elif cfg.kind == "coco":
        items = _coco_items(read_json(source), source, root, name, bad)
    else:
        items = [_Item(path, str(path.relative_to(root))) for path in _image_files(source)]
    items, stats = _stat_key(items, bad)
    crop = cfg.kind != "clevr"  # CLEVR is squashed whole, so that every object and its third of the width stay in view
    index_stat = source.stat()
    key = config_key(
        STORE_VERSION,
        cfg.kind,
        str(root.resolve()),
        name,
        cfg.image_size,
        crop,
        cfg.skip_bad,
        size,
        vocab_name,
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
            folder, items, _decoder(cfg.image_size, crop), size, bad.add, f"decoding {cfg.kind} {name}"
        )
    else:
        for reason in opened[1]["skipped"]:
            bad.add(reason)
    images, index = opened
    bad.report(len(images))
    kept = [items[row["item"]] for row in index["kept"]]
    scenes = _scene_batch(kept, index["kept"], name, VOCABULARIES[vocab_name]) if cfg.kind == "clevr" else None
    captions = [item.captions for item in kept] if cfg.kind == "coco" else None
    lexicon = {attr: tuple(w.lower() for w in words) for attr, words in cfg.lexicon.items()}
    _LOADED[request] = ImageSet(
        images,
        cfg.kind,
        name,
        f"{cfg.kind} {name} ({root})",
        key,
        scenes=scenes,
        captions=captions,
        files=[item.file for item in kept],
        lexicon=lexicon,
        skipped=list(bad.reasons),
    )
    return _LOADED[request]


def split_source(kind: str, root: Path, name: str) -> Path:
    """What a split of a folder dataset is read from: its scenes file (clevr), captions file (coco) or folder (folder);
    a DataError naming what is missing and what is there."""
    if kind == "clevr":
        return index_file(root / "scenes" / f"CLEVR_{name}_scenes.json", "CLEVR_*_scenes.json", "CLEVR scenes file")
    if kind == "coco":
        return index_file(root / "annotations" / f"captions_{name}.json", "captions_*.json", "COCO captions file")
    if kind == "folder":
        return split_folder(root, name)
    raise DataError(f"data.kind={kind} is not a folder dataset")


def split_folder(root: Path, name: str) -> Path:
    """The folder of a plain-folder split: root/<name>, or the root itself for ROOT_SPLIT."""
    folder = root if name == ROOT_SPLIT else root / name
    if not folder.is_dir():
        subfolders = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(
            f"{folder} is not a folder; a plain-folder split is a subfolder of data.root ({', '.join(subfolders) or 'none there'}) "
            f"or {ROOT_SPLIT!r} for the root itself: map it with data.splits (e.g. data.splits.test={ROOT_SPLIT})"
        )
    return folder


def _image_files(folder: Path) -> list[Path]:
    """Every image file under the folder (recursively), sorted by path; a DataError when there is none."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise DataError(
            f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}); point data.root (and the split) at a folder of images"
        )
    return files


def _coco_items(data: Any, source: Path, root: Path, name: str, bad: _BadItems) -> list[_Item]:
    """Every captioned image of a COCO captions file whose file exists, in the order of "images"."""
    files = _coco_files(_top_list(data, "images", source), source, bad)
    captions = _coco_captions(_top_list(data, "annotations", source), files, source, bad)
    items = []
    for image_id, file_name in files.items():
        if file_name is None or image_id not in captions:
            continue
        tried = [root / name / file_name, root / "images" / file_name, root / file_name]
        found = next((p for p in tried if p.is_file()), None)
        if found is None:
            bad.add(f"image file {file_name!r} (image id {image_id}) not found; tried {', '.join(map(str, tried))}")
        else:
            items.append(_Item(found, str(found.relative_to(root)), captions=captions[image_id]))
    return items


def _coco_files(images: list, path: Path, bad: _BadItems) -> dict[Any, str | None]:
    """Image id -> file name from the "images" list; None marks an entry already reported as bad."""
    files: dict[Any, str | None] = {}
    for i, entry in enumerate(images):
        image_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(image_id, (int, str)):
            bad.add(f"{path}: images[{i}] has no 'id'")
        elif image_id in files:
            bad.add(f"{path}: images[{i}] repeats image id {image_id}")
        elif not isinstance(entry.get("file_name"), str):
            bad.add(f"{path}: images[{i}] (id {image_id}) has no 'file_name'")
            files[image_id] = None
        elif not _within(entry["file_name"]):
            bad.add(
                f"{path}: images[{i}] (id {image_id}) has file_name {entry['file_name']!r}, which leaves the dataset folder"
            )
            files[image_id] = None
        else:
            files[image_id] = entry["file_name"]
    return files


def _coco_captions(annotations: list, files: dict[Any, str | None], path: Path, bad: _BadItems) -> dict[Any, list[str]]:
    """Image id -> its captions, in annotation order; annotations of bad image entries are dropped with them."""
    captions: dict[Any, list[str]] = {}
    for i, ann in enumerate(annotations):
        label = f"annotation {ann['id']}" if isinstance(ann, dict) and "id" in ann else f"annotations[{i}]"
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if (
            not isinstance(image_id, (int, str))
            or not isinstance(ann.get("caption"), str)
            or not ann["caption"].strip()
        ):
            bad.add(f"{path}: {label} needs an 'image_id' and a non-empty 'caption' string")
        elif image_id not in files:
            bad.add(f"{path}: {label} points to image_id {image_id} which is not in images")
        elif files[image_id] is not None:
            captions.setdefault(image_id, []).append(ann["caption"].strip())
    return captions


def _clevr_items(
    entries: list, source: Path, image_dir: Path, root: Path, vocab: Vocabulary, vocab_name: str, bad: _BadItems
) -> list[_Item]:
    """Every valid scene whose image file exists, in file order (the referent is each scene's first object)."""
    items = []
    for i, entry in enumerate(entries):
        name = entry.get("image_filename") if isinstance(entry, dict) else None
        label = f"{source}: scene {i}" + (f" ({name})" if isinstance(name, str) else "")
        problem = _clevr_problem(entry, vocab, SCENE_KEYS[vocab_name])
        if problem:
            bad.add(f"{label} {problem}")
            continue
        path = image_dir / name
        keys = SCENE_KEYS[vocab_name]
        objects = [
            {**{attr: obj[key] for key, attr in keys.items()}, "pixel_coords": obj["pixel_coords"]}
            for obj in entry["objects"]
        ]
        items.append(_Item(path, str(path.relative_to(root)), index=i, objects=objects))
    return items


def _within(file_name: str) -> bool:
    """Whether a file name from an index file stays inside the dataset folder: relative, without '..' (a scene or
    captions file never makes the loader read elsewhere)."""
    path = PurePosixPath(file_name)
    return bool(file_name) and not path.is_absolute() and ".." not in path.parts


def _clevr_problem(entry: Any, vocab: Vocabulary, keys: dict[str, str]) -> str | None:
    """What makes a CLEVR scene entry unusable, or None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("image_filename"), str):
        return "has no 'image_filename'"
    if not _within(entry["image_filename"]):
        return f"has image_filename {entry['image_filename']!r}, which leaves the dataset folder"
    if not isinstance(entry.get("objects"), list) or not entry["objects"]:
        return "has no objects"
    for k, obj in enumerate(entry["objects"]):
        if not isinstance(obj, dict):
            return f"object {k} is not a JSON object"
        for key, attr in keys.items():
            if key not in obj:
                return f"object {k} has no {key!r}"
            if obj[key] not in vocab.values[attr]:
                return f"object {k} has {key} {obj[key]!r}, which is not one of {', '.join(vocab.values[attr])}"
        coords = obj.get("pixel_coords")
        if (
            not isinstance(coords, list)
            or len(coords) < 2
            or not all(isinstance(c, (int, float)) and abs(c) <= FLOAT32_MAX for c in coords[:2])
        ):
            return f"object {k} has no 'pixel_coords' [x, y, depth] (finite numbers)"
    return None


def _scene_batch(
    items: list[_Item], kept: list[dict[str, Any]], split: str, vocab: Vocabulary
) -> SceneBatch:  # kept: the store's rows
    """The scenes of the kept CLEVR items: attributes in the vocabulary, centres from pixel coordinates over the image
    size, position = the third of the width holding the centre."""
    k_max = max(len(item.objects) for item in items)
    attributes = vocab.attributes
    positions = vocab.values["position"]
    attrs = np.full((len(items), k_max, len(attributes)), -1, np.int64)  # (N, K, A)
    xy = np.zeros((len(items), k_max, 2), np.float32)  # (N, K, 2)
    for n, (item, row) in enumerate(zip(items, kept)):
        for k, obj in enumerate(item.objects):
            x, y = obj["pixel_coords"][0] / row["width"], obj["pixel_coords"][1] / row["height"]
            third = min(max(int(x * len(positions)), 0), len(positions) - 1)
            values = {**obj, "position": positions[third]}
            attrs[n, k] = [vocab.values[a].index(values[a]) for a in attributes]
            xy[n, k] = (x, y)
    index = np.array([item.index for item in items], dtype=np.int64)
    return SceneBatch(attrs, xy, np.zeros((len(items), k_max), np.float32), None, split, index, vocab)

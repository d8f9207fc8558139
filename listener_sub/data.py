"""Caption datasets with one interface: the synthetic world, COCO-caption folders, CLEVR-scene folders.

Every dataset yields `Example(image, captions, objects, x)`. Bad data (a missing or unreadable
image, malformed JSON, an entry pointing nowhere) raises a DataError naming the file and the
problem; with `skip_bad=True` bad items are skipped, kept in `.skipped` and reported in one warning.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import logging
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from listener_sub.files import atomic_path, cache_root, config_key
from listener_sub.errors import DataError, UserError
from listener_sub.world.grammar import CaptionConfig, caption_scenes, realize, sample_spec
from listener_sub.world.render import render
from listener_sub.world.scene import SPLITS, SceneBatch, WorldConfig, sample_scenes
from listener_sub.world.vocab import CLEVR_VOCAB, WORLD_VOCAB, Vocabulary

logger = logging.getLogger(__name__)

RENDER_VERSION = 1  # bump when the renderer's output changes, so cached images of older versions are not reused
PROGRESS_MIN = 20_000  # above this many images, render (or verify) behind a progress bar
RENDER_CHUNK = 4096  # scenes per render call behind the progress bar
REPORT_REASONS = 3  # reasons quoted in the one warning about skipped items
SKIP_HINT = "fix the data or pass data.skip_bad=true to skip such items"
KINDS = ("synthetic", "coco", "clevr")
CLEVR_ATTRIBUTES = {"color": "color", "shape": "shape", "size": "size", "material": "fill"}  # CLEVR key -> attribute
# what PIL raises on bad image files
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


@dataclass
class Example:
    """One item: an image, its captions and, for scene data, the objects it shows."""

    image: np.ndarray  # (H, W, 3) uint8
    captions: list[str]
    objects: list[dict[str, str]] | None = None  # attribute -> value word per object, referent first; None for COCO
    x: list[float] | None = None  # object centres as fractions of the image width (for relations); None for COCO


class CaptionDataset(Dataset, abc.ABC):
    """Items of (image, captions, optional scene attributes); `vocab` is None for free-text captions."""

    vocab: Vocabulary | None = None

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Example: ...


# ---------------------------------------------------------------- synthetic world


class SyntheticCaptions(CaptionDataset):
    """Scenes 0..size-1 of a split of the embedded world, rendered once (cached on disk), with grammar captions."""

    vocab = WORLD_VOCAB

    def __init__(
        self,
        world: WorldConfig,
        captions: CaptionConfig,
        split: str,
        size: int,
        per_scene: int = 5,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
    ):
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r} for synthetic data; choose one of: {', '.join(SPLITS)}")
        if size < 1:
            raise UserError(f"data.size must be at least 1, got {size}")
        try:
            self.scenes = sample_scenes(world, split, 0, size)
        except ValueError as err:
            raise UserError(f"bad world config: {err}") from err
        key = config_key(world, RENDER_VERSION)
        self.cache_path = cache_root(cache_dir) / "scenes" / f"{split}-{size}-{key}.npy"
        self.images = _cached_images(self.scenes, world.image_size, self.cache_path)  # (N, H, W, 3) uint8
        self.captions = caption_scenes(self.scenes, captions, per_scene, seed)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> Example:
        return Example(self.images[index], self.captions[index], self.scenes.objects(index), self.scenes.x(index))


def _cached_images(scenes: SceneBatch, image_size: int, path: Path) -> np.ndarray:
    """(N, H, W, 3) uint8 renders of scenes: loaded from `path` when it holds them, else rendered and saved there."""
    shape = (len(scenes), image_size, image_size, 3)
    images = _load_cache(path, shape) if path.exists() else None
    if images is not None:
        return images
    images = _render(scenes, image_size)
    try:
        with atomic_path(path) as tmp:
            np.save(tmp, images)
    except OSError as err:
        logger.warning("could not write the image cache %s (%s); images are rendered again next time", path, err)
    return images


def _load_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached images, or None (with a warning) when the file is unreadable or holds something else."""
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        logger.warning("image cache %s is unreadable (%s); rendering again and replacing it", path, err)
        return None
    if images.shape != shape or images.dtype != np.uint8:
        logger.warning(
            "image cache %s holds %s %s, expected %s uint8; rendering again and replacing it",
            path, images.shape, images.dtype, shape,
        )
        return None
    return images


def _render(scenes: SceneBatch, image_size: int) -> np.ndarray:
    """render(), in chunks behind a progress bar when there are many scenes."""
    if len(scenes) <= PROGRESS_MIN:
        return render(scenes, image_size)
    images = np.empty((len(scenes), image_size, image_size, 3), np.uint8)  # (N, H, W, 3)
    with tqdm(total=len(scenes), desc=f"rendering {scenes.split} scenes", unit="scene") as bar:
        for lo in range(0, len(scenes), RENDER_CHUNK):
            chunk = scenes[lo : lo + RENDER_CHUNK]
            images[lo : lo + len(chunk)] = render(chunk, image_size)
            bar.update(len(chunk))
    return images


# ---------------------------------------------------------------- image folders: shared helpers


class _BadItems:
    """Bad items of one source: the first raises, or with skip_bad all are kept and reported once."""

    def __init__(self, source: Path, skip_bad: bool):
        self.source, self.skip_bad, self.reasons = source, skip_bad, []

    def add(self, reason: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{reason}; {SKIP_HINT}")
        self.reasons.append(reason)

    def report(self, n_items: int) -> list[str]:
        """Warn once about the skipped items; fail when no usable item is left. Returns the reasons."""
        if self.reasons:
            logger.warning(
                "%s: skipped %d bad item(s) (data.skip_bad=true), e.g. %s",
                self.source, len(self.reasons), "; ".join(self.reasons[:REPORT_REASONS]),
            )
        if n_items == 0:
            skipped = f" ({len(self.reasons)} bad item(s) skipped)" if self.reasons else ""
            raise DataError(f"{self.source}: no usable items{skipped}; check data.root and data.split")
        return self.reasons


def _existing_root(root: str | os.PathLike) -> Path:
    """`root` as a Path, which must be a directory."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root {path} is not a directory; set data.root to the dataset folder")
    return path


def _index_file(path: Path, pattern: str, what: str) -> Path:
    """`path` if it is a file, else a DataError naming it and the files matching `pattern` beside it."""
    if path.is_file():
        return path
    found = sorted(p.name for p in path.parent.glob(pattern)) if path.parent.is_dir() else []
    hint = f"found {', '.join(found)} there; set data.split to match" if found else "check data.root and data.split"
    raise DataError(f"{what} not found: {path}; {hint}")


def _read_json(path: Path) -> Any:
    """Parsed JSON, or a DataError naming the file and where it is malformed."""
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}; fix or re-download the file"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from err


def _top_list(data: Any, key: str, path: Path) -> list:
    """data[key], which must be a list in a JSON object."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(f"{path}: expected a JSON object with a {key!r} list; is this the right file?")
    return data[key]


def _unreadable(path: Path) -> str | None:
    """Why PIL cannot verify an image file, or None when it can."""
    try:
        with Image.open(path) as im:
            im.verify()
    except IMAGE_ERRORS as err:
        return f"cannot read image {path}: {err}"
    return None


def _keep_readable(items: list, paths: list[Path], bad: _BadItems) -> list:
    """The items whose image file PIL verifies; the others are reported to `bad`."""
    checks = tqdm(paths, desc="verifying images", unit="image", disable=len(paths) <= PROGRESS_MIN)
    keep = []
    for item, path in zip(items, checks):
        reason = _unreadable(path)
        if reason:
            bad.add(reason)
        else:
            keep.append(item)
    return keep


def _open_rgb(path: Path) -> Image.Image:
    """An image file decoded to RGB, or a DataError naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except IMAGE_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err}; replace or remove the file") from err


def _to_array(im: Image.Image, size: int | None, crop: bool) -> np.ndarray:
    """(H, W, 3) uint8 as is, or (size, size, 3): bicubic, from the centre square (crop) or the whole image."""
    if size is None:
        return np.array(im, dtype=np.uint8)
    side = min(im.size)
    box = ((im.width - side) / 2, (im.height - side) / 2, (im.width + side) / 2, (im.height + side) / 2)
    resized = im.resize((size, size), Image.Resampling.BICUBIC, box=box if crop else None)
    return np.array(resized, dtype=np.uint8)


# ---------------------------------------------------------------- COCO captions


class CocoCaptions(CaptionDataset):
    """Images with >= 1 caption from `root/annotations/captions_{split}.json` (COCO format).

    Image files are looked up at root/{split}/, root/images/ and root/. `image_size`: shorter side
    resized to it, then centre-cropped to a square (bicubic). Files are checked to exist up front;
    with skip_bad they are also checked with PIL's verify() and failing ones skipped. A file that
    still fails to decode (verify() passes e.g. truncated JPEGs) raises a DataError in __getitem__.
    """

    vocab = None

    def __init__(
        self, root: str | os.PathLike, split: str = "train2017", image_size: int | None = None, skip_bad: bool = False
    ):
        self.root, self.split, self.image_size = _existing_root(root), split, image_size
        path = self.root / "annotations" / f"captions_{split}.json"
        path = _index_file(path, "captions_*.json", "COCO captions file")
        data = _read_json(path)
        bad = _BadItems(path, skip_bad)
        files = _coco_files(_top_list(data, "images", path), path, bad)
        captions = _coco_captions(_top_list(data, "annotations", path), files, path, bad)
        items = self._located(files, captions, bad)  # [(image path, captions)]
        self.items = _keep_readable(items, [p for p, _ in items], bad) if skip_bad else items
        self.skipped: list[str] = bad.report(len(self.items))

    def _located(
        self, files: dict[Any, str | None], captions: dict[Any, list[str]], bad: _BadItems
    ) -> list[tuple[Path, list[str]]]:
        """(image path, captions) of every captioned image whose file exists, in the order of "images"."""
        items = []
        for image_id, name in files.items():
            if name is None or image_id not in captions:
                continue
            tried = [self.root / self.split / name, self.root / "images" / name, self.root / name]
            found = next((p for p in tried if p.is_file()), None)
            if found is None:
                bad.add(f"image file {name!r} (image id {image_id}) not found; tried {', '.join(map(str, tried))}")
            else:
                items.append((found, captions[image_id]))
        return items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Example:
        path, captions = self.items[index]
        return Example(_to_array(_open_rgb(path), self.image_size, crop=True), list(captions))


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
        else:
            files[image_id] = entry["file_name"]
    return files


def _coco_captions(annotations: list, files: dict[Any, str | None], path: Path, bad: _BadItems) -> dict[Any, list[str]]:
    """Image id -> its captions, in annotation order; annotations of bad image entries are dropped with them."""
    captions: dict[Any, list[str]] = {}
    for i, ann in enumerate(annotations):
        label = f"annotation {ann['id']}" if isinstance(ann, dict) and "id" in ann else f"annotations[{i}]"
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if not isinstance(image_id, (int, str)) or not isinstance(ann.get("caption"), str):
            bad.add(f"{path}: {label} needs an 'image_id' and a 'caption' string")
        elif image_id not in files:
            bad.add(f"{path}: {label} points to image_id {image_id} which is not in images")
        elif files[image_id] is not None:
            captions.setdefault(image_id, []).append(ann["caption"].strip())
    return captions


# ---------------------------------------------------------------- CLEVR scenes


@dataclass(frozen=True)
class _ClevrScene:
    """A validated CLEVR scene: its image file and objects (without position, which needs the image width)."""

    index: int  # position in the scenes file; seeds the scene's captions
    path: Path
    objects: tuple[dict[str, str], ...]
    pixel_x: tuple[float, ...]


class ClevrCaptions(CaptionDataset):
    """CLEVR images (`root/images/{split}/`) with grammar captions made from `root/scenes/CLEVR_{split}_scenes.json`.

    CLEVR keys map to CLEVR_VOCAB attributes (material -> fill); position is the third of the image
    width holding the object's pixel x (the width is read from each image, 480 in CLEVR). The
    referent is the first object. `image_size` resizes the whole image to a square (no crop, so
    every object and its third stay in view). Captions of scene i are the same on every call.
    """

    vocab = CLEVR_VOCAB

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        image_size: int | None = None,
        skip_bad: bool = False,
        captions: CaptionConfig | None = None,
        per_scene: int = 5,
        seed: int = 0,
    ):
        self.root, self.split, self.image_size = _existing_root(root), split, image_size
        self.caption_config = captions if captions is not None else CaptionConfig()
        self.per_scene, self.seed = per_scene, seed
        path = self.root / "scenes" / f"CLEVR_{split}_scenes.json"
        path = _index_file(path, "CLEVR_*_scenes.json", "CLEVR scenes file")
        bad = _BadItems(path, skip_bad)
        entries = _top_list(_read_json(path), "scenes", path)
        image_dir = self.root / "images" / split
        scenes = [s for i, e in enumerate(entries) if (s := _clevr_scene(i, e, path, image_dir, bad))]
        self.scenes = _keep_readable(scenes, [s.path for s in scenes], bad) if skip_bad else scenes
        self.skipped: list[str] = bad.report(len(self.scenes))

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> Example:
        scene = self.scenes[index]
        im = _open_rgb(scene.path)
        x = [px / im.width for px in scene.pixel_x]
        objects = [{**obj, "position": _third(xi)} for obj, xi in zip(scene.objects, x)]
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(scene.index,)))
        specs = [sample_spec(rng, objects, self.caption_config, x) for _ in range(self.per_scene)]
        captions = [realize(spec, CLEVR_VOCAB) for spec in specs]
        return Example(_to_array(im, self.image_size, crop=False), captions, objects, x)


def _third(x: float) -> str:
    """left / center / right for a horizontal position given as a fraction of the width."""
    positions = CLEVR_VOCAB.values["position"]
    return positions[min(max(int(x * len(positions)), 0), len(positions) - 1)]


def _clevr_scene(i: int, entry: Any, path: Path, image_dir: Path, bad: _BadItems) -> _ClevrScene | None:
    """One validated entry of a CLEVR scenes file; None (reported to `bad`) when it cannot be used."""
    name = entry.get("image_filename") if isinstance(entry, dict) else None
    label = f"{path}: scene {i}" + (f" ({name})" if isinstance(name, str) else "")
    problem = _clevr_problem(entry)
    if problem:
        bad.add(f"{label} {problem}")
        return None
    if not (image_dir / name).is_file():
        bad.add(f"{label}: image file {image_dir / name} not found")
        return None
    objects = tuple({attr: obj[key] for key, attr in CLEVR_ATTRIBUTES.items()} for obj in entry["objects"])
    return _ClevrScene(i, image_dir / name, objects, tuple(float(obj["pixel_coords"][0]) for obj in entry["objects"]))


def _clevr_problem(entry: Any) -> str | None:
    """What makes a CLEVR scene entry unusable, or None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("image_filename"), str):
        return "has no 'image_filename'"
    if not isinstance(entry.get("objects"), list) or not entry["objects"]:
        return "has no objects"
    for k, obj in enumerate(entry["objects"]):
        if not isinstance(obj, dict):
            return f"object {k} is not a JSON object"
        for key, attr in CLEVR_ATTRIBUTES.items():
            if key not in obj:
                return f"object {k} has no {key!r}"
            if obj[key] not in CLEVR_VOCAB.values[attr]:
                return f"object {k} has {key} {obj[key]!r}, which is not one of {', '.join(CLEVR_VOCAB.values[attr])}"
        coords = obj.get("pixel_coords")
        if not isinstance(coords, list) or not coords or not isinstance(coords[0], (int, float)):
            return f"object {k} has no 'pixel_coords' [x, y, depth]"
    return None


# ---------------------------------------------------------------- factory


def make_dataset(
    data_cfg: Mapping[str, Any],
    world: WorldConfig | None = None,
    captions: CaptionConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> CaptionDataset:
    """The dataset a data config names: kind (synthetic | coco | clevr), root, split, size, image_size, skip_bad, ...

    Keys a kind does not use are ignored. For synthetic data, `image_size` (if set) overrides
    world.image_size and `size` is required; coco and clevr need `root`.
    """
    cfg = {str(k): v for k, v in data_cfg.items()}  # also accepts an omegaconf DictConfig
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise UserError(f"unknown data.kind {kind!r}; choose one of: {', '.join(KINDS)}")
    image_size, skip_bad = cfg.get("image_size"), bool(cfg.get("skip_bad") or False)
    per_scene, seed = _get(cfg, "per_scene", 5), _get(cfg, "seed", 0)
    if kind == "synthetic":
        world = world if world is not None else WorldConfig()
        if image_size is not None:
            world = dataclasses.replace(world, image_size=int(image_size))
        size = int(_required(cfg, "size", kind))
        split = _get(cfg, "split", "train")
        return SyntheticCaptions(world, captions or CaptionConfig(), split, size, per_scene, seed, cache_dir)
    root = _required(cfg, "root", kind)
    if kind == "coco":
        return CocoCaptions(root, _get(cfg, "split", "train2017"), image_size, skip_bad)
    return ClevrCaptions(root, _get(cfg, "split", "val"), image_size, skip_bad, captions, per_scene, seed)


def _get(cfg: dict[str, Any], key: str, default: Any) -> Any:
    """cfg[key], or default when it is missing or null."""
    value = cfg.get(key)
    return default if value is None else value


def _required(cfg: dict[str, Any], key: str, kind: str) -> Any:
    """cfg[key], or a UserError when it is missing or null."""
    if cfg.get(key) is None:
        raise UserError(f"data.{key} is required for data.kind={kind}; set it, e.g. data.{key}=...")
    return cfg[key]

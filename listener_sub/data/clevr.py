"""CLEVR-format folders: scenes/CLEVR_<split>_scenes.json lists each image of images/<split>/ with its objects.

An object's attributes are words of a scene vocabulary (data.vocab, else the scene file's info.vocabulary, else
CLEVR's own); its position is the third of the image's width holding its pixel coordinates. The referent of a scene
is its first object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from listener_sub.data.config import DataConfig
from listener_sub.data.reader import BadItems, Item, Listing, Reader, index_file, read_json, top_list, within
from listener_sub.errors import DataError
from listener_sub.world import VOCABULARIES, SceneBatch, Vocabulary

FLOAT32_MAX = float(np.finfo(np.float32).max)  # pixel coordinates are kept as float32: larger ones are refused
SCENE_KEYS = {  # scene-file object key -> attribute, per vocabulary (CLEVR's material plays the part of fill)
    "clevr": {"color": "color", "shape": "shape", "size": "size", "material": "fill"},
    "world": {"color": "color", "shape": "shape", "size": "size", "fill": "fill"},
}


class ClevrReader(Reader):
    """Scenes from a CLEVR scenes file, their images from images/<split>/."""

    crop = False  # CLEVR is squashed whole, so that every object and its third of the width stay in view

    def split_source(self, root: Path, name: str) -> Path:
        return index_file(root / "scenes" / f"CLEVR_{name}_scenes.json", "CLEVR_*_scenes.json", "CLEVR scenes file")

    def list_items(self, cfg: DataConfig, root: Path, name: str, source: Path, bad: BadItems) -> Listing:
        """Every valid scene, in file order, in the vocabulary data.vocab or the file's info names."""
        data = read_json(source)
        entries = top_list(data, "scenes", source)
        info = data.get("info") if isinstance(data.get("info"), dict) else {}
        vocab_name = cfg.vocab or info.get("vocabulary") or "clevr"
        if not isinstance(vocab_name, str) or vocab_name not in VOCABULARIES:
            raise DataError(
                f"{source}: info.vocabulary {vocab_name!r} is not one of {', '.join(VOCABULARIES)}; set data.vocab"
            )
        items = _items(entries, source, root / "images" / name, root, VOCABULARIES[vocab_name], vocab_name, bad)
        return Listing(items, vocab_name)

    def scenes(self, listing: Listing, kept: list[Item], rows: list[dict[str, Any]], split: str) -> SceneBatch:
        """The scenes of the kept items: attributes in the vocabulary, centres from pixel coordinates over the image
        size, position = the third of the width holding the centre."""
        vocab = VOCABULARIES[listing.vocab]
        k_max = max(len(item.objects) for item in kept)
        attributes = vocab.attributes
        positions = vocab.values["position"]
        attrs = np.full((len(kept), k_max, len(attributes)), -1, np.int64)  # (N, K, A)
        xy = np.zeros((len(kept), k_max, 2), np.float32)  # (N, K, 2)
        for n, (item, row) in enumerate(zip(kept, rows)):
            for k, obj in enumerate(item.objects):
                x, y = obj["pixel_coords"][0] / row["width"], obj["pixel_coords"][1] / row["height"]
                third = min(max(int(x * len(positions)), 0), len(positions) - 1)
                values = {**obj, "position": positions[third]}
                attrs[n, k] = [vocab.values[a].index(values[a]) for a in attributes]
                xy[n, k] = (x, y)
        index = np.array([item.index for item in kept], dtype=np.int64)
        return SceneBatch(attrs, xy, np.zeros((len(kept), k_max), np.float32), None, split, index, vocab)


def _items(
    entries: list, source: Path, image_dir: Path, root: Path, vocab: Vocabulary, vocab_name: str, bad: BadItems
) -> list[Item]:
    """An item of every valid scene entry, in file order."""
    keys = SCENE_KEYS[vocab_name]
    items = []
    for i, entry in enumerate(entries):
        name = entry.get("image_filename") if isinstance(entry, dict) else None
        label = f"{source}: scene {i}" + (f" ({name})" if isinstance(name, str) else "")
        problem = _problem(entry, vocab, keys)
        if problem:
            bad.add(f"{label} {problem}")
            continue
        path = image_dir / name
        objects = [
            {**{attr: obj[key] for key, attr in keys.items()}, "pixel_coords": obj["pixel_coords"]}
            for obj in entry["objects"]
        ]
        items.append(Item(path, str(path.relative_to(root)), index=i, objects=objects))
    return items


def _problem(entry: Any, vocab: Vocabulary, keys: dict[str, str]) -> str | None:
    """What makes a CLEVR scene entry unusable, or None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("image_filename"), str):
        return "has no 'image_filename'"
    if not within(entry["image_filename"]):
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

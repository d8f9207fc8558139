"""COCO-format folders: annotations/captions_<split>.json names each image ("images") and its captions
("annotations"); an image file lies in <split>/, images/ or the root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from listener_sub.data.config import DataConfig
from listener_sub.data.reader import BadItems, Item, Listing, Reader, index_file, read_json, top_list, within


class CocoReader(Reader):
    """Captioned images from a COCO captions file."""

    def split_source(self, root: Path, name: str) -> Path:
        return index_file(root / "annotations" / f"captions_{name}.json", "captions_*.json", "COCO captions file")

    def list_items(self, cfg: DataConfig, root: Path, name: str, source: Path, bad: BadItems) -> Listing:
        """Every captioned image whose file exists, in the order of "images"."""
        data = read_json(source)
        files = _files(top_list(data, "images", source), source, bad)
        captions = _captions(top_list(data, "annotations", source), files, source, bad)
        items = []
        for image_id, file_name in files.items():
            if file_name is None or image_id not in captions:
                continue
            tried = [root / name / file_name, root / "images" / file_name, root / file_name]
            found = next((p for p in tried if p.is_file()), None)
            if found is None:
                bad.add(f"image file {file_name!r} (image id {image_id}) not found; tried {', '.join(map(str, tried))}")
            else:
                items.append(Item(found, str(found.relative_to(root)), captions=captions[image_id]))
        return Listing(items)

    def captions(self, kept: list[Item]) -> list[list[str]]:
        return [item.captions for item in kept]


def _files(images: list, path: Path, bad: BadItems) -> dict[Any, str | None]:
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
        elif not within(entry["file_name"]):
            bad.add(
                f"{path}: images[{i}] (id {image_id}) has file_name {entry['file_name']!r}, "
                "which leaves the dataset folder"
            )
            files[image_id] = None
        else:
            files[image_id] = entry["file_name"]
    return files


def _captions(annotations: list, files: dict[Any, str | None], path: Path, bad: BadItems) -> dict[Any, list[str]]:
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

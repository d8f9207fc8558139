"""Tiny dataset folders the tests make themselves: COCO captions, CLEVR scenes, plain images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from listener_sub.world import WorldConfig, render, sample_scenes


def image(path: Path, size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def coco(root: Path, extra_annotations: list[dict] = ()) -> None:
    """3 captioned images in the three supported places (+ one without captions), 5 captions; split train2017."""
    image(root / "train2017" / "a.jpg", colour=(250, 0, 0))
    image(root / "images" / "b.png", colour=(0, 250, 0))
    c = np.zeros((20, 40, 3), np.uint8)
    c[:, :20], c[:, 20:] = (255, 0, 0), (0, 0, 255)  # left half red, right half blue
    Image.fromarray(c).save(root / "c.png")
    images = [
        {"id": 1, "file_name": "a.jpg"},
        {"id": 2, "file_name": "b.png"},
        {"id": 3, "file_name": "c.png"},
        {"id": 4, "file_name": "uncaptioned.png"},
    ]
    annotations = [
        {"id": 10, "image_id": 1, "caption": "A red picture. "},
        {"id": 11, "image_id": 2, "caption": "Something green."},
        {"id": 12, "image_id": 1, "caption": "Red again."},
        {"id": 13, "image_id": 3, "caption": "Red and blue."},
        {"id": 14, "image_id": 2, "caption": "Green again."},
        *extra_annotations,
    ]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "captions_train2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations})
    )


def clevr_object(color: str, shape: str, x: float, size: str = "large", material: str = "rubber") -> dict:
    return {
        "color": color,
        "shape": shape,
        "size": size,
        "material": material,
        "3d_coords": [0.0, 0.0, 0.7],
        "pixel_coords": [x, 16, 10.0],
        "rotation": 12.0,
    }


def clevr(root: Path, first_colour: str = "red") -> None:
    """2 scenes of split val with 48x32 images: 3 objects (left, center, right) and 1 object."""
    scenes = [
        {
            "image_index": 0,
            "image_filename": "CLEVR_val_000000.png",
            "split": "val",
            "objects": [
                clevr_object(first_colour, "cube", 5),
                clevr_object("blue", "sphere", 24, "small", "metal"),
                clevr_object("gray", "cylinder", 40),
            ],
            "relationships": {},
        },
        {
            "image_index": 1,
            "image_filename": "CLEVR_val_000001.png",
            "split": "val",
            "objects": [clevr_object("yellow", "sphere", 30, "small", "metal")],
            "relationships": {},
        },
    ]
    for scene in scenes:
        image(root / "images" / "val" / scene["image_filename"], size=(48, 32), colour=(120, 120, 120))
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    (root / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"info": {}, "scenes": scenes}))


def coco_of_world(
    root: Path,
    n: int,
    splits: dict[str, str] | None = None,
    world: WorldConfig = WorldConfig(),
) -> None:
    """A COCO-format folder of the world's first n scenes per split (world split -> COCO split name; default train2017,
    val2017), two captions each:
    the canonical caption of the referent with every attribute and with colour and shape."""
    from listener_sub.world import ATTRIBUTES, canonical_caption

    splits = {"train": "train2017", "test": "val2017"} if splits is None else splits
    for world_split, split in splits.items():
        scenes = sample_scenes(world, world_split, 0, n)
        pixels = render(scenes, world.image_size)
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(n):
            name = f"{split}_{i:05d}.png"
            Image.fromarray(pixels[i]).save(folder / name)
            images.append({"id": i, "file_name": name})
            obj = scenes.objects(i)[0]
            for k, attributes in enumerate((ATTRIBUTES, ("color", "shape"))):
                annotations.append({"id": 2 * i + k, "image_id": i, "caption": canonical_caption(obj, attributes)})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations})
        )


def plain_folder(root: Path, n: int, world: WorldConfig = WorldConfig(), split: str = "test") -> None:
    """The world's first n scenes of a split as PNG files in nested folders (a plain folder: no index, no captions)."""
    pixels = render(sample_scenes(world, split, 0, n), world.image_size)
    for i in range(n):
        path = root / f"part{i % 2}" / f"img_{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i]).save(path)


CLEVR_RGB = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}


def clevr_folder(root: Path, n: int, splits: tuple[str, ...] = ("train", "val"), side: int = 64, seed: int = 0) -> None:
    """A CLEVR-format folder in CLEVR's vocabulary: n scenes per split of 1-3 objects drawn as squares of their colour
    (large ones larger) at their pixel coordinates, each in its own third of the width."""
    from listener_sub.world import CLEVR_VOCAB

    rng = np.random.default_rng(seed)
    values = CLEVR_VOCAB.values
    for split in splits:
        entries = []
        for i in range(n):
            pixels = np.full((side, side, 3), 160, np.uint8)
            objects = []
            for third in rng.permutation(3)[: rng.integers(1, 4)]:
                obj = {
                    key: str(rng.choice(values[attr]))
                    for key, attr in (("color", "color"), ("shape", "shape"), ("size", "size"), ("material", "fill"))
                }
                x, y = (third + 0.5) * side / 3, side / 2
                half = side // (10 if obj["size"] == "small" else 7)
                pixels[int(y) - half : int(y) + half, int(x) - half : int(x) + half] = CLEVR_RGB[obj["color"]]
                objects.append({**obj, "pixel_coords": [x, y, 10.0]})
            name = f"CLEVR_{split}_{i:06d}.png"
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / "images" / split / name)
            entries.append({"image_index": i, "image_filename": name, "split": split, "objects": objects})
        (root / "scenes").mkdir(parents=True, exist_ok=True)
        (root / "scenes" / f"CLEVR_{split}_scenes.json").write_text(
            json.dumps({"info": {"split": split}, "scenes": entries})
        )

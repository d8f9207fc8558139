"""The embedded world written as a CLEVR-format folder: the same scenes and pixels, readable by data=clevr.

    out/scenes/CLEVR_<split>_scenes.json
        {"info": {"vocabulary": "world", ...}, "scenes": [{"image_filename", "objects"}]}
    out/images/<split>/CLEVR_<split>_NNNNNN.png

Each object carries its colour, shape, size and fill (the world's words) and its centre in pixels
("pixel_coords": [x, y, 0]); the reader derives position (the third of the width) from x, as for CLEVR.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from listener_sub.data.clevr import SCENE_KEYS
from listener_sub.data.synthetic import synthetic_images
from listener_sub.files import atomic_path, to_plain
from listener_sub.world import WorldConfig

WRITE_THREADS = 4  # PNG encoding releases the GIL


def export_world(world: WorldConfig, split: str, scenes: int, out: str | Path, progress: bool = True) -> Path:
    """Scenes 0 .. scenes-1 of a world split as a CLEVR-format folder under `out`; returns the scene file.

    The split's image folder and scene file are each replaced atomically; other splits in `out` stay.
    """
    images = synthetic_images(world, split, scenes)
    batch, size = images.scenes, world.image_size
    names = [f"CLEVR_{split}_{i:06d}.png" for i in range(len(images))]
    out = Path(out)
    with atomic_path(out / "images" / split) as tmp:
        tmp.mkdir(parents=True)
        with ThreadPoolExecutor(WRITE_THREADS) as pool:
            writes = pool.map(lambda i: Image.fromarray(images.images[i]).save(tmp / names[i]), range(len(names)))
            for _ in tqdm(
                writes,
                total=len(names),
                desc=f"writing {split} images",
                unit="image",
                disable=not progress,
                leave=False,
            ):
                pass
    keys = {attr: key for key, attr in SCENE_KEYS["world"].items()}
    entries = []
    for i, name in enumerate(names):
        present = np.flatnonzero(batch.present[i])
        objects = [
            {
                **{keys[a]: v for a, v in obj.items() if a in keys},
                "pixel_coords": [float(batch.xy[i, k, 0]) * size, float(batch.xy[i, k, 1]) * size, 0.0],
            }
            for k, obj in zip(present, batch.objects(i))
        ]
        entries.append({"split": split, "image_index": i, "image_filename": name, "objects": objects})
    info = {
        "vocabulary": "world",
        "split": split,
        "image_size": size,
        "world": to_plain(world),
        "made_by": "listener-sub export",
    }
    path = out / "scenes" / f"CLEVR_{split}_scenes.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"info": info, "scenes": entries}))
    return path

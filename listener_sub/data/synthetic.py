"""The embedded world as an image set: scenes 0 .. size-1 of a split, rendered."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from listener_sub.data.imageset import ImageSet
from listener_sub.errors import UserError
from listener_sub.files import config_key
from listener_sub.world import SPLITS, SceneBatch, WorldConfig, render, sample_scenes

RENDER_VERSION = 1  # bump when the renderer's output changes, so caches keyed by rendered images are not reused
PROGRESS_MIN = 20_000  # above this many images, render behind a progress bar
RENDER_CHUNK = 4096  # scenes per render call behind the progress bar


def synthetic_images(world: WorldConfig, split: str, size: int) -> ImageSet:
    """Scenes 0 .. size-1 of a split of the world, rendered (12,000 64 px images a second on one core)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} of the embedded world; choose one of: {', '.join(SPLITS)}")
    if size < 1:
        raise UserError(f"a synthetic image set needs at least one scene, got size={size}")
    try:
        scenes = sample_scenes(world, split, 0, size)
    except ValueError as err:
        raise UserError(f"bad world config: {err}") from err
    key = config_key("synthetic", world, RENDER_VERSION, split, size)
    return ImageSet(
        render_scenes(scenes, world.image_size), "synthetic", split, f"synthetic {split}", key, scenes=scenes
    )


def render_scenes(scenes: SceneBatch, image_size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 renders, in chunks behind a progress bar when there are many scenes."""
    if len(scenes) <= PROGRESS_MIN:
        return render(scenes, image_size)
    images = np.empty((len(scenes), image_size, image_size, 3), np.uint8)  # (N, H, W, 3)
    with tqdm(total=len(scenes), desc=f"rendering {scenes.split} scenes", unit="scene") as bar:
        for lo in range(0, len(scenes), RENDER_CHUNK):
            chunk = scenes[lo : lo + RENDER_CHUNK]
            images[lo : lo + len(chunk)] = render(chunk, image_size)
            bar.update(len(chunk))
    return images

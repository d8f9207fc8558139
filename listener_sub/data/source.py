"""A data config made concrete: the world it renders (synthetic data) and the cache its decoded images live in."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from listener_sub.data.config import DataConfig
from listener_sub.data.folders import existing_root, folder_images, split_source
from listener_sub.data.imageset import ImageSet
from listener_sub.data.synthetic import synthetic_images
from listener_sub.errors import UserError
from listener_sub.files import cache_root
from listener_sub.world import SPLITS, WorldConfig


@dataclass
class DataSource:
    """Where a game's pools (and the pretraining recipes' images) come from: `load(split, size)` gives an ImageSet."""

    config: DataConfig = field(default_factory=DataConfig)
    world: WorldConfig = field(default_factory=WorldConfig)  # synthetic data: the world rendered
    # folders: where decoded images are kept (None: $LISTENER_SUB_CACHE or ~/.cache/listener-sub)
    cache_dir: str | os.PathLike | None = None

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def has_attributes(self) -> bool:
        return self.config.has_attributes

    @property
    def has_captions(self) -> bool:
        return self.config.has_captions

    def check_split(self, split: str) -> None:
        """A DataError (a UserError) unless the game split names a split this data has; cheap, reads no image."""
        cfg, name = self.config, self.config.split_name(split)
        if cfg.kind == "synthetic":
            if name not in SPLITS:
                raise UserError(f"the embedded world has no split {name!r}; choose one of: {', '.join(SPLITS)}")
            return
        split_source(cfg.kind, existing_root(cfg.root), name)

    def load(self, split: str, size: int | None = None) -> ImageSet:
        """The first `size` usable images of the split (None: all of a folder; synthetic data needs a size)."""
        cfg = self.config
        if cfg.kind == "synthetic":
            if size is None:
                raise UserError(
                    "the embedded world has no fixed size: set game.pool_size (scenes per pool) to a number"
                )
            world = (
                self.world
                if cfg.image_size is None
                else dataclasses.replace(self.world, image_size=int(cfg.image_size))
            )
            return synthetic_images(world, cfg.split_name(split), int(size))
        return folder_images(cfg, split, size, cache_root(self.cache_dir))

    def with_config(self, config: DataConfig) -> DataSource:
        """The same world and cache over other data."""
        return dataclasses.replace(self, config=config)

"""The artifact cache: trained models in directories keyed by everything that made them, built once.

`ArtifactCache.get_or_build(kind, key, builder)` returns the artifact's path, running `builder(tmp)` into a
temporary path first (renamed into place atomically) when it is missing. Keys come from `config_key` over
every setting of the recipe that makes the artifact, so a changed setting is a new artifact.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from listener_sub.files import atomic_path, cache_root


class ArtifactCache:
    """Artifacts under `root/<kind>/<key>/<name>`; records what this process built and how long each kind took."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = cache_root(root)
        self.built: list[str] = []  # artifacts built by this process (the rest came from the cache)
        self.wall_s: dict[str, float] = {}  # kind -> seconds spent building artifacts of that kind

    def path(self, kind: str, key: str, name: str) -> Path:
        """Where the artifact `name` of `kind` with `key` lives (it may not exist yet)."""
        return self.root / kind / key / name

    def has(self, kind: str, key: str, name: str) -> bool:
        return self.path(kind, key, name).exists()

    def get_or_build(self, kind: str, key: str, name: str, builder: Callable[[Path], object]) -> Path:
        """The artifact's path; when missing, `builder(tmp)` writes it at `tmp` and it is moved into place atomically."""
        path = self.path(kind, key, name)
        if not path.exists():
            start = time.perf_counter()
            with atomic_path(path) as tmp:
                builder(tmp)
            self.record(kind, str(path), time.perf_counter() - start)
        return path

    def record(self, kind: str, path: str, seconds: float) -> None:
        """Note an artifact built (here or in a worker process) and its wall time."""
        self.wall_s[kind] = self.wall_s.get(kind, 0.0) + seconds
        self.built.append(path)

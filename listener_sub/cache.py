"""The artifact cache: trained models in directories keyed by everything that made them, built once.

`ArtifactCache.get_or_build(kind, key, name, builder)` returns the artifact's path, running `builder(tmp)` into a
temporary path first (renamed into place atomically) when it is missing. Keys come from `config_key` over
every setting of the recipe that makes the artifact, so a changed setting is a new artifact.

Two processes that need the same missing artifact (two shells, one cache) take turns on a file lock beside it: the
first builds it, the second finds it built. Beside each artifact a record (`<name>.record.json`) keeps every file's
size and SHA-256; an artifact that no longer matches its record (truncated, corrupted) is rebuilt with one warning.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from listener_sub.errors import UserError
from listener_sub.files import atomic_path, cache_root, write_json

logger = logging.getLogger(__name__)
RECORD_SUFFIX = ".record.json"  # beside an artifact: {relative file path: [size, sha256]}
HASH_CHUNK = 1 << 20
ABOUT = "about.json"  # in an artifact's key directory: what the artifact is


def file_digests(path: Path) -> dict[str, list]:
    """{file path relative to `path` ("." for a file artifact): [size in bytes, SHA-256 hex]} of every file of it."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digests = {}
    for file in files:
        sha = hashlib.sha256()
        with open(file, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                sha.update(chunk)
        digests[str(file.relative_to(path)) if file != path else "."] = [file.stat().st_size, sha.hexdigest()]
    return digests


class MissingArtifact(UserError):
    """An artifact a cache that may not build (`ArtifactCache(build=False)`) does not hold."""


class ArtifactCache:
    """Artifacts under `root/<kind>/<key>/<name>`; records what this process built and how long each kind took."""

    def __init__(self, root: str | os.PathLike | None = None, build: bool = True) -> None:
        self.root = cache_root(root)
        self.build = build  # False: a missing artifact raises MissingArtifact instead of being built
        self.built: list[str] = []  # artifacts built by this process (the rest came from the cache)
        self.wall_s: dict[str, float] = {}  # kind -> seconds spent building artifacts of that kind

    def path(self, kind: str, key: str, name: str) -> Path:
        """Where the artifact `name` of `kind` with `key` lives (it may not exist yet)."""
        return self.root / kind / key / name

    def has(self, kind: str, key: str, name: str) -> bool:
        return self.path(kind, key, name).exists()

    @contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Hold the artifact directory's lock (blocks while another process holds it)."""
        folder = self.root / kind / key
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get_or_build(
        self, kind: str, key: str, name: str, builder: Callable[[Path], object], about: dict[str, Any] | None = None
    ) -> Path:
        """The artifact's path; when missing or damaged, `builder(tmp)` writes it at `tmp` and it is moved into place
        atomically, under the lock, and its record is written beside it. `about` (what the artifact is: model,
        perception, seed, recipe, ...) is kept as ABOUT in the key's directory, so a person can tell the cache apart."""
        path = self.path(kind, key, name)
        if path.exists() and self.intact(path):
            return self._described(path, about)
        if not self.build:
            raise MissingArtifact(f"the artifact cache {self.root} lacks {path.relative_to(self.root)}")
        with self.lock(kind, key):
            if path.exists() and not self.intact(path):  # still damaged, now that no other process is building it
                logger.warning(
                    "cached artifact %s does not match its record %s (truncated or corrupted); rebuilding it",
                    path,
                    _record_path(path).name,
                )
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if not path.exists():
                start = time.perf_counter()
                with atomic_path(path) as tmp:
                    builder(tmp)
                write_json(_record_path(path), file_digests(path))
                self.record(kind, str(path), time.perf_counter() - start)
        return self._described(path, about)

    @staticmethod
    def _described(path: Path, about: dict[str, Any] | None) -> Path:
        """The artifact at `path`, with ABOUT written beside it when it lacks one."""
        if about is not None and not (path.parent / ABOUT).exists():
            write_json(path.parent / ABOUT, {"name": path.name, **about})
        return path

    def intact(self, path: Path) -> bool:
        """Whether the artifact matches its record. One without a record (from a cache that kept none, or by a
        process killed between the artifact's rename and its record) was complete when renamed: it is recorded now."""
        record = _record_path(path)
        if not record.exists():
            write_json(record, file_digests(path))
            return True
        try:
            expected = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            expected = None
        return expected == file_digests(path)

    def record(self, kind: str, path: str, seconds: float) -> None:
        """Note an artifact built (here or in a worker process) and its wall time."""
        self.wall_s[kind] = self.wall_s.get(kind, 0.0) + seconds
        self.built.append(path)


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)

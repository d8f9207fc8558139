"""Decoded images of a folder, kept on disk in one raw file and read on demand, so memory stays bounded.

`build_store` decodes every item once (in a few threads, behind a progress bar), checks it, resizes it and
writes the rows of a raw uint8 file; `StoredImages` reads rows by position (`os.pread`), so a pool of any size
costs only the rows a batch asks for. A store lives in the artifact cache under a key of everything that made
it (the files' names, sizes and times, the image size), so a changed folder is decoded again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from listener_sub.files import atomic_path

PIXELS = "images.u8"  # the rows: N x H x W x 3 uint8, C order
INDEX = "index.json"  # shape, the source item of every row, what each row's file measured, the skipped items
DECODE_THREADS = 4  # PIL releases the GIL while decoding
PROGRESS_MIN = 256  # items from which decoding shows a progress bar
DECODE_AHEAD = 64  # items decoded ahead of the writer


class StoredImages:
    """(N, H, W, 3) uint8 images in a raw file, indexed like a numpy array (int, slice or integer arrays)."""

    def __init__(self, path: str | os.PathLike, shape: Sequence[int]) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)  # (N, H, W, 3)
        self.dtype = np.dtype(np.uint8)
        self.row_bytes = int(np.prod(self.shape[1:]))
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:  # a worker process opens the file itself
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """(n,) row indices -> (n, H, W, 3); each run of consecutive rows is one read."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        flat = out.reshape(len(rows), self.row_bytes)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            if not len(run):
                continue
            first, count = int(sorted_rows[run[0]]), len(run)
            data = os.pread(self._fd, count * self.row_bytes, first * self.row_bytes)
            flat[order[run]] = np.frombuffer(data, np.uint8).reshape(count, self.row_bytes)
        return out

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        if index.size and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"image index out of range for {len(self)} stored images")
        flat = np.asarray(index, dtype=np.int64).reshape(-1) % max(len(self), 1)
        return self._read(flat).reshape(*index.shape, *self.shape[1:])

    def __iter__(self) -> Iterator[np.ndarray]:
        for row in range(len(self)):
            yield self[row]


def open_store(folder: Path) -> tuple[StoredImages, dict[str, Any]] | None:
    """The store in `folder` and its index (shape, kept: the source item of every row and what was read of it,
    skipped: why items were left out), or None when there is none or it is incomplete."""
    index_path, pixels = folder / INDEX, folder / PIXELS
    if not index_path.is_file() or not pixels.is_file():
        return None
    index = json.loads(index_path.read_text())
    images = StoredImages(pixels, index["shape"])
    if pixels.stat().st_size != len(images) * images.row_bytes:
        return None
    return images, index


def build_store(
    folder: Path,
    items: Sequence[Any],
    decode: Callable[[Any], tuple[np.ndarray | None, str | None, dict[str, Any]]],
    limit: int | None,
    on_bad: Callable[[str], None],
    desc: str,
) -> tuple[StoredImages, dict[str, Any]]:
    """Decode items in order into a new store at `folder` (atomically), keeping at most `limit` good ones.

    decode(item) -> (image (H, W, 3) uint8 or None, why it is bad or None, facts to record about it). A bad item
    goes to `on_bad` (which raises, or counts it). Every image must have the shape of the first one.
    """
    kept: list[dict[str, Any]] = []
    skipped: list[str] = []
    shape: tuple[int, ...] | None = None
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        with open(tmp / PIXELS, "wb") as out, ThreadPoolExecutor(DECODE_THREADS) as pool:
            bar = tqdm(
                total=min(limit or len(items), len(items)),
                desc=desc,
                unit="image",
                disable=len(items) < PROGRESS_MIN,
                leave=False,
            )
            for start in range(0, len(items), DECODE_AHEAD):
                if limit is not None and len(kept) >= limit:
                    break
                chunk = items[start : start + DECODE_AHEAD]
                for offset, (image, problem, facts) in enumerate(pool.map(decode, chunk)):
                    if limit is not None and len(kept) >= limit:
                        break
                    if image is not None and shape is not None and image.shape != shape:
                        problem = (
                            f"{facts.get('file', 'an image')} is {image.shape[1]}x{image.shape[0]}, "
                            f"the others {shape[1]}x{shape[0]}; set data.image_size to resize them all"
                        )
                    if problem is not None:
                        on_bad(problem)
                        skipped.append(problem)
                        continue
                    shape = shape or image.shape
                    out.write(np.ascontiguousarray(image, np.uint8).tobytes())
                    kept.append({"item": start + offset, **facts})
                    bar.update(1)
            bar.close()
        index = {"shape": [len(kept), *(shape or (0, 0, 3))], "kept": kept, "skipped": skipped}
        (tmp / INDEX).write_text(json.dumps(index))
    opened = open_store(folder)
    assert opened is not None, f"store {folder} was just written"
    return opened

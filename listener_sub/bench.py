"""Throughput benchmarks: each measures an optimized path against its naive counterpart."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from listener_sub.world import WorldConfig, render, sample_scenes


@contextmanager
def one_core() -> Iterator[int]:
    """Pin this process to a single CPU for the duration (where the OS allows it)."""
    if not hasattr(os, "sched_getaffinity"):
        yield os.cpu_count() or 1
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield 1
    finally:
        os.sched_setaffinity(0, before)


def best_rate(fn: Callable[[], object], items: int, repeats: int) -> float:
    """Items per second of the fastest of `repeats` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def bench_render(world: WorldConfig, n_images: int, repeats: int) -> dict[str, float]:
    """Images per second on one core: batched rendering vs one scene per call."""
    scenes = sample_scenes(world, "train", 0, n_images)
    naive_n = max(n_images // 8, 1)
    with one_core():
        batched = best_rate(lambda: render(scenes, world.image_size), n_images, repeats)
        naive = best_rate(lambda: [render(scenes[i : i + 1], world.image_size) for i in range(naive_n)], naive_n, repeats)
    return {"render/images_per_s": batched, "render/naive_images_per_s": naive, "render/speedup": batched / naive}

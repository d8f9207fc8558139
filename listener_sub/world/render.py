"""Batched numpy renderer: signed distance fields with analytic anti-aliasing."""

from __future__ import annotations

import numpy as np

from listener_sub.world.scene import EXTENT, SceneBatch
from listener_sub.world.vocab import STRIPE_DELTA, WORLD_VOCAB, isoluminant_palette

PALETTE = isoluminant_palette(len(WORLD_VOCAB.values["color"])).astype(np.float32)  # (C, 3)
FILLS = WORLD_VOCAB.values["fill"]
OUTLINE_WIDTH = 2.0 / 64  # outline thickness as a fraction of the image side
STRIPE_PERIOD = 2.0 / 64  # rows per stripe pair as a fraction of the image side (blur removes it)


def _box(px: np.ndarray, py: np.ndarray, hx: np.ndarray, hy: np.ndarray) -> np.ndarray:
    qx, qy = np.abs(px) - hx, np.abs(py) - hy
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _triangle(px: np.ndarray, py: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Equilateral triangle, apex up, circumradius ~r (py grows downwards)."""
    k = np.sqrt(3.0)
    half = r * 0.95
    x = np.abs(px) - half
    y = -py + half / k
    flip = x + k * y > 0
    x, y = np.where(flip, (x - k * y) / 2, x), np.where(flip, (-k * x - y) / 2, y)
    x = x - np.clip(x, -2 * half, 0)
    return -np.hypot(x, y) * np.sign(y)


def _sdf(shape: str, px: np.ndarray, py: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, negative inside) to a shape of radius r centred at the origin."""
    if shape == "circle":
        return np.hypot(px, py) - r
    if shape == "square":
        return _box(px, py, 0.85 * r, 0.85 * r)
    if shape == "diamond":
        return (np.abs(px) + np.abs(py) - 1.15 * r) / np.sqrt(2.0)
    if shape == "triangle":
        return _triangle(px, py * 1.0 - 0.2 * r, 1.15 * r)
    if shape == "cross":
        return np.minimum(_box(px, py, r, 0.34 * r), _box(px, py, 0.34 * r, r))
    raise ValueError(f"unknown shape {shape!r}")


def _coverage(sdf: np.ndarray) -> np.ndarray:
    return np.clip(0.5 - sdf, 0.0, 1.0)


def backdrop(params: np.ndarray, size: int) -> np.ndarray:
    """(B, 5) backdrop parameters (scene.BACKDROP) -> (B, H, W) float32 grey levels: level + amplitude * sin(wave)."""
    level, amplitude, cycles_x, cycles_y, phase = params.T[:, :, None, None]  # (B, 1, 1) each, in BACKDROP's order
    if not amplitude.any():
        return np.broadcast_to(level, (len(params), size, size)).astype(np.float32)
    pos = ((np.arange(size) + 0.5) / size).astype(np.float32)  # pixel centres as fractions of the side
    wave = np.sin(2 * np.pi * (cycles_x * pos[None, None, :] + cycles_y * pos[None, :, None]) + phase)  # (B, H, W)
    return (level + amplitude * wave).astype(np.float32)


def render(scenes: SceneBatch, image_size: int = 64) -> np.ndarray:
    """Render a batch of scenes to (B, H, W, 3) uint8.

    Each object is drawn inside a window around its centre (not over the whole image), which is
    what makes batched rendering fast.
    """
    size = image_size
    img = np.repeat(backdrop(scenes.backdrop, size)[..., None], 3, axis=-1)  # (B, H, W, 3)
    win = min(size, 2 * int(np.ceil(EXTENT * scenes.radius.max(initial=0.0) * size + 2)))  # window side
    local = np.arange(win)
    present = scenes.present
    for k in range(scenes.attrs.shape[1]):
        for s, shape in enumerate(WORLD_VOCAB.values["shape"]):
            idx = np.nonzero(present[:, k] & (scenes.attrs[:, k, 1] == s))[0]
            if len(idx) == 0:
                continue
            a = scenes.attrs[idx, k]  # (n_s, A)
            centre = scenes.xy[idx, k] * size  # (n_s, 2) pixels
            corner = np.clip(np.round(centre).astype(np.int64) - win // 2, 0, size - win)  # (n_s, 2)
            cols = corner[:, 0:1] + local  # (n_s, win)
            rows = corner[:, 1:2] + local  # (n_s, win)
            px = (cols + 0.5 - centre[:, 0:1]).astype(np.float32)[:, None, :]  # (n_s, 1, win)
            py = (rows + 0.5 - centre[:, 1:2]).astype(np.float32)[:, :, None]  # (n_s, win, 1)
            r = (scenes.radius[idx, k] * size)[:, None, None]
            sdf = _sdf(shape, px, py, r)  # (n_s, win, win)
            cover = _coverage(sdf)
            fill = a[:, 3]
            outlined = (fill == FILLS.index("outlined"))[:, None, None]
            ring = cover - _coverage(sdf + OUTLINE_WIDTH * size)
            cover = np.where(outlined, ring, cover)[..., None]  # (n_s, win, win, 1)
            stripe_rows = np.floor((rows + 0.5) / (STRIPE_PERIOD * size / 2)) % 2  # (n_s, win)
            stripe_sign = (1.0 - 2.0 * stripe_rows)[:, :, None, None]  # (n_s, win, 1, 1)
            striped = (fill == FILLS.index("striped")).astype(np.float32)[:, None, None, None]
            colour = PALETTE[a[:, 0]][:, None, None, :] + striped * STRIPE_DELTA * stripe_sign
            at = (idx[:, None, None], rows[:, :, None], cols[:, None, :])
            img[at] = img[at] * (1.0 - cover) + colour * cover
    return np.clip(np.round(img), 0, 255).astype(np.uint8)

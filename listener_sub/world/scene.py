"""Scene sampling: attribute arrays for batches of scenes, deterministic from (seed, split, index)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from listener_sub.world.vocab import ATTRIBUTES, WORLD_VOCAB, Vocabulary

SPLITS = ("train", "val", "test", "shifted")
CHUNK = 1024  # scenes per random stream: scene i comes from stream (seed, split, i // CHUNK)
RELATIVE_RADIUS = {"small": 0.095, "large": 0.155}  # object radius as a fraction of the image side
EXTENT = 1.2  # every shape (with its anti-aliased edge) fits in EXTENT * radius of its centre
CROWD_SCALE = 0.8  # worlds of several objects draw them smaller, so that regions never overlap


@dataclass(frozen=True)
class Style:
    """How a split is drawn: background grey level and a scale on every object."""

    background: int
    object_scale: float


STYLES = {"default": Style(background=40, object_scale=1.0), "shifted": Style(background=170, object_scale=0.8)}


@dataclass
class WorldConfig:
    """Everything that decides which scenes a split holds (not how captions are phrased)."""

    seed: int = 0
    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 1
    # (colour, shape) pairs that never occur in train/val/test and make up the shifted split;
    # None: colour i is held out with shape i mod n_shapes (every colour and shape still in train).
    heldout_combos: list[list[str]] | None = None
    styles: dict[str, str] = field(default_factory=lambda: {"shifted": "shifted"})  # split -> style

    def style(self, split: str) -> Style:
        return STYLES[self.styles.get(split, "default")]

    def heldout(self) -> list[tuple[int, int]]:
        """Held-out (colour index, shape index) pairs."""
        colors, shapes = WORLD_VOCAB.values["color"], WORLD_VOCAB.values["shape"]
        if self.heldout_combos is None:
            return [(c, c % len(shapes)) for c in range(len(colors))]
        pairs = []
        for color, shape in self.heldout_combos:
            if color not in colors or shape not in shapes:
                raise ValueError(f"heldout combo ({color}, {shape}) names an unknown colour or shape")
            pairs.append((colors.index(color), shapes.index(shape)))
        return pairs


@dataclass
class SceneBatch:
    """B scenes of up to K objects. Object 0 is the referent that captions describe.

    The embedded world's scenes (rendered from these arrays) and scenes read from a CLEVR-format folder (their
    attributes in that folder's vocabulary, no style: the pictures are files).
    """

    attrs: np.ndarray  # (B, K, A) int64 value indices in the vocabulary's attribute order, -1 where no object
    xy: np.ndarray  # (B, K, 2) float32 object centres as fractions of the image side (x right, y down)
    radius: np.ndarray  # (B, K) float32 object radii as fractions of the image side (0 where unknown)
    style: Style | None  # how the world draws them; None for scenes read from files
    split: str
    index: np.ndarray  # (B,) int64 scene index within its split
    vocab: Vocabulary = WORLD_VOCAB  # the words of the attribute values

    def __len__(self) -> int:
        return len(self.attrs)

    @property
    def present(self) -> np.ndarray:
        return self.attrs[..., 0] >= 0  # (B, K)

    def __getitem__(self, sel) -> "SceneBatch":
        sel = np.arange(len(self))[sel]
        sel = np.atleast_1d(sel)
        return SceneBatch(self.attrs[sel], self.xy[sel], self.radius[sel], self.style, self.split, self.index[sel], self.vocab)

    def objects(self, b: int) -> list[dict[str, str]]:
        """Attribute -> value word for each object of scene b (referent first)."""
        return [
            {a: self.vocab.values[a][int(v)] for a, v in zip(self.vocab.attributes, self.attrs[b, k])}
            for k in np.nonzero(self.present[b])[0]
        ]

    def x(self, b: int) -> list[float]:
        """Horizontal centres of the objects of scene b."""
        return [float(v) for v in self.xy[b, self.present[b], 0]]


def allowed_combos(cfg: WorldConfig, split: str) -> np.ndarray:
    """(P, 2) (colour, shape) index pairs a split may use."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    heldout = set(cfg.heldout())
    n_colors, n_shapes = len(WORLD_VOCAB.values["color"]), len(WORLD_VOCAB.values["shape"])
    combos = [(c, s) for c in range(n_colors) for s in range(n_shapes) if ((c, s) in heldout) == (split == "shifted")]
    return np.array(combos, dtype=np.int64)


def _stream(cfg: WorldConfig, split: str, chunk: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(SPLITS.index(split), chunk)))


def _sample_chunk(cfg: WorldConfig, split: str, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All CHUNK scenes of one random stream: attrs (CHUNK, K, A), xy (CHUNK, K, 2), radius (CHUNK, K)."""
    rng = _stream(cfg, split, chunk)
    n, k_max = CHUNK, cfg.max_objects
    sizes = WORLD_VOCAB.sizes()
    n_pos = sizes["position"]
    combos = allowed_combos(cfg, split)
    n_obj = rng.integers(cfg.min_objects, cfg.max_objects + 1, size=n)
    combo = combos[rng.integers(0, len(combos), size=(n, k_max))]  # (n, K, 2)
    size = rng.integers(0, sizes["size"], size=(n, k_max))
    fill = rng.integers(0, sizes["fill"], size=(n, k_max))
    # distinct horizontal regions per scene -> objects never overlap
    position = np.argsort(rng.random((n, n_pos)), axis=1)[:, :k_max]
    attrs = np.stack([combo[..., 0], combo[..., 1], size, fill, position], axis=-1)
    attrs[np.arange(k_max)[None, :] >= n_obj[:, None]] = -1

    scale = cfg.style(split).object_scale * (CROWD_SCALE if k_max > 1 else 1.0)
    radius = np.array([RELATIVE_RADIUS[s] for s in WORLD_VOCAB.values["size"]])[size] * scale  # (n, K)
    region = 1.0 / n_pos
    x_room = np.maximum(region / 2 - EXTENT * radius, 0.0)
    y_room = np.maximum(0.5 - EXTENT * radius, 0.0)
    x = (position + 0.5) * region + rng.uniform(-1, 1, size=(n, k_max)) * x_room
    y = 0.5 + rng.uniform(-1, 1, size=(n, k_max)) * y_room
    xy = np.stack([x, y], axis=-1).astype(np.float32)
    return attrs.astype(np.int64), xy, radius.astype(np.float32)


def sample_scenes(cfg: WorldConfig, split: str, start: int, count: int) -> SceneBatch:
    """Scenes start .. start+count-1 of a split; scene i is the same whatever batch it comes in."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if cfg.max_objects > WORLD_VOCAB.sizes()["position"]:
        raise ValueError(f"max_objects={cfg.max_objects} exceeds the {WORLD_VOCAB.sizes()['position']} position regions")
    if not 1 <= cfg.min_objects <= cfg.max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {cfg.min_objects}, {cfg.max_objects}")
    index = np.arange(start, start + count, dtype=np.int64)
    parts = []
    for chunk in range(start // CHUNK, (start + count - 1) // CHUNK + 1):
        lo, hi = max(start - chunk * CHUNK, 0), min(start + count - chunk * CHUNK, CHUNK)
        parts.append([array[lo:hi] for array in _sample_chunk(cfg, split, chunk)])
    k = cfg.max_objects
    empty = [np.zeros((0, k, len(ATTRIBUTES)), np.int64), np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32)]
    attrs, xy, radius = [np.concatenate(arrays) for arrays in zip(*parts)] if parts else empty
    return SceneBatch(
        attrs=attrs,
        xy=xy,
        radius=radius,
        style=cfg.style(split),
        split=split,
        index=index,
    )

"""Scene sampling: attribute arrays for batches of scenes, deterministic from (seed, split, index)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from listener_sub.world.vocab import ATTRIBUTES, WORLD_VOCAB, Vocabulary

SPLITS = ("train", "val", "test", "shifted", "pretrain")
PRETRAIN_SPLIT = "pretrain"  # what the locally trained models learn from: every combination, drawn in the broad style
CHUNK = 1024  # scenes per random stream: scene i comes from stream (seed, split, i // CHUNK)
RELATIVE_RADIUS = {"small": 0.095, "large": 0.155}  # object radius as a fraction of the image side
EXTENT = 1.2  # every shape (with its anti-aliased edge) fits in EXTENT * radius of its centre
CROWD_SCALE = 0.8  # worlds of several objects draw them smaller, so that regions never overlap
BACKDROP = ("level", "amplitude", "cycles_x", "cycles_y", "phase")  # the columns of SceneBatch.backdrop


@dataclass(frozen=True)
class Style:
    """How a split is drawn, as ranges each scene draws from uniformly (a fixed style has equal bounds).

    The backdrop is a grey level plus a sine wave over the image (amplitude in grey levels, frequency in cycles per
    image side, any direction); every object is drawn at a scale of its size's radius.
    """

    background: tuple[float, float]  # grey level of the backdrop
    object_scale: tuple[float, float] = (1.0, 1.0)
    wave_amplitude: tuple[float, float] = (0.0, 0.0)
    wave_cycles: tuple[float, float] = (0.0, 0.0)
    avoid: tuple[tuple[float, float], ...] = ()  # grey levels never drawn (open intervals inside `background`)


STYLES = {
    "default": Style(background=(40, 40)),
    "shifted": Style(background=(170, 170), object_scale=(0.8, 0.8)),
    "waves": Style(background=(210, 210), object_scale=(1.1, 1.1), wave_amplitude=(30, 30), wave_cycles=(2, 2)),
    # What pretraining sees: any grey level but the object luma's band (where a grayscale view loses the object) and
    # the held-out styles' bands, waves of any direction, objects from 0.7x to 1.1x.
    "broad": Style(
        background=(0, 255),
        object_scale=(0.7, 1.1),
        wave_amplitude=(0, 40),
        wave_cycles=(0.5, 4),
        avoid=((85, 115), (150, 190), (195, 225)),
    ),
}


def _uniform_outside(
    rng: np.random.Generator, bounds: tuple[float, float], avoid: tuple[tuple[float, float], ...], n: int
) -> np.ndarray:
    """(n,) uniform draws from bounds minus the avoided intervals."""
    lo, hi = bounds
    edges = [lo]
    for a, b in sorted(avoid):
        edges += [max(a, lo), min(b, hi)]
    edges.append(hi)
    pieces = np.array(edges, dtype=np.float64).reshape(-1, 2)  # (P, 2) allowed intervals
    widths = np.maximum(pieces[:, 1] - pieces[:, 0], 0.0)
    u = rng.random(n) * widths.sum()  # position along the allowed intervals laid end to end
    cum = np.concatenate([[0.0], np.cumsum(widths)])
    which = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, len(pieces) - 1)
    return pieces[which, 0] + (u - cum[which])


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
    # split -> style (other splits: default); world.styles.shifted=waves draws the shifted split in another style
    styles: dict[str, str] = field(default_factory=lambda: {"shifted": "shifted", PRETRAIN_SPLIT: "broad"})

    def style(self, split: str) -> Style:
        name = self.styles.get(split, "default")
        if name not in STYLES:
            raise ValueError(f"world.styles.{split}={name} is not a style; choose one of {', '.join(STYLES)}")
        return STYLES[name]

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
    attributes in that folder's vocabulary, no backdrop: the pictures are files).
    """

    attrs: np.ndarray  # (B, K, A) int64 value indices in the vocabulary's attribute order, -1 where no object
    xy: np.ndarray  # (B, K, 2) float32 object centres as fractions of the image side (x right, y down)
    radius: np.ndarray  # (B, K) float32 object radii as fractions of the image side (0 where unknown)
    backdrop: np.ndarray | None  # (B, len(BACKDROP)) float32 each scene's backdrop; None for scenes read from files
    split: str
    index: np.ndarray  # (B,) int64 scene index within its split
    vocab: Vocabulary = WORLD_VOCAB  # the words of the attribute values

    def __len__(self) -> int:
        return len(self.attrs)

    @property
    def present(self) -> np.ndarray:
        return self.attrs[..., 0] >= 0  # (B, K)

    def __getitem__(self, sel) -> SceneBatch:
        sel = np.arange(len(self))[sel]
        sel = np.atleast_1d(sel)
        backdrop = None if self.backdrop is None else self.backdrop[sel]
        return SceneBatch(
            self.attrs[sel], self.xy[sel], self.radius[sel], backdrop, self.split, self.index[sel], self.vocab
        )

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
    every = [(c, s) for c in range(n_colors) for s in range(n_shapes)]
    if split == PRETRAIN_SPLIT:
        combos = every  # pretraining sees the world broadly, held-out combinations too
    else:
        combos = [pair for pair in every if (pair in heldout) == (split == "shifted")]
    return np.array(combos, dtype=np.int64)


def _stream(cfg: WorldConfig, split: str, chunk: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(SPLITS.index(split), chunk)))


def _sample_chunk(cfg: WorldConfig, split: str, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All CHUNK scenes of one random stream: attrs (CHUNK, K, A), xy (CHUNK, K, 2), radius (CHUNK, K), backdrop
    (CHUNK, 5)."""
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

    jitter_x, jitter_y = rng.uniform(-1, 1, size=(n, k_max)), rng.uniform(-1, 1, size=(n, k_max))  # (n, K) each
    style = cfg.style(split)  # drawn last: a split's attributes and positions do not depend on its style
    scale = rng.uniform(*style.object_scale, size=(n, 1)) * (CROWD_SCALE if k_max > 1 else 1.0)  # (n, 1)
    level = _uniform_outside(rng, style.background, style.avoid, n)
    amplitude = rng.uniform(*style.wave_amplitude, size=n)
    cycles, angle, phase = (
        rng.uniform(*style.wave_cycles, size=n),
        rng.uniform(0, 2 * np.pi, size=n),
        rng.uniform(0, 2 * np.pi, size=n),
    )
    backdrop = np.stack([level, amplitude, cycles * np.cos(angle), cycles * np.sin(angle), phase], axis=1)  # (n, 5)

    radius = np.array([RELATIVE_RADIUS[s] for s in WORLD_VOCAB.values["size"]])[size] * scale  # (n, K)
    region = 1.0 / n_pos
    x_room = np.maximum(region / 2 - EXTENT * radius, 0.0)
    y_room = np.maximum(0.5 - EXTENT * radius, 0.0)
    x = (position + 0.5) * region + jitter_x * x_room
    y = 0.5 + jitter_y * y_room
    xy = np.stack([x, y], axis=-1).astype(np.float32)
    return attrs.astype(np.int64), xy, radius.astype(np.float32), backdrop.astype(np.float32)


def sample_scenes(cfg: WorldConfig, split: str, start: int, count: int) -> SceneBatch:
    """Scenes start .. start+count-1 of a split; scene i is the same whatever batch it comes in."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if cfg.max_objects > WORLD_VOCAB.sizes()["position"]:
        raise ValueError(
            f"max_objects={cfg.max_objects} exceeds the {WORLD_VOCAB.sizes()['position']} position regions"
        )
    if not 1 <= cfg.min_objects <= cfg.max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {cfg.min_objects}, {cfg.max_objects}")
    index = np.arange(start, start + count, dtype=np.int64)
    parts = []
    for chunk in range(start // CHUNK, (start + count - 1) // CHUNK + 1):
        lo, hi = max(start - chunk * CHUNK, 0), min(start + count - chunk * CHUNK, CHUNK)
        parts.append([array[lo:hi] for array in _sample_chunk(cfg, split, chunk)])
    k = cfg.max_objects
    empty = [
        np.zeros((0, k, len(ATTRIBUTES)), np.int64),
        np.zeros((0, k, 2), np.float32),
        np.zeros((0, k), np.float32),
        np.zeros((0, len(BACKDROP)), np.float32),
    ]
    attrs, xy, radius, backdrop = [np.concatenate(arrays) for arrays in zip(*parts)] if parts else empty
    return SceneBatch(
        attrs=attrs,
        xy=xy,
        radius=radius,
        backdrop=backdrop,
        split=split,
        index=index,
    )

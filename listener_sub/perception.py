"""Listener perceptions: batched, shape-preserving transforms of float images (B, 3, H, W) in [0, 1]."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from listener_sub.world.vocab import LUMA_WEIGHTS

# Named crop regions as (x0, y0, x1, y1) fractions: horizontal thirds at full height, vertical halves
# at full width (the world's positions are left / center / right thirds).
CROP_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left": (0.0, 0.0, 1 / 3, 1.0),
    "center": (1 / 3, 0.0, 2 / 3, 1.0),
    "right": (2 / 3, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 1.0),
}


class Perception(nn.Module):
    """Base class: checks the input is (B, 3, H, W) floating point, then calls `perceive`."""

    name: str = ""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"{self.name} expects float images of shape (B, 3, H, W); got {tuple(images.shape)} {images.dtype}"
            )
        return self.perceive(images)

    def perceive(self, images: torch.Tensor) -> torch.Tensor:
        """Transform (B, 3, H, W) images to (B, 3, H, W)."""
        raise NotImplementedError


class Full(Perception):
    """Identity: the listener sees the image as it is."""

    name = "full"

    def perceive(self, images: torch.Tensor) -> torch.Tensor:
        return images


class Grayscale(Perception):
    """BT.601 luma (0.299 R + 0.587 G + 0.114 B) replicated to 3 channels."""

    name = "grayscale"

    def perceive(self, images: torch.Tensor) -> torch.Tensor:
        weights = torch.as_tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device)  # (3,)
        luma = torch.einsum("bchw,c->bhw", images, weights).unsqueeze(1)  # (B, 1, H, W)
        return luma.repeat(1, 3, 1, 1)  # (B, 3, H, W)


class Blur(Perception):
    """Separable Gaussian blur per channel, kernel radius ceil(3 sigma), reflect padding."""

    name = "blur"

    def __init__(self, sigma: float = 1.5) -> None:
        super().__init__()
        sigma = float(sigma)
        if not sigma > 0:
            raise ValueError(f"blur sigma must be > 0, got {sigma}")
        self.sigma = sigma
        self.radius = math.ceil(3 * sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"

    def perceive(self, images: torch.Tensor) -> torch.Tensor:
        r = self.radius
        if r >= min(images.shape[-2:]):
            raise ValueError(f"blur radius {r} (sigma {self.sigma}) needs images larger than {r}x{r}")
        x = torch.arange(-r, r + 1, dtype=torch.float64)
        kernel = torch.exp(-(x**2) / (2 * self.sigma**2))
        kernel = (kernel / kernel.sum()).to(dtype=images.dtype, device=images.device)  # (2r+1,)
        padded = F.pad(images, (r, r, r, r), mode="reflect")  # (B, 3, H + 2r, W + 2r)
        rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)  # (B, 3, H + 2r, W)
        return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)  # (B, 3, H, W)


class LowRes(Perception):
    """Average-pool by `factor`, then nearest-upsample back to (H, W)."""

    name = "lowres"

    def __init__(self, factor: int = 4) -> None:
        super().__init__()
        if isinstance(factor, bool) or int(factor) != factor or factor < 1:
            raise ValueError(f"lowres factor must be a positive integer, got {factor!r}")
        self.factor = int(factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def perceive(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"lowres factor {self.factor} does not divide the image size {h}x{w}")
        small = F.avg_pool2d(images, self.factor)  # (B, 3, H / f, W / f)
        return F.interpolate(small, size=(h, w), mode="nearest")  # (B, 3, H, W)


class Crop(Perception):
    """Cut a box (x0, y0, x1, y1 as fractions of the image side, or a named region) and resize it back."""

    name = "crop"

    def __init__(self, box: str | Sequence[float] = "center") -> None:
        super().__init__()
        if isinstance(box, str):
            if box not in CROP_REGIONS:
                raise ValueError(f"unknown crop region {box!r}; choose one of: {', '.join(CROP_REGIONS)}")
            self.region: str | None = box
            coords = CROP_REGIONS[box]
        else:
            self.region = None
            coords = tuple(float(v) for v in box)
            if len(coords) != 4:
                raise ValueError(f"crop box must be (x0, y0, x1, y1), got {box!r}")
            x0, y0, x1, y1 = coords
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise ValueError(f"crop box {coords} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        self.box: tuple[float, float, float, float] = coords

    def extra_repr(self) -> str:
        return f"box={self.region!r}" if self.region else f"box={self.box}"

    def perceive(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        x0, y0, x1, y1 = self.box
        c0, r0 = round(x0 * w), round(y0 * h)
        c1, r1 = max(c0 + 1, round(x1 * w)), max(r0 + 1, round(y1 * h))  # at least one pixel
        cut = images[:, :, r0:r1, c0:c1]  # (B, 3, r1 - r0, c1 - c0)
        return F.interpolate(cut, size=(h, w), mode="bilinear", align_corners=False, antialias=False)


class Cvd(Perception):
    """Colour-vision deficiency after Machado, Oliveira & Fernandes (2009): `kind` protan | deutan | tritan, `severity`
    from 0 (normal vision) to 1 (dichromacy). The model's matrix comes from the daltonlens library (its Machado 2009
    simulator, severities interpolated as it does) and is applied in linear RGB: sRGB decoded, the matrix, clipped to
    [0, 1], sRGB encoded again."""

    name = "cvd"
    KINDS = ("protan", "deutan", "tritan")

    def __init__(self, kind: str = "deutan", severity: float = 1.0) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"kind={kind!r}; choose one of: {', '.join(self.KINDS)}")
        if not 0.0 <= float(severity) <= 1.0:
            raise ValueError(f"severity={severity} (0: normal vision .. 1: dichromacy)")
        self.kind, self.severity = kind, float(severity)
        self.register_buffer("matrix", torch.from_numpy(machado_matrix(kind, self.severity)), persistent=False)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, severity={self.severity}"

    def perceive(self, images: torch.Tensor) -> torch.Tensor:
        linear = srgb_decode(images.clamp(0.0, 1.0))  # (B, 3, H, W)
        matrix = self.matrix.to(device=images.device, dtype=images.dtype)  # (3, 3)
        seen = torch.einsum("oc,bchw->bohw", matrix, linear).clamp(0.0, 1.0)  # (B, 3, H, W)
        return srgb_encode(seen)


def machado_matrix(kind: str, severity: float) -> np.ndarray:
    """(3, 3) float32: the linear-RGB matrix of daltonlens's Machado 2009 simulator for `kind` at `severity`, read by
    applying the simulator to the unit colours (each column of the matrix is its image of one unit colour)."""
    from daltonlens.simulate import Deficiency, Simulator_Machado2009

    deficiency = {"protan": Deficiency.PROTAN, "deutan": Deficiency.DEUTAN, "tritan": Deficiency.TRITAN}[kind]
    units = np.eye(3, dtype=np.float32)[None]  # (1, 3, 3): an image of three pixels, the unit colours
    columns = Simulator_Machado2009()._simulate_cvd_linear_rgb(units, deficiency, severity)[0]  # (3, 3) rows: M e_j
    return np.ascontiguousarray(columns.T, dtype=np.float32)


def srgb_decode(images: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> linear RGB (the standard transfer function)."""
    return torch.where(images < 0.04045, images / 12.92, ((images + 0.055) / 1.055) ** 2.4)


def srgb_encode(linear: torch.Tensor) -> torch.Tensor:
    """Linear RGB in [0, 1] -> sRGB."""
    return torch.where(linear < 0.0031308, linear * 12.92, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


PERCEPTIONS: dict[str, type[Perception]] = {cls.name: cls for cls in (Full, Grayscale, Blur, LowRes, Crop, Cvd)}

# two colours a perception shows closer than this (Euclidean, sRGB 0..255) count as confusable: the embedded world's
# palette keeps every pair >= 87.5 apart in full colour, and its colours differ from their stripes by STRIPE_DELTA
CONFUSABLE_DISTANCE = 35.0
PATCH = 32  # side of the uniform patch each colour is shown as (larger than any built-in perception's blur or block)


def perceived_distances(perception: Perception, palette: np.ndarray) -> np.ndarray:
    """(C, C) distances (sRGB 0..255) between the palette's colours (C, 3) as `perception` shows them, each colour seen
    as a uniform PATCH x PATCH image and read back as the patch's mean colour."""
    patches = torch.as_tensor(palette, dtype=torch.float32)[:, :, None, None] / 255  # (C, 3, 1, 1)
    with torch.no_grad():
        seen = perception(patches.expand(-1, -1, PATCH, PATCH).contiguous()).mean((2, 3)) * 255  # (C, 3)
    return torch.cdist(seen.double(), seen.double()).numpy()


def confusable_colours(
    perception: Perception, palette: np.ndarray, distance: float = CONFUSABLE_DISTANCE
) -> np.ndarray:
    """(C, C) bool: pairs of the palette's distinct colours that `perception` shows closer than `distance` (sRGB
    0..255), e.g. blue and purple for a deuteranope; the diagonal is False."""
    close = perceived_distances(perception, palette) < distance
    np.fill_diagonal(close, False)
    return close


def make_perception(spec: str | Mapping[str, Any] | Perception) -> Perception:
    """A built-in perception from a name ("grayscale") or a mapping ({"name": "blur", "sigma": 2.0}); a Perception as
    is.

    Perceptions of your own are Perception subclasses, built from a config node by `_target_`.
    """
    if isinstance(spec, Perception):
        return spec
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, Mapping):  # includes omegaconf DictConfig
        params = {str(k): v for k, v in spec.items()}
        name = params.pop("name", None)
    else:
        raise ValueError(f"perception spec must be a name or a mapping with a 'name' key, got {spec!r}")
    if not isinstance(name, str) or name not in PERCEPTIONS:
        raise ValueError(f"unknown perception {name!r}; choose one of: {', '.join(PERCEPTIONS)}")
    cls = PERCEPTIONS[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for perception {name!r}; "
            f"valid parameters: {', '.join(valid) or '(none)'}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad parameters {params} for perception {name!r}: {err}") from err


def perception_key(perception: Perception) -> str:
    """What decides a perception's output, as text: its class and its plain settings (numbers, strings, tuples)."""
    cls = type(perception)
    settings = {
        k: v
        for k, v in sorted(vars(perception).items())
        if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, tuple, type(None)))
    }
    return f"{cls.__module__}.{cls.__qualname__}{settings}"

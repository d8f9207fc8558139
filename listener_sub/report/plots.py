"""The report's plots as SVG bytes (mention rate per attribute, training curves from metrics.jsonl), and labels of
scattered points placed where they overlap neither each other nor the points (`place_labels`)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

SPEAKER_COLORS = {"base": "#8a8f98", "trained": "#2b6cd4", "oracle": "#2e9d5b"}
SERIES_COLORS = ["#2b6cd4", "#d4572b", "#2e9d5b", "#9b4fc9", "#c99a00", "#00a0b0"]
LABEL_ANGLES = np.deg2rad(
    [30, -30, 90, -90, 150, -150, 0, 180, 60, -60, 120, -120]
)  # label directions, preferred first
LABEL_RINGS = 24  # distances tried around a point before a label is dropped
MARKER_PX = 5.0  # half the side of the square each point keeps free of names, in pixels at the figure's dpi
BAR_PX = 3.0  # half the thickness of the strip each error bar (and its caps) keeps free of names, in pixels


def place_labels(
    ax: Axes,
    xy: np.ndarray,
    names: Sequence[str | None],
    err: np.ndarray | None = None,
    fontsize: float = 6.0,
    avoid: Sequence[Bbox] = (),
) -> None:
    """Name the points `xy` ((N, 2) data coordinates) of `ax`, no name on another, on a point, on a point's error
    bars (`err`: (N, 2) half-lengths in x and y, data units) or on the `avoid` boxes (pixels: a legend's extent).
    A point whose name is None is kept free of names but not named.

    Each name takes the nearest free spot on rings of growing distance around its point (points in crowded places
    first, so they get the near spots); a name away from its point is joined to it by a thin line, and one with no
    free spot in reach is left off rather than drawn over another. The axes' limits and the figure's layout must be
    final: spots are measured in pixels.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    xy = np.asarray(xy, dtype=float)
    anchors = ax.transData.transform(xy)  # (N, 2) pixels
    blocked = [(x - MARKER_PX, y - MARKER_PX, x + MARKER_PX, y + MARKER_PX) for x, y in anchors]
    if err is not None:
        for (x, y), (px, py), (dx, dy) in zip(xy, anchors, np.asarray(err, dtype=float)):
            (x0, y0), (x1, y1) = ax.transData.transform([(x - dx, y - dy), (x + dx, y + dy)])
            blocked += [(x0, py - BAR_PX, x1, py + BAR_PX), (px - BAR_PX, y0, px + BAR_PX, y1)]
    blocked += [(b.x0, b.y0, b.x1, b.y1) for b in avoid]
    frame = ax.get_window_extent(renderer)
    near = (np.linalg.norm(anchors[:, None] - anchors[None], axis=-1) < 60).sum(1)  # neighbours within 60 px
    named = [i for i, name in enumerate(names) if name is not None]
    sizes = {i: _text_size(ax, names[i], fontsize) for i in named}
    step = max((h for _, h in sizes.values()), default=1.0)
    for i in sorted(named, key=lambda i: (-near[i], i)):
        (w, h), (x, y) = sizes[i], anchors[i]
        spots = (
            (
                x + np.cos(a) * (MARKER_PX + 1 + ring * step + w / 2),
                y + np.sin(a) * (MARKER_PX + 1 + ring * step + h / 2),
            )
            for ring in range(LABEL_RINGS)
            for a in LABEL_ANGLES
        )
        spot = next((c for c in spots if _free(c, w, h, blocked, frame)), None)
        if spot is None:
            continue
        (cx, cy), points = spot, 72 / fig.dpi
        blocked.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        touching = abs(cx - x) <= w / 2 + MARKER_PX + 1 and abs(cy - y) <= h / 2 + MARKER_PX + 1
        ax.annotate(
            names[i],
            xy[i],
            xytext=((cx - x) * points, (cy - y) * points),
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=fontsize,
            arrowprops=None
            if touching
            else {"arrowstyle": "-", "lw": 0.5, "color": "#777", "shrinkA": 1, "shrinkB": 2},
        )


def _text_size(ax: Axes, text: str, fontsize: float) -> tuple[float, float]:
    """The pixels (width, height) a text takes in `ax`, with a pixel of room around it."""
    artist = ax.text(0, 0, text, fontsize=fontsize)
    box = artist.get_window_extent(ax.figure.canvas.get_renderer())
    artist.remove()
    return box.width + 2, box.height + 2


def _free(centre: tuple[float, float], w: float, h: float, blocked: list[tuple[float, ...]], frame: Bbox) -> bool:
    """Whether a w x h box at `centre` lies inside `frame` and overlaps none of the `blocked` boxes (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = centre[0] - w / 2, centre[1] - h / 2, centre[0] + w / 2, centre[1] + h / 2
    if x0 < frame.x0 or y0 < frame.y0 or x1 > frame.x1 or y1 > frame.y1:
        return False
    return all(x1 <= b[0] or x0 >= b[2] or y1 <= b[1] or y0 >= b[3] for b in blocked)


def svg(fig: Figure) -> bytes:
    """The figure as SVG (text as paths, no external references); closes it."""
    out = io.BytesIO()
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)
    return out.getvalue()


def mention_chart(mention: Mapping[str, Mapping[str, float]], attributes: Sequence[str], n_boards: int) -> bytes:
    """Grouped bars: per attribute the fraction of captions that mention it, one bar per speaker."""
    fig, ax = plt.subplots(figsize=(6.4, 3.0), dpi=100)
    width = 0.8 / len(mention)
    x = np.arange(len(attributes))
    for i, (speaker, rates) in enumerate(mention.items()):
        values = [rates[a] for a in attributes]
        bars = ax.bar(
            x + (i - (len(mention) - 1) / 2) * width, values, width, label=speaker, color=SPEAKER_COLORS.get(speaker)
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, attributes)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("mention rate")
    ax.set_title(f"attributes named (greedy captions, {n_boards} evaluation boards)", fontsize=10)
    ax.legend(fontsize=8, ncol=len(mention), loc="upper right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return svg(fig)


def _series(curves: Sequence[Mapping[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the metrics lines that hold `key`."""
    rows = [(line["step"], line[key]) for line in curves if key in line]
    return np.array([r[0] for r in rows], dtype=float), np.array([r[1] for r in rows], dtype=float)


def _panel(ax: Axes, curves: Sequence[Mapping[str, float]], keys: Mapping[str, str], title: str) -> None:
    """One panel: per label its train/<key> per step (faint) with a moving average, and eval/<key> as markers."""
    for (label, key), color in zip(keys.items(), SERIES_COLORS):
        steps, values = _series(curves, f"train/{key}")
        if len(values):
            window = max(1, len(values) // 20)
            ax.plot(steps, values, color=color, alpha=0.2, linewidth=0.8)
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(
                steps[window - 1 :],
                smooth,
                color=color,
                linewidth=1.6,
                label=label if len(keys) > 1 else "train (samples)",
            )
        steps, values = _series(curves, f"eval/{key}")
        if len(values):
            ax.plot(
                steps,
                values,
                "o--",
                color=color,
                markersize=4,
                linewidth=1,
                label=None if len(keys) > 1 else "eval (greedy, held out)",
            )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False, ncol=1 if len(keys) < 3 else 2)


def training_curves(
    curves: Sequence[Mapping[str, float]], listeners: Sequence[str], attributes: Sequence[str]
) -> bytes:
    """Reward, gap, KL, accuracy per listener, mention rate per attribute and truthfulness (caption length for data
    without scenes) over training steps.

    Lines: train/ metrics of each step's sampled captions (faint, with a moving average); markers: eval/ metrics
    of greedy captions on the held-out boards.
    """
    panels = [
        ({"reward": "reward"}, "reward"),
        ({"gap": "gap"}, "gap (intended - subtracted acc)"),
        ({"kl": "kl"}, "KL to the captioning adapter"),
        ({name: f"acc/{name}" for name in listeners}, "accuracy per listener"),
        ({a: f"mention/{a}" for a in attributes}, "mention rate per attribute"),
        ({"truthful": "truthful"}, "truthful")
        if any("train/truthful" in line for line in curves)
        else ({"length": "length"}, "caption length (words)"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.2), dpi=100)
    for ax, (keys, title) in zip(axes.flat, panels):
        _panel(ax, curves, keys, title)
    fig.tight_layout()
    return svg(fig)

"""The report's plots as SVG bytes: mention rate per attribute, and training curves from metrics.jsonl."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

SPEAKER_COLORS = {"base": "#8a8f98", "trained": "#2b6cd4", "oracle": "#2e9d5b"}
SERIES_COLORS = ["#2b6cd4", "#d4572b", "#2e9d5b", "#9b4fc9", "#c99a00", "#00a0b0"]


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

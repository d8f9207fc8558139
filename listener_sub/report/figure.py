"""One board of `listener-sub inspect` as a PNG (`format=png`): one row per listener, the board as that listener
perceives it, the target framed, and what each listener picked after the base and the trained speaker's captions.

Positions count from 0 and every probability is the listener's P(target | caption), as in the HTML report, the text
table and the env's frames. The layout is fixed in pixels (`Layout`), so a picture's size and where each image lies
are known before it is drawn.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from listener_sub.files import atomic_path  # noqa: E402
from listener_sub.report.gather import BoardReport, Report  # noqa: E402
from listener_sub.report.plots import SPEAKER_COLORS  # noqa: E402

SPEAKERS = ("base", "trained")  # whose captions the picture shows
DPI = 100
FONT = 12.5  # points; at DPI 100 about 17 pixels
SMALL = 11.0
TILE = 128  # displayed pixels per board image side
GAP = 12  # pixels between two images
PAD = 18  # pixels around the picture
LABEL = 170  # width of the listener labels on the left
PICKS = 280  # width of the picks text on the right
LINE = 24  # pixels per line of text
CHIPS = 26  # pixels under a row of images for the pick marks
ROW_GAP = 14  # pixels between two listener rows
FRAME = 5  # width of the target's frame
TARGET_COLOR = "#2e9d5b"
RIGHT, WRONG = "#2e7d46", "#c9372c"
INK, MUTED = "#1d2228", "#5b6470"
CAPTION_CHARS = 100  # a longer caption is shortened in the header
LEGEND = (
    "Each row: the board as that listener perceives it. Green frame: the target. A mark under an image: that "
    "speaker's caption made the listener pick it. Positions count from 0; P(target): the listener's probability of "
    "the target given the caption."
)
LEGEND_LINES = 2


@dataclass(frozen=True)
class Layout:
    """Where the picture of a board with `listeners` rows of `n_images` images puts things, in pixels from the top
    left: a header (the target and each speaker's caption), the positions, then one row per listener."""

    listeners: int
    n_images: int
    speakers: int = len(SPEAKERS)

    @property
    def header(self) -> int:
        """Height of the header: the board line and one line per speaker."""
        return (1 + self.speakers) * LINE + PAD // 2

    @property
    def top(self) -> int:
        """y of the first row of images: under the header and the positions line."""
        return PAD + self.header + LINE

    @property
    def row_h(self) -> int:
        return TILE + CHIPS + ROW_GAP

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture."""
        width = PAD + LABEL + self.n_images * (TILE + GAP) + GAP + PICKS + PAD
        return width, self.top + self.listeners * self.row_h + LEGEND_LINES * LINE + PAD

    def box(self, row: int, position: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the image at board `position` in listener row `row` (x1, y1 exclusive)."""
        x0 = PAD + LABEL + position * (TILE + GAP)
        y0 = self.top + row * self.row_h
        return x0, y0, x0 + TILE, y0 + TILE


def _shorten(caption: str) -> str:
    return textwrap.shorten(caption, CAPTION_CHARS, placeholder=" ...") or repr(caption)


def board_figure(report: Report, index: int = 0, speakers: tuple[str, ...] = SPEAKERS) -> Figure:
    """The picture of `report.boards[index]`: each listener's view of it, the target framed, the speakers' captions
    and each listener's pick and P(target) after each caption."""
    board: BoardReport = report.boards[index]
    speakers = tuple(s for s in speakers if s in board.plays)
    names = list(board.views)
    n_images = len(next(iter(board.views.values())))
    layout = Layout(len(names), n_images, len(speakers))
    width, height = layout.size
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")

    def text(x: float, y: float, s: str, **kwargs) -> None:
        """Text at pixel (x, y) from the top left (its baseline's left end unless kwargs align it otherwise)."""
        fig.text(x / width, 1 - y / height, s, fontsize=kwargs.pop("size", FONT), **kwargs)

    text(
        PAD,
        PAD + LINE * 0.7,
        f"{report.data} board (seed {report.seed}), target at position {board.target}: {_shorten(board.description)}",
        color=INK,
        weight="bold",
    )
    for i, speaker in enumerate(speakers):
        play = board.plays[speaker]
        verdict = "won" if play.won else "lost"
        text(
            PAD,
            PAD + LINE * (1.7 + i),
            f"{speaker}: \u201c{_shorten(play.caption)}\u201d  (reward {play.reward:+.2f}, {verdict})",
            color=SPEAKER_COLORS.get(speaker, INK),
            weight="bold",
        )
    for position in range(n_images):
        x0, y0, x1, _ = layout.box(0, position)
        is_target = position == board.target
        text(
            (x0 + x1) / 2,
            y0 - 8,
            f"{position} (target)" if is_target else str(position),
            color=TARGET_COLOR if is_target else MUTED,
            weight="bold" if is_target else "normal",
            ha="center",
        )
    for row, name in enumerate(names):
        x0, y0, _, y1 = layout.box(row, 0)
        text(PAD, y0 + LINE * 0.8, name, color=INK, weight="bold")
        role = report.roles.get(name, "")
        for j, line in enumerate(textwrap.wrap(f"{report.perceptions.get(name, '')}, {role}", 22)[:3]):
            text(PAD, y0 + LINE * (1.8 + 0.85 * j), line, color=MUTED, size=SMALL)
        for position, image in enumerate(board.views[name]):
            bx0, by0, bx1, by1 = layout.box(row, position)
            ax = fig.add_axes((bx0 / width, 1 - by1 / height, TILE / width, TILE / height))
            ax.imshow(np.asarray(image), interpolation="nearest")
            ax.set_axis_off()
            if position == board.target:
                fig.add_artist(
                    Rectangle(  # centred FRAME / 2 + 1 pixels outside the image: no frame pixel lands on it
                        ((bx0 - FRAME / 2 - 1) / width, 1 - (by1 + FRAME / 2 + 1) / height),
                        (TILE + FRAME + 2) / width,
                        (TILE + FRAME + 2) / height,
                        transform=fig.transFigure,
                        fill=False,
                        edgecolor=TARGET_COLOR,
                        linewidth=FRAME * 72 / DPI,
                    )
                )
            pickers = [s for s in speakers if board.plays[s].picks[name] == position]
            for k, speaker in enumerate(pickers):
                text(
                    bx0 + 4 + k * (TILE // 2),
                    by1 + CHIPS - 6,
                    speaker,
                    color="white",
                    size=SMALL,
                    weight="bold",
                    bbox=dict(boxstyle="round,pad=0.25", facecolor=SPEAKER_COLORS.get(speaker, INK), edgecolor="none"),
                )
        picks_x = PAD + LABEL + n_images * (TILE + GAP) + GAP
        for i, speaker in enumerate(speakers):
            play = board.plays[speaker]
            pick, right = play.picks[name], play.correct[name]
            p_target = play.probs[name][board.target]
            text(
                picks_x,
                y0 + LINE * (1.2 + 1.3 * i),
                f"{speaker}: picks {pick}, {'right' if right else 'wrong'}",
                color=SPEAKER_COLORS.get(speaker, INK),
                weight="bold",
            )
            text(
                picks_x,
                y0 + LINE * (1.85 + 1.3 * i),
                f"P(target) = {p_target:.2f}",
                color=RIGHT if right else WRONG,
                size=SMALL,
            )
        del y1
    legend_chars = int((width - 2 * PAD) / (SMALL * DPI / 72 * 0.55))  # an average character's width
    for j, line in enumerate(textwrap.wrap(LEGEND, legend_chars)[:LEGEND_LINES]):
        text(PAD, height - PAD - (LEGEND_LINES - 1 - j) * LINE * 0.8, line, color=MUTED, size=SMALL)
    return fig


def write_board_png(report: Report, path: Path, index: int = 0) -> Path:
    """Write the picture of `report.boards[index]` (`board_figure`) as a PNG at `path`; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = board_figure(report, index)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
    return path

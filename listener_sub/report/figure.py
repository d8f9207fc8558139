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
from typing import Any

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


class _Canvas:
    """A figure addressed in pixels from its top left."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")

    def text(self, x: float, y: float, s: str, **kwargs: Any) -> None:
        """Text at pixel (x, y) (its baseline's left end unless kwargs align it otherwise)."""
        self.fig.text(x / self.width, 1 - y / self.height, s, fontsize=kwargs.pop("size", FONT), **kwargs)

    def image(self, box: tuple[int, int, int, int], image: np.ndarray) -> None:
        x0, _, _, y1 = box
        ax = self.fig.add_axes((x0 / self.width, 1 - y1 / self.height, TILE / self.width, TILE / self.height))
        ax.imshow(np.asarray(image), interpolation="nearest")
        ax.set_axis_off()

    def frame(self, box: tuple[int, int, int, int]) -> None:
        """The target's frame, centred FRAME / 2 + 1 pixels outside the image: no frame pixel lands on it."""
        x0, _, _, y1 = box
        w, h = self.width, self.height
        corner = ((x0 - FRAME / 2 - 1) / w, 1 - (y1 + FRAME / 2 + 1) / h)
        side = TILE + FRAME + 2
        rectangle = Rectangle(corner, side / w, side / h, transform=self.fig.transFigure, fill=False)
        rectangle.set(edgecolor=TARGET_COLOR, linewidth=FRAME * 72 / DPI)
        self.fig.add_artist(rectangle)


def board_figure(report: Report, index: int = 0, speakers: tuple[str, ...] = SPEAKERS) -> Figure:
    """The picture of `report.boards[index]`: each listener's view of it, the target framed, the speakers' captions
    and each listener's pick and P(target) after each caption."""
    board: BoardReport = report.boards[index]
    speakers = tuple(s for s in speakers if s in board.plays)
    n_images = len(next(iter(board.views.values())))
    layout = Layout(len(board.views), n_images, len(speakers))
    canvas = _Canvas(*layout.size)
    _header(canvas, layout, report, board, speakers, n_images)
    for row, name in enumerate(board.views):
        _listener_row(canvas, layout, report, board, speakers, row, name)
    legend_chars = int((canvas.width - 2 * PAD) / (SMALL * DPI / 72 * 0.55))  # an average character's width
    for j, line in enumerate(textwrap.wrap(LEGEND, legend_chars)[:LEGEND_LINES]):
        y = canvas.height - PAD - (LEGEND_LINES - 1 - j) * LINE * 0.8
        canvas.text(PAD, y, line, color=MUTED, size=SMALL)
    return canvas.fig


def _header(
    canvas: _Canvas, layout: Layout, report: Report, board: BoardReport, speakers: tuple[str, ...], n_images: int
) -> None:
    """The board in words, each speaker's caption and verdict, and the positions above the images."""
    title = f"{report.data} board (seed {report.seed}), target at position {board.target}: "
    canvas.text(PAD, PAD + LINE * 0.7, title + _shorten(board.description), color=INK, weight="bold")
    for i, speaker in enumerate(speakers):
        play = board.plays[speaker]
        verdict = "won" if play.won else "lost"
        line = f"{speaker}: \u201c{_shorten(play.caption)}\u201d  (reward {play.reward:+.2f}, {verdict})"
        canvas.text(PAD, PAD + LINE * (1.7 + i), line, color=SPEAKER_COLORS.get(speaker, INK), weight="bold")
    for position in range(n_images):
        x0, y0, x1, _ = layout.box(0, position)
        is_target = position == board.target
        label = f"{position} (target)" if is_target else str(position)
        style = {"color": TARGET_COLOR, "weight": "bold"} if is_target else {"color": MUTED, "weight": "normal"}
        canvas.text((x0 + x1) / 2, y0 - 8, label, ha="center", **style)


def _listener_row(
    canvas: _Canvas,
    layout: Layout,
    report: Report,
    board: BoardReport,
    speakers: tuple[str, ...],
    row: int,
    name: str,
) -> None:
    """One listener's row: its name and role, the board as it perceives it with each speaker's pick marked under the
    image it picked, and after each speaker's caption its pick and P(target)."""
    _, y0, _, _ = layout.box(row, 0)
    canvas.text(PAD, y0 + LINE * 0.8, name, color=INK, weight="bold")
    role = report.roles.get(name, "")
    for j, line in enumerate(textwrap.wrap(f"{report.perceptions.get(name, '')}, {role}", 22)[:3]):
        canvas.text(PAD, y0 + LINE * (1.8 + 0.85 * j), line, color=MUTED, size=SMALL)
    for position, image in enumerate(board.views[name]):
        box = layout.box(row, position)
        canvas.image(box, image)
        if position == board.target:
            canvas.frame(box)
        pickers = [s for s in speakers if board.plays[s].picks[name] == position]
        for k, speaker in enumerate(pickers):
            chip = dict(boxstyle="round,pad=0.25", facecolor=SPEAKER_COLORS.get(speaker, INK), edgecolor="none")
            x, y = box[0] + 4 + k * (TILE // 2), box[3] + CHIPS - 6
            canvas.text(x, y, speaker, color="white", size=SMALL, weight="bold", bbox=chip)
    picks_x = PAD + LABEL + len(board.views[name]) * (TILE + GAP) + GAP
    for i, speaker in enumerate(speakers):
        play = board.plays[speaker]
        pick, right = play.picks[name], play.correct[name]
        verdict = f"{speaker}: picks {pick}, {'right' if right else 'wrong'}"
        canvas.text(
            picks_x, y0 + LINE * (1.2 + 1.3 * i), verdict, color=SPEAKER_COLORS.get(speaker, INK), weight="bold"
        )
        p_target = f"P(target) = {play.probs[name][board.target]:.2f}"
        canvas.text(picks_x, y0 + LINE * (1.85 + 1.3 * i), p_target, color=RIGHT if right else WRONG, size=SMALL)


def write_board_png(report: Report, path: Path, index: int = 0) -> Path:
    """Write the picture of `report.boards[index]` (`board_figure`) as a PNG at `path`; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = board_figure(report, index)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
    return path

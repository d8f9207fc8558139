"""Render a round: a text transcript (ansi) or a picture (rgb_array) of the board, target, caption and picks.

Board positions count from 0 (the listeners' actions); a listener's pick reads `2 right p(target)=0.81` everywhere
(`pick_words`): its position, right or wrong, and its P(target | caption) -- the numbers `inspect`'s report shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from listener_sub.envs.round import SPEAKER, Round

SIDE = 192  # displayed pixels per board image side (small images scaled up by whole pixels)
PAD = 12  # pixels around the picture and between the rows of images
GAP = 8  # pixels between two images' cells
RING = 4  # width of a pick's border, right outside the image
FRAME = 4  # width of the target's frame, outside the pick border
MARGIN = RING + FRAME + 2  # pixels between an image and its cell's edge
LABEL = 220  # width of the row labels on the left
LINE = 18  # pixels per line of text
FONT_SIZE = 14
TARGET_COLOR = (40, 200, 90)
INK = (0, 0, 0)
MUTED = (90, 98, 110)
PICK_COLORS = [
    (220, 70, 40),
    (40, 110, 230),
    (170, 120, 0),
    (160, 60, 190),
    (0, 150, 160),
]  # listener i's border, label and text
LEGEND = (
    "Each row: the board as that listener perceives it. Green frame: the target. A border and 'picked' in a "
    "listener's colour: its pick. p: its P(image | caption). Positions count from 0."
)


def pick_words(position: int, correct: bool, target_prob: float) -> str:
    """A listener's pick as transcripts, frames and `rollout` read it: position (from 0), right / wrong, and the
    listener's P(target | caption).

        pick_words(2, True, 0.8123)  # '2 right p(target)=0.81'
    """
    return f"{position} {'right' if correct else 'wrong'} p(target)={target_prob:.2f}"


def _describe(round_: Round) -> str:
    """The target in words: 'a small red striped circle on the left.' (data with scenes), its first caption, or its
    file."""
    return round_.boards.checked_pool().describe(int(round_.boards.target_items[0]))


def _role(round_: Round, name: str) -> str:
    """What the speaker's reward does with listener `name`: intended, subtracted, or nothing (a control)."""
    role = round_.game.role(name)
    return "not in the reward" if role == "player" else role


def _pick(round_: Round, agent: str) -> str:
    """Listener agent's pick: 'picks 2 right p(target)=0.81' once scored, 'picks 2' once picked, else '(to pick)'."""
    position = round_.picks.get(agent)
    if position is None:
        return "(to pick)"
    if round_.outcome is None:
        return f"picks {position}"
    name, target = round_.listeners[agent], int(round_.boards.target[0])
    outcome = round_.outcome
    return "picks " + pick_words(position, bool(outcome.correct[name][0]), outcome.probs[name][0, target].item())


def transcript(round_: Round) -> str:
    """Several lines: the board and target, the caption, each listener's pick and probabilities, the rewards.

    print(transcript(env.unwrapped.round))  # board [12, 40, 7, 3] (synthetic test), target at 2: ...
    """
    boards = round_.boards
    lines = [
        f"board {boards.items[0].tolist()} ({boards.checked_pool().data.name}), target at {int(boards.target[0])}: "
        f"{_describe(round_)}",
        f"{SPEAKER}: " + ("(to speak)" if round_.caption is None else repr(round_.caption)),
    ]
    for agent, name in round_.listeners.items():
        line = f"{agent} ({name}): {_pick(round_, agent)}"
        if round_.outcome is not None:
            line += " [" + " ".join(f"{p:.2f}" for p in round_.outcome.probs[name][0].tolist()) + "]"
        lines.append(line)
    if round_.outcome is not None:
        lines.append("rewards: " + ", ".join(f"{agent} {r:+.3f}" for agent, r in round_.rewards().items()))
    return "\n".join(lines)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """text in lines of at most `width` pixels, broken between words."""
    lines = [""]
    for word in text.split(" "):
        joined = f"{lines[-1]} {word}" if lines[-1] else word
        if lines[-1] and font.getlength(joined) > width:
            lines.append(word)
        else:
            lines[-1] = joined
    return lines


@dataclass
class Layout:
    """Where a round's frame puts things and what it writes: the header's lines, then one row of images per listener
    with its label on the left."""

    header: list[tuple[str, tuple[int, int, int]]]  # (text, colour) lines above the images
    labels: list[list[tuple[str, tuple[int, int, int]]]]  # per listener row, its (text, colour) lines
    n_images: int
    side_w: int
    side_h: int
    font: ImageFont.FreeTypeFont

    @property
    def cell_w(self) -> int:
        return self.side_w + 2 * MARGIN + GAP

    @property
    def row_h(self) -> int:
        return self.side_h + 2 * MARGIN + LINE + PAD  # the image in its margins, a line under it, the gap

    @property
    def top(self) -> int:
        """y of the first row's cells: under the header and the column headings."""
        return PAD + LINE * len(self.header) + PAD + LINE

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture: header, rows, one line of rewards."""
        return LABEL + self.n_images * self.cell_w + PAD, self.top + len(self.labels) * self.row_h + LINE + PAD

    def box(self, row: int, position: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the image at board `position` in listener row `row` (x1, y1 exclusive).

        layout(round_).box(1, 2)  # listener_1's view of position 2
        """
        x = LABEL + position * self.cell_w + MARGIN
        y = self.top + row * self.row_h + MARGIN
        return x, y, x + self.side_w, y + self.side_h


def layout(round_: Round) -> Layout:
    """The layout of `frame(round_)`: its header text wrapped to the picture's width, image sizes, rows."""
    n, h, w = round_.boards.images.shape[1:4]
    scale = SIDE / max(h, w)
    scale = max(1, int(scale)) if scale >= 1 else scale  # whole pixels when scaling up
    side_w, side_h = round(w * scale), round(h * scale)
    at = Layout([], [], n, side_w, side_h, ImageFont.load_default(size=FONT_SIZE))
    width = at.size[0] - 2 * PAD  # the text's width
    caption = "(to speak)" if round_.caption is None else f'"{round_.caption}"'
    data = round_.boards.checked_pool().data.name
    target = f"target: position {int(round_.boards.target[0])}, {_describe(round_)} ({data})"
    for text, color in ((f"{SPEAKER} says {caption}", INK), (target, TARGET_COLOR), (LEGEND, MUTED)):
        at.header += [(line, color) for line in _wrap(text, at.font, width)]
    for row, (agent, name) in enumerate(round_.listeners.items()):
        color = PICK_COLORS[row % len(PICK_COLORS)]
        perception = round_.game.listeners[name].perception.name
        label = [(f"{agent}: {name}", color), (f"sees {perception}", INK), (_role(round_, name), MUTED)]
        label.append((_pick(round_, agent), color))
        if round_.outcome is not None:
            label.append((f"reward {round_.rewards()[agent]:+.2f}", INK))
        at.labels.append(label)
    return at


def frame(round_: Round) -> np.ndarray:
    """(H, W, 3) uint8 picture of a round: the caption, the target and a legend on top; one row per listener with the
    board as that listener perceives it, the target framed green, the listener's pick bordered in its colour and
    labelled 'picked' under the image with every image's P(image | caption); rewards at the bottom.

        Image.fromarray(frame(env.unwrapped.round)).save("frame.png")
    """
    at = layout(round_)
    canvas = Image.new("RGB", at.size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = at.font
    for k, (text, color) in enumerate(at.header):
        draw.text((PAD, PAD + k * LINE), text, fill=color, font=font)
    target = int(round_.boards.target[0])
    for i in range(at.n_images):
        x0 = at.box(0, i)[0]
        heading = f"{i} target" if i == target else str(i)
        draw.text((x0, at.top - LINE), heading, fill=TARGET_COLOR if i == target else MUTED, font=font)
    outcome = round_.outcome
    for row, (agent, name) in enumerate(round_.listeners.items()):
        color = PICK_COLORS[row % len(PICK_COLORS)]
        y_label = at.box(row, 0)[1]
        for k, (text, fill) in enumerate(at.labels[row]):
            draw.text((PAD, y_label + k * LINE), text, fill=fill, font=font)
        for i, image in enumerate(round_.view(agent)):
            x0, y0, x1, y1 = at.box(row, i)
            shown = Image.fromarray(image)
            resample = Image.NEAREST if at.side_w >= shown.width else Image.LANCZOS
            canvas.paste(shown.resize((at.side_w, at.side_h), resample), (x0, y0))
            picked = round_.picks.get(agent) == i
            if picked:  # the pick's border, right outside the image
                draw.rectangle([x0 - RING, y0 - RING, x1 + RING - 1, y1 + RING - 1], outline=color, width=RING)
            if i == target:  # the target's frame, outside the pick's border
                draw.rectangle(
                    [x0 - MARGIN + 2, y0 - MARGIN + 2, x1 + MARGIN - 3, y1 + MARGIN - 3],
                    outline=TARGET_COLOR,
                    width=FRAME,
                )
            under = "" if outcome is None else f"p={outcome.probs[name][0, i].item():.2f}  "
            draw.text((x0, y1 + MARGIN), under, fill=INK, font=font)
            if picked:
                draw.text((x0 + font.getlength(under), y1 + MARGIN), "picked", fill=color, font=font)
    if outcome is not None:
        rewards = "  ".join(f"{agent} {r:+.2f}" for agent, r in round_.rewards().items())
        draw.text((PAD, at.size[1] - PAD - LINE), f"rewards: {rewards}", fill=INK, font=font)
    return np.asarray(canvas, dtype=np.uint8)

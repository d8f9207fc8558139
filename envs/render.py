"""Render a round: a text transcript (ansi) or a picture (rgb_array) of the board, target, caption and picks."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from listener_sub.envs.round import SPEAKER, Round

SCALE = 3  # display pixels per image pixel
GAP = 12  # pixels between board images
FRAME = 4  # width of the frame around the target
LINE = 18  # pixels per line of text
TARGET_COLOR = (40, 200, 90)
PICK_COLORS = [
    (220, 70, 40),
    (40, 110, 230),
    (170, 120, 0),
    (160, 60, 190),
    (0, 150, 160),
]  # listener i's marker and text


def _describe(round_: Round) -> str:
    """The target in words: 'a small red striped circle on the left.' (data with scenes), its first caption, or its file."""
    return round_.boards.checked_pool().describe(int(round_.boards.target_items[0]))


def transcript(round_: Round) -> str:
    """Several lines: the board and target, the caption, each listener's pick and probabilities, the rewards."""
    boards = round_.boards
    lines = [
        f"board {boards.items[0].tolist()} ({boards.checked_pool().data.name}), target at {int(boards.target[0])}: {_describe(round_)}",
        f"{SPEAKER}: " + ("(to speak)" if round_.caption is None else repr(round_.caption)),
    ]
    for agent, name in round_.listeners.items():
        pick = round_.picks.get(agent)
        line = f"{agent} ({name}): " + ("(to pick)" if pick is None else f"picks {pick}")
        if round_.outcome is not None:
            probs = " ".join(f"{p:.2f}" for p in round_.outcome.probs[name][0].tolist())
            line += f" [{probs}] {'right' if round_.outcome.correct[name][0] else 'wrong'}"
        lines.append(line)
    if round_.outcome is not None:
        lines.append("rewards: " + ", ".join(f"{agent} {r:+.3f}" for agent, r in round_.rewards().items()))
    return "\n".join(lines)


def frame(round_: Round) -> np.ndarray:
    """(H, W, 3) uint8 picture: caption on top, the board (target framed green), under each image the listeners'
    probabilities of it, a coloured marker on each listener's pick, rewards at the bottom."""
    images = round_.boards.images[0]  # (N, h, w, 3)
    n, h, w = images.shape[:3]
    side_h, side_w = h * SCALE, w * SCALE
    names = list(round_.listeners.items())
    width = n * (side_w + GAP) + GAP
    top = GAP + 2 * LINE + GAP  # room for two lines of text and the target frame
    height = top + side_h + GAP + LINE * len(names) + GAP + LINE + GAP
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    caption = "(speaker to speak)" if round_.caption is None else f'"{round_.caption}"'
    draw.text((GAP, GAP), f"{SPEAKER}: {caption}", fill=(0, 0, 0), font=font)
    draw.text((GAP, GAP + LINE), f"target: {_describe(round_)}", fill=TARGET_COLOR, font=font)
    target = int(round_.boards.target[0])
    for i in range(n):
        x = GAP + i * (side_w + GAP)
        canvas.paste(Image.fromarray(images[i]).resize((side_w, side_h), Image.NEAREST), (x, top))
        if i == target:
            draw.rectangle(
                [x - FRAME, top - FRAME, x + side_w + FRAME - 1, top + side_h + FRAME - 1],
                outline=TARGET_COLOR,
                width=FRAME,
            )
        for j, (agent, name) in enumerate(names):
            color = PICK_COLORS[j % len(PICK_COLORS)]
            if round_.picks.get(agent) == i:  # a marker in the image corner, one slot per listener
                draw.rectangle(
                    [x + 4 + 18 * j, top + 4, x + 18 + 18 * j, top + 18], fill=color, outline=(255, 255, 255)
                )
            prob = "" if round_.outcome is None else f" {round_.outcome.probs[name][0, i].item():.2f}"
            picked = " <" if round_.picks.get(agent) == i else ""
            draw.text((x, top + side_h + GAP + LINE * j), f"{name}{prob}{picked}", fill=color, font=font)
    if round_.outcome is not None:
        rewards = "  ".join(f"{agent} {r:+.2f}" for agent, r in round_.rewards().items())
        draw.text((GAP, height - GAP - LINE), f"rewards: {rewards}", fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8)

"""What `listener-sub play` serves: a set of boards, every model speaker's caption of each and the model listeners'
play of it (computed once at start), and the perceptions a person can see a board through."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from listener_sub.game import Boards, Game, Outcome
from listener_sub.images import perceived
from listener_sub.perception import Blur, Cvd, Full, Grayscale, LowRes, Perception

CaptionFn = Callable[[Boards], list[str]]
PERSON = "person"  # the speaker of a caption a person wrote in the speaker role


def people_views(game: Game) -> dict[str, tuple[str, Perception]]:
    """key -> (label, perception): the built-in ways a person can see a board, and each model listener's own."""
    views: dict[str, tuple[str, Perception]] = {
        "full": ("full colour", Full()),
        "grayscale": ("grayscale", Grayscale()),
        "blur": ("blurred (sigma 1.5)", Blur(1.5)),
        "lowres": ("low resolution (8x8 blocks)", LowRes(8)),
        "protan": ("protanope (red-blind)", Cvd("protan")),
        "deutan": ("deuteranope (green-blind)", Cvd("deutan")),
        "tritan": ("tritanope (blue-blind)", Cvd("tritan")),
    }
    for name, listener in game.listeners.items():
        views[f"as-{name}"] = (f"as model listener {name} sees it", listener.perception)
    return views


def outcome_row(outcome: Outcome, b: int) -> dict[str, Any]:
    """Board b of an outcome as plain data: each listener's P(image | caption) and pick, the reward."""
    return {
        "probs": {name: [float(x) for x in p[b].tolist()] for name, p in outcome.probs.items()},
        "picks": {name: int(c[b]) for name, c in outcome.choices.items()},
        "reward": float(outcome.reward[b]),
    }


def correct(row: Mapping[str, Any], target: int) -> dict[str, bool]:
    """Listener -> whether its pick in an outcome row is the target."""
    return {name: pick == target for name, pick in row["picks"].items()}


@dataclass
class PlayTable:
    """The boards people play, the model speakers' captions and plays of them, and the views of the boards."""

    game: Game
    boards: Boards
    plays: dict[str, list[dict[str, Any]]]  # model speaker -> per board {caption, probs, picks, reward, won}
    views: dict[str, tuple[str, Perception]]  # key -> (label, perception)
    _png: dict[tuple[int, int, str], bytes] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def speakers(self) -> list[str]:
        return list(self.plays)

    def target(self, board: int) -> int:
        return int(self.boards.target[board])

    def play(self, caption: str, board: int) -> dict[str, Any]:
        """The model listeners' play of a person's caption on a board (the game core, under a lock: one at a time)."""
        with self._lock:
            outcome = self.game.play([caption], self.boards[board])
        row = outcome_row(outcome, 0)
        return row | {"won": self.game.won(correct(row, self.target(board)))}

    def image(self, board: int, position: int, view: str) -> bytes:
        """A board image as a view shows it, PNG (kept once made)."""
        key = (board, position, view)
        if key not in self._png:
            with self._lock:
                image = self.boards.images[board, position]  # (H, W, 3)
                seen = perceived(self.views[view][1], image[None])[0]
            out = io.BytesIO()
            Image.fromarray(seen).save(out, format="PNG")
            self._png[key] = out.getvalue()
        return self._png[key]


def play_table(
    game: Game, boards: Boards, speakers: Mapping[str, CaptionFn], views: dict[str, tuple[str, Perception]]
) -> PlayTable:
    """Caption the boards with every model speaker and play the captions to the game's listeners."""
    plays = {}
    for name, speak in speakers.items():
        captions = speak(boards)
        outcome = game.play(captions, boards)
        rows = [outcome_row(outcome, b) for b in range(len(boards))]
        plays[name] = [
            row | {"caption": c, "won": game.won(correct(row, int(t)))}
            for row, c, t in zip(rows, captions, boards.target)
        ]
    return PlayTable(game, boards, plays, views)

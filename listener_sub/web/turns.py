"""The turns people play in `listener-sub play`, in an SQLite database (WAL, synchronous=FULL): each is stored before
its result page is shown, so a player's score survives a restart and a caption a person wrote can be read by another
person in the listener role."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT, player TEXT NOT NULL, role TEXT NOT NULL, board INTEGER NOT NULL,
    speaker TEXT NOT NULL, view TEXT NOT NULL, caption TEXT NOT NULL, pick INTEGER, correct INTEGER, reward REAL,
    won INTEGER, outcome TEXT NOT NULL, created_at REAL NOT NULL);
"""
LISTENER, SPEAKER = "listener", "speaker"  # a person's role in a turn


@dataclass
class Turn:
    id: int
    player: str
    role: str  # LISTENER: the person picked; SPEAKER: the person wrote the caption
    board: int
    speaker: str  # who captioned: base | trained | oracle | person
    view: str  # the perception the person saw the board through (a key of the app's views)
    caption: str
    pick: int | None  # the person's pick (listener turns)
    correct: bool | None
    reward: float | None  # the speaker's reward (speaker turns)
    won: bool | None
    outcome: dict[str, Any]  # the model listeners' play of the caption: {probs: {name: [N]}, picks: {name: int}}


@dataclass
class Score:
    captions: int  # speaker turns
    reward: float  # their total reward
    wins: int  # boards on which every intended listener was right and every subtracted one wrong
    picks: int  # listener turns
    correct: int  # of which the person picked the target


class TurnStore:
    """The play app's turns; safe to share between threads."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def add(self, turn: Turn) -> int:
        """Store a turn (its id is given here) in one transaction; returns the id."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO turns (player, role, board, speaker, view, caption, pick, correct, reward, won, outcome, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    turn.player, turn.role, turn.board, turn.speaker, turn.view, turn.caption, turn.pick,
                    turn.correct, turn.reward, turn.won, json.dumps(turn.outcome), time.time(),
                ),
            )  # fmt: skip
            return int(cursor.lastrowid)

    def get(self, turn_id: int) -> Turn | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, player, role, board, speaker, view, caption, pick, correct, reward, won, outcome "
                "FROM turns WHERE id = ?",
                (turn_id,),
            ).fetchone()
        if row is None:
            return None
        *head, pick, correct, reward, won, outcome = row
        as_bool = None if correct is None else bool(correct)
        return Turn(*head, pick, as_bool, reward, None if won is None else bool(won), json.loads(outcome))

    def latest_caption(self, not_by: str) -> Turn | None:
        """The most recent caption a person wrote, preferring another player's."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM turns WHERE role = ? ORDER BY player = ?, id DESC LIMIT 1", (SPEAKER, not_by)
            ).fetchone()
        return None if rows is None else self.get(rows[0])

    def score(self, player: str) -> Score:
        with self._lock:
            captions, reward, wins = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(reward), 0), COALESCE(SUM(won), 0) FROM turns "
                "WHERE player = ? AND role = ?",
                (player, SPEAKER),
            ).fetchone()
            picks, correct = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(correct), 0) FROM turns WHERE player = ? AND role = ?",
                (player, LISTENER),
            ).fetchone()
        return Score(captions, float(reward), int(wins), picks, int(correct))

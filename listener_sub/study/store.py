"""A study's one file: an SQLite database (WAL, synchronous=FULL) holding its materials, its participants, which
trial each was shown when, and their answers -- one transaction per answer, so a killed server loses nothing it
acknowledged, and the same answer sent twice is stored once.

    store = StudyStore.create("studies/pilot/study.db", materials)  # once, before anyone joins
    store = StudyStore("studies/pilot/study.db")  # every later start: no model needed
    who = store.join()
    trial, view = store.show(who.id)  # the next trial (recorded as shown)
    store.answer(who.id, trial.index, pick=2)
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from listener_sub.study.materials import CHECK_SPEAKER, BoardMaterial, StudyMaterials
from listener_sub.study.protocol import BOARD, CHECK, Answer, Condition, StudyConfig, Trial, perception_label, schedule

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE boards (
    kind TEXT NOT NULL, board INTEGER NOT NULL, items TEXT NOT NULL, target INTEGER NOT NULL,
    captions TEXT NOT NULL, model_picks TEXT NOT NULL, PRIMARY KEY (kind, board));
CREATE TABLE images (
    kind TEXT NOT NULL, board INTEGER NOT NULL, position INTEGER NOT NULL, perception TEXT NOT NULL,
    png BLOB NOT NULL, PRIMARY KEY (kind, board, position, perception));
CREATE TABLE participants (id TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE, joined_at REAL NOT NULL);
CREATE TABLE shown (
    participant TEXT NOT NULL REFERENCES participants (id), trial INTEGER NOT NULL, shown_at REAL NOT NULL,
    PRIMARY KEY (participant, trial));
CREATE TABLE answers (
    participant TEXT NOT NULL REFERENCES participants (id), trial INTEGER NOT NULL, pick INTEGER NOT NULL,
    answered_at REAL NOT NULL, ms REAL NOT NULL, PRIMARY KEY (participant, trial));
"""


class StudyRefusal(ValueError):
    """A request the study refuses; `status` is the HTTP status a web face answers it with."""

    status = 400


class UnknownParticipant(StudyRefusal):
    status = 404


class WrongParticipant(StudyRefusal):
    status = 403


class NotShown(StudyRefusal):
    status = 409


class AlreadyAnswered(StudyRefusal):
    status = 409


class BadPick(StudyRefusal):
    status = 422


@dataclass(frozen=True)
class Participant:
    id: str  # a random token: the participant's link, and all that identifies them
    number: int  # join order, from 0 (their Latin square row)


@dataclass(frozen=True)
class TrialView:
    """What a participant sees on a trial: the caption and the images' perception (never the speaker)."""

    caption: str
    perception: str  # perception_label of what the images show
    n_images: int


def _config_json(config: StudyConfig) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def _config_from(text: str) -> StudyConfig:
    raw = json.loads(text)
    raw["conditions"] = [Condition(**c) for c in raw["conditions"]]
    return StudyConfig(**raw)


class StudyStore:
    """A study database, opened for serving and reporting; safe to share between threads."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} is not a study database")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the answer is acknowledged
        self._db.execute("PRAGMA foreign_keys=ON")
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        self.config = _config_from(meta["config"])
        self.n_images = int(meta["n_images"])
        self.data = meta["data"]
        self.listeners: dict[str, str] = json.loads(meta["listeners"])
        self.boards = self._boards(BOARD)
        self.checks = self._boards(CHECK)

    @classmethod
    def create(cls, path: str | os.PathLike, materials: StudyMaterials) -> StudyStore:
        """Write a new study database at `path` (which must not exist) in one step: built beside it, then renamed."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} exists; a study is created once")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        try:
            db.executescript(SCHEMA)
            meta = {
                "config": _config_json(materials.config),
                "n_images": str(materials.n_images),
                "data": materials.data,
                "listeners": json.dumps(materials.listeners),
                "created_at": str(time.time()),
            }
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            for kind, boards in ((BOARD, materials.boards), (CHECK, materials.checks)):
                db.executemany(
                    "INSERT INTO boards VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (kind, b, json.dumps(m.items), m.target, json.dumps(m.captions), json.dumps(m.model_picks))
                        for b, m in enumerate(boards)
                    ],
                )
            db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?)", [(*k, v) for k, v in materials.images.items()])
            db.commit()
        finally:
            db.close()
        os.replace(tmp, path)
        return cls(path)

    def close(self) -> None:
        self._db.close()

    def _boards(self, kind: str) -> list[BoardMaterial]:
        rows = self._db.execute(
            "SELECT items, target, captions, model_picks FROM boards WHERE kind = ? ORDER BY board", (kind,)
        )
        return [BoardMaterial(json.loads(i), t, json.loads(c), json.loads(m)) for i, t, c, m in rows]

    # ---------------------------------------------------------------- participants

    def join(self) -> Participant:
        """A new participant with a fresh random id and the next join number."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            number = self._db.execute("SELECT COUNT(*) FROM participants").fetchone()[0]
            who = Participant(secrets.token_urlsafe(12), number)
            self._db.execute("INSERT INTO participants VALUES (?, ?, ?)", (who.id, who.number, time.time()))
            self._db.execute("COMMIT")
        return who

    def participant(self, pid: str) -> Participant:
        """The participant with id `pid` (UnknownParticipant when there is none)."""
        with self._lock:
            row = self._db.execute("SELECT number FROM participants WHERE id = ?", (pid,)).fetchone()
        if row is None:
            raise UnknownParticipant(f"no participant has the id {pid!r}; join the study from its start page")
        return Participant(pid, row[0])

    def participants(self) -> list[Participant]:
        with self._lock:
            rows = self._db.execute("SELECT id, number FROM participants ORDER BY number").fetchall()
        return [Participant(pid, n) for pid, n in rows]

    def trials(self, who: Participant) -> list[Trial]:
        return schedule(self.config, who.number)

    def material(self, trial: Trial) -> BoardMaterial:
        return (self.boards if trial.kind == BOARD else self.checks)[trial.board]

    def view(self, trial: Trial) -> TrialView:
        """The caption and perception of a trial (a check: the full caption, seen in full colour)."""
        if trial.kind == CHECK:
            return TrialView(self.checks[trial.board].captions[CHECK_SPEAKER], "full", self.n_images)
        condition = self.config.conditions[trial.condition]
        caption = self.boards[trial.board].captions[condition.speaker]
        return TrialView(caption, perception_label(condition.perception), self.n_images)

    # ---------------------------------------------------------------- a session

    def answered(self, pid: str) -> dict[int, int]:
        """Trial index -> pick of every answer the participant has given."""
        with self._lock:
            return dict(self._db.execute("SELECT trial, pick FROM answers WHERE participant = ?", (pid,)))

    def show(self, pid: str) -> tuple[Trial, TrialView] | None:
        """The participant's first unanswered trial, recorded as shown (the first showing's time is kept); None when
        every trial is answered."""
        who = self.participant(pid)
        done = self.answered(pid)
        left = [t for t in self.trials(who) if t.index not in done]
        if not left:
            return None
        trial = left[0]
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO shown VALUES (?, ?, ?)", (pid, trial.index, time.time()))
        return trial, self.view(trial)

    def shown_trial(self, pid: str, index: int) -> Trial:
        """Trial `index` of the participant, which must have been shown to them (NotShown otherwise)."""
        trials = self.trials(self.participant(pid))
        if not 0 <= index < len(trials):
            raise NotShown(f"trial {index} is not in your session (trials 0..{len(trials) - 1})")
        with self._lock:
            seen = self._db.execute("SELECT 1 FROM shown WHERE participant = ? AND trial = ?", (pid, index)).fetchone()
        if seen is None:
            raise NotShown(f"trial {index} was not shown to you yet; answer the board on your screen")
        return trials[index]

    def answer(self, pid: str, index: int, pick: int) -> bool:
        """Store a participant's pick on a trial they were shown, in one transaction; True when stored now, False when
        the same answer was stored before. Refused: an unknown participant, a trial not shown to them, a pick off the
        board, another pick for a trial already answered."""
        self.shown_trial(pid, index)
        if not 0 <= pick < self.n_images:
            raise BadPick(f"pick={pick} is not on the board; pick a position from 0 to {self.n_images - 1}")
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.execute(
                    "SELECT pick FROM answers WHERE participant = ? AND trial = ?", (pid, index)
                ).fetchone()
                if before is None:
                    shown_at = self._db.execute(
                        "SELECT shown_at FROM shown WHERE participant = ? AND trial = ?", (pid, index)
                    ).fetchone()[0]
                    self._db.execute(
                        "INSERT INTO answers VALUES (?, ?, ?, ?, ?)", (pid, index, pick, now, (now - shown_at) * 1000)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if before is not None and before[0] != pick:
            raise AlreadyAnswered(f"trial {index} was already answered (pick {before[0]}); answers cannot be changed")
        return before is None

    def image(self, kind: str, board: int, position: int, perception: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT png FROM images WHERE kind = ? AND board = ? AND position = ? AND perception = ?",
                (kind, board, position, perception),
            ).fetchone()
        return None if row is None else row[0]

    # ---------------------------------------------------------------- reading back

    def answers(self) -> list[Answer]:
        """Every stored answer with what its participant was shown, in order of participants and trials."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a.participant, p.number, a.trial, a.pick, a.ms, a.answered_at FROM answers a "
                "JOIN participants p ON p.id = a.participant ORDER BY p.number, a.trial"
            ).fetchall()
        out = []
        for pid, number, index, pick, ms, answered_at in rows:
            trial = schedule(self.config, number)[index]
            board = self.material(trial)
            condition = None if trial.kind == CHECK else self.config.conditions[trial.condition]
            speaker = CHECK_SPEAKER if condition is None else condition.speaker
            out.append(
                Answer(
                    participant=pid,
                    number=number,
                    trial=index,
                    kind=trial.kind,
                    board=trial.board,
                    condition=None if condition is None else condition.label,
                    speaker=None if condition is None else condition.speaker,
                    perception=None if condition is None else perception_label(condition.perception),
                    caption=board.captions[speaker],
                    pick=pick,
                    target=board.target,
                    ms=ms,
                    answered_at=answered_at,
                    model_picks=board.model_picks[speaker],
                )
            )
        return out

"""A human listener study as plain data: its conditions, the boards, who sees which board under which condition in
which order (a Latin square), and the answers.

A condition is a speaker (whose caption the participant reads) and a perception (how the participant sees the board).
Every participant sees every one of the study's boards exactly once; the boards are cut into one block per condition,
and participant p (in join order) takes row p mod R of a Williams design: block j under condition row[j], the blocks in
row order. Over R participants every board is seen under every condition equally often (paired comparisons per
board) and every condition follows every other equally often (first-order carryover balanced). Attention-check boards
(a caption naming every attribute of the target, seen in full colour) are spread evenly between the blocks' trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPEAKERS = ("base", "trained", "oracle")  # who can caption a study's boards (speaker identities are never shown)
CHECK = "check"  # the kind of an attention-check trial
BOARD = "board"  # the kind of a trial that measures a condition


@dataclass
class Condition:
    """What a participant is given on a board: the caption of `speaker`, and the board seen through `perception`."""

    speaker: str = "trained"  # base (the captioning speaker) | trained (the run's checkpoint) | oracle
    perception: Any = "full"  # a perception: a name (full, grayscale, ...), {name: cvd, kind: deutan}, or a listener

    @property
    def label(self) -> str:
        """The condition in words, e.g. "trained / grayscale" (reports only; never shown to participants)."""
        return f"{self.speaker} / {perception_label(self.perception)}"


def perception_label(spec: Any) -> str:
    """A perception setting in words: "grayscale", "cvd(kind=deutan)"."""
    if isinstance(spec, dict):
        params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
        return f"{spec.get('name')}({params})" if params else str(spec.get("name"))
    return str(spec)


@dataclass
class StudyConfig:
    """The `study` config node: what is compared, on how many boards, and how participants are checked."""

    # the compared conditions (speaker x perception shown to the participant); at least two
    conditions: list[Condition] = field(
        default_factory=lambda: [
            Condition("trained", "full"),
            Condition("base", "full"),
            Condition("trained", "grayscale"),
            Condition("base", "grayscale"),
        ]
    )
    boards: int = 16  # boards each participant answers (every study board once); a multiple of the conditions
    attention_checks: int = 2  # extra boards with a caption naming every attribute of the target (0: none)
    seed: int = 0  # draws the study's boards and the check boards from the evaluation split

    def __post_init__(self) -> None:
        problem = config_problem(self)
        if problem:
            raise ValueError(problem)


def config_problem(config: StudyConfig) -> str | None:
    """What makes a study config unusable, in one line (None: nothing)."""
    n = len(config.conditions)
    if n < 2:
        return f"study.conditions has {n} condition(s); compare at least two"
    labels = [c.label for c in config.conditions]
    if len(set(labels)) < n:
        return f"study.conditions repeats a condition ({', '.join(labels)}); list each once"
    unknown = [c.speaker for c in config.conditions if c.speaker not in SPEAKERS]
    if unknown:
        return f"study.conditions: unknown speaker(s) {unknown}; choose from {', '.join(SPEAKERS)}"
    if config.boards < n or config.boards % n:
        return f"study.boards={config.boards} must be a positive multiple of the {n} conditions (e.g. {4 * n})"
    if config.attention_checks < 0 or config.attention_checks > config.boards:
        return f"study.attention_checks={config.attention_checks} must be between 0 and study.boards={config.boards}"
    return None


def williams_rows(n: int) -> list[list[int]]:
    """A Williams design for n conditions: rows of a Latin square in which every condition follows every other
    equally often (n rows for even n; n odd needs the square and its mirror, 2n rows)."""
    first = [0]
    for j in range(1, n):  # 0, 1, n-1, 2, n-2, ...
        first.append((j + 1) // 2 if j % 2 else n - j // 2)
    rows = [[(c + r) % n for c in first] for r in range(n)]
    return rows if n % 2 == 0 else rows + [row[::-1] for row in rows]


@dataclass(frozen=True)
class Trial:
    """One screen of a participant's session."""

    index: int  # position in the participant's session, from 0
    kind: str  # BOARD (measures a condition) or CHECK (an attention check)
    board: int  # index into the study's boards (BOARD) or its check boards (CHECK)
    condition: int  # index into StudyConfig.conditions (-1 for a check)


def schedule(config: StudyConfig, number: int) -> list[Trial]:
    """The trials of the participant who joined `number`-th (from 0): row number mod R of the Williams design, block j
    of the boards under condition row[j], the blocks in row order, the checks spread evenly."""
    rows = williams_rows(len(config.conditions))
    row = rows[number % len(rows)]
    per_block = config.boards // len(row)
    shown = [(BOARD, j * per_block + i, row[j]) for j in range(len(row)) for i in range(per_block)]
    total = len(shown) + config.attention_checks
    check_at = {round((c + 1) * total / (config.attention_checks + 1)) - 1 for c in range(config.attention_checks)}
    trials, checks = [], 0
    for index in range(total):
        if index in check_at:
            trials.append(Trial(index, CHECK, checks, -1))
            checks += 1
        else:
            kind, board, condition = shown.pop(0)
            trials.append(Trial(index, kind, board, condition))
    return trials


@dataclass
class Answer:
    """One stored answer, with what the participant was shown (the rows `study report` reads and exports)."""

    participant: str  # the participant's id (a random token)
    number: int  # the participant's join order, from 0 (their Latin square row is number mod rows)
    trial: int  # Trial.index
    kind: str  # BOARD or CHECK
    board: int  # Trial.board
    condition: str | None  # Condition.label (None for a check)
    speaker: str | None  # Condition.speaker (None for a check)
    perception: str | None  # perception_label of the condition's perception (None for a check)
    caption: str  # the caption shown
    pick: int  # the position picked, from 0
    target: int  # the target's position
    ms: float  # milliseconds from the trial's first showing to the answer
    answered_at: float  # unix time the answer was stored
    model_picks: dict[str, int]  # model listener -> its pick on the same board and caption (through its perception)

    @property
    def correct(self) -> bool:
        return self.pick == self.target

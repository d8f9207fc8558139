"""The statistics of a human listener study from its stored answers (`protocol.Answer`), as one `StudyStats`.

People's accuracy per condition with a bootstrap interval that resamples participants (one participant's answers are
correlated); paired per-board differences between two speakers under the same perception (the Latin square shows
every board under every condition); attention-check pass rates; time per answer; and the model listeners on the same
answers: their accuracy, and how often people picked what they picked. Pure numpy; `listener_sub.report.study`
renders it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from listener_sub.metrics import bootstrap_interval
from listener_sub.study.protocol import BOARD, CHECK, Answer

NAN = float("nan")


@dataclass
class Times:
    """Milliseconds per answer: the median and the quartiles (NaN without answers)."""

    median: float
    q25: float
    q75: float
    n: int  # answers


@dataclass
class ModelStats:
    """A model listener on a set of people's answers, one value per answer that holds its pick (so it is weighted as
    the people are)."""

    accuracy: float  # share of the answers whose board the model listener got right
    lo: float  # bootstrap 95% interval of the accuracy, answers resampled
    hi: float
    agreement: float  # share of the answers where the person picked what the model listener picked
    answers: int


@dataclass
class ConditionStats:
    """People's answers to the boards of one condition."""

    label: str  # Condition.label, e.g. "trained / grayscale"
    speaker: str
    perception: str
    accuracy: float  # share of the answers that picked the target (NaN without answers)
    lo: float  # bootstrap 95% interval of the accuracy, participants resampled
    hi: float
    answers: int
    participants: int
    time: Times
    models: dict[str, ModelStats]  # model listener -> how it does on these answers


@dataclass
class Difference:
    """Speaker a's accuracy minus speaker b's under one perception, board by board: each board's mean accuracy under
    a minus under b (each over the participants who saw it that way), over the boards seen under both."""

    perception: str
    a: str  # the condition label of speaker a under the perception
    b: str  # the condition label of speaker b
    mean: float  # mean over the boards of the per-board differences (NaN without boards)
    lo: float  # bootstrap 95% interval of the mean, boards resampled
    hi: float
    boards: int


@dataclass
class Checks:
    """The attention checks' answers."""

    answers: int
    pass_rate: float  # share of the check answers that picked the target
    participants: int  # participants with at least one check answer
    all_passed: float  # share of those participants who passed every check they answered


@dataclass
class StudyStats:
    """Everything the study report shows, from the answers alone."""

    conditions: list[ConditionStats]  # in config order
    differences: list[Difference]  # one per perception that has both speakers' conditions, in config order
    checks: Checks | None  # None: no check was answered
    time: Times  # over all board answers (checks excluded: they are not what the study measures)
    listeners: list[str]  # the model listeners with a pick on some board answer, sorted
    agreement: dict[str, float]  # model listener -> share of all board answers where the person picked its pick
    participants: int  # everyone with an answer (boards or checks)
    answers: int  # board answers
    resamples: int  # bootstrap resamples of every interval
    seed: int  # the bootstrap's seed

    def condition(self, label: str) -> ConditionStats:
        """The statistics of the condition labelled `label`."""
        return next(c for c in self.conditions if c.label == label)


def split_label(label: str) -> tuple[str, str]:
    """(speaker, perception) of a Condition.label: "trained / cvd(kind=deutan)" -> ("trained", "cvd(kind=deutan)")."""
    speaker, _, perception = label.partition(" / ")
    return speaker, perception


def _mean(values: np.ndarray) -> float:
    """The mean, NaN for no values (never numpy's empty-slice warning)."""
    return float(values.mean()) if len(values) else NAN


def answer_times(answers: Sequence[Answer]) -> Times:
    """Median and quartiles of the answers' milliseconds."""
    if not answers:
        return Times(NAN, NAN, NAN, 0)
    q25, median, q75 = np.percentile([a.ms for a in answers], [25, 50, 75])
    return Times(float(median), float(q25), float(q75), len(answers))


def participant_accuracy(answers: Sequence[Answer], resamples: int, seed: int) -> tuple[float, float, float]:
    """The answers' accuracy and its bootstrap 95% interval with participants resampled whole (each participant's
    answers stay together; the accuracy is pooled over the resampled participants' answers). NaN without answers."""
    if not answers:
        return NAN, NAN, NAN
    by_participant: dict[str, list[bool]] = {}
    for a in answers:
        by_participant.setdefault(a.participant, []).append(a.correct)
    ordered = [by_participant[p] for p in sorted(by_participant)]  # a fixed order: the bootstrap draws by index
    counts = np.array([len(right) for right in ordered], float)  # (P,)
    rates = np.array([np.mean(right) for right in ordered])  # (P,)
    lo, hi = bootstrap_interval(rates, resamples, seed, weights=counts)
    return float((rates * counts).sum() / counts.sum()), lo, hi


def agreement(answers: Sequence[Answer], name: str) -> float:
    """Share of the answers holding model listener `name`'s pick where the person picked the same (NaN: none)."""
    return _mean(np.array([a.pick == a.model_picks[name] for a in answers if name in a.model_picks], float))


def model_stats(answers: Sequence[Answer], name: str, resamples: int, seed: int) -> ModelStats:
    """How model listener `name` does on the answers that hold its pick: accuracy (interval over answers) and
    agreement with the people's picks."""
    held = [a for a in answers if name in a.model_picks]
    right = np.array([a.model_picks[name] == a.target for a in held], float)  # (N,)
    lo, hi = bootstrap_interval(right, resamples, seed) if held else (NAN, NAN)
    return ModelStats(_mean(right), lo, hi, agreement(held, name), len(held))


def board_accuracy(answers: Sequence[Answer]) -> dict[int, float]:
    """Board -> the mean accuracy of the answers to it."""
    by_board: dict[int, list[bool]] = {}
    for a in answers:
        by_board.setdefault(a.board, []).append(a.correct)
    return {board: float(np.mean(right)) for board, right in by_board.items()}


def paired_difference(
    answers_a: Sequence[Answer], answers_b: Sequence[Answer], resamples: int, seed: int
) -> tuple[float, float, float, int]:
    """Mean over the boards answered under both of (board accuracy under a - under b), its bootstrap 95% interval
    with boards resampled, and the number of such boards."""
    under_a, under_b = board_accuracy(answers_a), board_accuracy(answers_b)
    shared = sorted(set(under_a) & set(under_b))
    if not shared:
        return NAN, NAN, NAN, 0
    diffs = np.array([under_a[board] - under_b[board] for board in shared])  # (B,)
    lo, hi = bootstrap_interval(diffs, resamples, seed)
    return float(diffs.mean()), lo, hi, len(shared)


def check_stats(answers: Sequence[Answer]) -> Checks | None:
    """Pass rate of the check answers, and the share of participants who passed all theirs (None: no checks)."""
    checks = [a for a in answers if a.kind == CHECK]
    if not checks:
        return None
    passed: dict[str, bool] = {}
    for a in checks:
        passed[a.participant] = passed.get(a.participant, True) and a.correct
    return Checks(
        answers=len(checks),
        pass_rate=float(np.mean([a.correct for a in checks])),
        participants=len(passed),
        all_passed=float(np.mean(list(passed.values()))),
    )


def study_stats(
    answers: Sequence[Answer],
    conditions: Sequence[str],
    resamples: int = 2000,
    seed: int = 0,
    a: str = "trained",
    b: str = "base",
) -> StudyStats:
    """The study's statistics from its answers. conditions: the condition labels in config order (a condition without
    answers gets n=0 and NaN values); a, b: the speakers whose paired per-board difference is taken under each
    perception that has both. Every interval is a bootstrap 95% percentile interval of `resamples` resamples drawn
    from `seed`, so the result is a function of the answers and the arguments."""
    boards = [x for x in answers if x.kind == BOARD]
    listeners = sorted({name for x in boards for name in x.model_picks})
    by_condition: dict[str, list[Answer]] = {label: [] for label in conditions}
    for x in boards:
        if x.condition in by_condition:
            by_condition[x.condition].append(x)

    rows = []
    for label in conditions:
        mine = by_condition[label]
        accuracy, lo, hi = participant_accuracy(mine, resamples, seed)
        rows.append(
            ConditionStats(
                label=label,
                speaker=split_label(label)[0],
                perception=split_label(label)[1],
                accuracy=accuracy,
                lo=lo,
                hi=hi,
                answers=len(mine),
                participants=len({x.participant for x in mine}),
                time=answer_times(mine),
                models={name: model_stats(mine, name, resamples, seed) for name in listeners},
            )
        )

    differences = []
    labels = {split_label(label): label for label in conditions}  # (speaker, perception) -> label
    for perception in dict.fromkeys(split_label(label)[1] for label in conditions):  # config order, each once
        if (a, perception) in labels and (b, perception) in labels:
            label_a, label_b = labels[a, perception], labels[b, perception]
            mean, lo, hi, n = paired_difference(by_condition[label_a], by_condition[label_b], resamples, seed)
            differences.append(Difference(perception, label_a, label_b, mean, lo, hi, n))

    return StudyStats(
        conditions=rows,
        differences=differences,
        checks=check_stats(answers),
        time=answer_times(boards),
        listeners=listeners,
        agreement={name: agreement(boards, name) for name in listeners},
        participants=len({x.participant for x in answers}),
        answers=len(boards),
        resamples=resamples,
        seed=seed,
    )

"""The human study's statistics (`listener_sub.study.stats`) and its report files (`listener_sub.report.study`) on a
hand-built study whose every number is known: 4 participants answer the same 8 boards, each under one of 4
conditions by the protocol's own Latin square, plus 2 attention checks each."""

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from listener_sub.files import to_plain
from listener_sub.metrics import bootstrap_interval
from listener_sub.report.study import write_study_report
from listener_sub.study.protocol import BOARD, CHECK, Answer, StudyConfig, schedule
from listener_sub.study.stats import study_stats

CONFIG = StudyConfig(boards=8, attention_checks=2)
LABELS = [c.label for c in CONFIG.conditions]  # trained / full, base / full, trained / grayscale, base / grayscale
N_IMAGES = 4
RESAMPLES = 400
LISTENERS = {"literal": "full colour", "gray": "grayscale, subtracted"}


def human_right(participant: int, board: int, label: str) -> bool:
    """Who gets what right: trained / full always; base / full on even boards (one of each block's two); trained /
    grayscale all but participant 0; base / grayscale never."""
    return {
        "trained / full": True,
        "base / full": board % 2 == 0,
        "trained / grayscale": participant != 0,
        "base / grayscale": False,
    }[label]


def make_answers(participants: int = 4, per_board: int = 1) -> list[Answer]:
    """Board answers by `human_right` (a wrong pick is target + 1), each repeated `per_board` times; `literal` always
    picks the target, `gray` too in full colour but picks target + 1 (the people's wrong pick) in grayscale. Board
    answers take 1000 * (board + 1) ms, checks 500 ms; participant 3 fails their first check."""
    answers = []
    for p in range(participants):
        for trial in schedule(CONFIG, p):
            target = trial.board % N_IMAGES
            wrong = (target + 1) % N_IMAGES
            if trial.kind == CHECK:
                pick = wrong if p % 4 == 3 and trial.board == 0 else target
                fields = dict(condition=None, speaker=None, perception=None, ms=500.0, model_picks={})
            else:
                condition = CONFIG.conditions[trial.condition]
                label = condition.label
                pick = target if human_right(p % 4, trial.board, label) else wrong
                gray = target if condition.perception == "full" else wrong
                fields = dict(
                    condition=label,
                    speaker=condition.speaker,
                    perception=condition.perception,
                    ms=1000.0 * (trial.board + 1),
                    model_picks={"literal": target, "gray": gray},
                )
            answer = Answer(
                participant=f"p{p:02d}",
                number=p,
                trial=trial.index,
                kind=trial.kind,
                board=trial.board,
                caption=f"caption {trial.board}",
                pick=pick,
                target=target,
                answered_at=1.7e9 + 60 * p + trial.index,
                **fields,
            )
            answers += [answer] * (per_board if trial.kind == BOARD else 1)
    return answers


@pytest.fixture(scope="module")
def stats():
    return study_stats(make_answers(), LABELS, RESAMPLES)


def test_accuracy_per_condition_counts_and_interval(stats):
    expected = {"trained / full": 1.0, "base / full": 0.5, "trained / grayscale": 0.75, "base / grayscale": 0.0}
    assert [c.label for c in stats.conditions] == LABELS
    for c in stats.conditions:
        assert c.accuracy == pytest.approx(expected[c.label])
        assert (c.answers, c.participants) == (8, 4)
        assert c.lo <= c.accuracy <= c.hi
    assert stats.condition("trained / full").speaker == "trained"
    assert stats.condition("base / grayscale").perception == "grayscale"
    # participants are the resampled unit: the mixed condition's interval is wide, the unanimous ones are points
    gray = stats.condition("trained / grayscale")
    assert gray.lo < 0.75 < gray.hi
    assert (stats.condition("trained / full").lo, stats.condition("trained / full").hi) == (1.0, 1.0)
    assert (stats.participants, stats.answers) == (4, 32)


def test_interval_resamples_participants_not_answers():
    # each participant answers every board 4 times the same way: 4x the answers, the same participants; a cluster
    # bootstrap gives the same interval, one over answers would narrow it
    once = study_stats(make_answers(), LABELS, RESAMPLES).condition("trained / grayscale")
    repeated = study_stats(make_answers(per_board=4), LABELS, RESAMPLES).condition("trained / grayscale")
    assert repeated.answers == 4 * once.answers
    assert (repeated.accuracy, repeated.lo, repeated.hi) == pytest.approx((once.accuracy, once.lo, once.hi))
    # the same participants' rates and answer counts, straight through the shared bootstrap
    lo_hi = bootstrap_interval(np.array([0.0, 1.0, 1.0, 1.0]), RESAMPLES, 0, weights=np.full(4, 2.0))
    assert (once.lo, once.hi) == pytest.approx(lo_hi)


def test_interval_shrinks_with_more_participants():
    few = study_stats(make_answers(4), LABELS, RESAMPLES).condition("trained / grayscale")
    many = study_stats(make_answers(16), LABELS, RESAMPLES).condition("trained / grayscale")
    assert many.accuracy == pytest.approx(few.accuracy) == pytest.approx(0.75)
    assert many.participants == 16
    assert many.hi - many.lo < few.hi - few.lo


def test_paired_differences_per_board(stats):
    full, gray = stats.differences
    assert (full.perception, full.a, full.b, full.boards) == ("full", "trained / full", "base / full", 8)
    # per board: 1 - 1 on even boards, 1 - 0 on odd ones
    assert full.mean == pytest.approx(0.5)
    # per board: 1 - 0, except the two boards participant 0 saw under trained / grayscale (0 - 0)
    assert (gray.perception, gray.boards, gray.mean) == ("grayscale", 8, pytest.approx(0.75))
    for d in (full, gray):
        assert d.lo <= d.mean <= d.hi
    swapped = study_stats(make_answers(), LABELS, RESAMPLES, a="base", b="trained")
    assert swapped.differences[0].mean == pytest.approx(-0.5)


def test_attention_checks(stats):
    assert stats.checks.answers == 8
    assert stats.checks.pass_rate == pytest.approx(7 / 8)
    assert stats.checks.participants == 4
    assert stats.checks.all_passed == pytest.approx(3 / 4)
    boards_only = [a for a in make_answers() if a.kind == BOARD]
    assert study_stats(boards_only, LABELS, RESAMPLES).checks is None


def test_time_percentiles(stats):
    # each condition holds every board once: 1000, 2000, ..., 8000 ms; the checks' 500 ms stay out of the overall
    for times in [c.time for c in stats.conditions] + [stats.time]:
        assert (times.q25, times.median, times.q75) == pytest.approx((2750.0, 4500.0, 6250.0))
    assert stats.time.n == 32


def test_model_listeners_accuracy_and_agreement(stats):
    assert stats.listeners == ["gray", "literal"]
    people = {"trained / full": 1.0, "base / full": 0.5, "trained / grayscale": 0.75, "base / grayscale": 0.0}
    for c in stats.conditions:
        literal, gray = c.models["literal"], c.models["gray"]
        assert (literal.accuracy, literal.lo, literal.hi, literal.answers) == (1.0, 1.0, 1.0, 8)
        assert literal.agreement == pytest.approx(people[c.label])  # it picks the target: agrees when people are right
        if c.perception == "full":
            assert (gray.accuracy, gray.agreement) == pytest.approx((1.0, people[c.label]))
        else:  # it picks the people's wrong pick: agrees when they are wrong
            assert (gray.accuracy, gray.lo, gray.hi) == (0.0, 0.0, 0.0)
            assert gray.agreement == pytest.approx(1 - people[c.label])
    assert stats.agreement["literal"] == pytest.approx(18 / 32)
    assert stats.agreement["gray"] == pytest.approx((8 + 4 + 2 + 8) / 32)


def test_model_accuracy_weights_each_answer():
    answers = make_answers()
    # drop gray's pick from the two trained / full answers of participant 0: its numbers cover the 6 that hold it
    dropped = [
        replace(a, model_picks={"literal": a.target}) if a.number == 0 and a.condition == "trained / full" else a
        for a in answers
    ]
    c = study_stats(dropped, LABELS, RESAMPLES).condition("trained / full")
    assert (c.models["gray"].answers, c.models["literal"].answers) == (6, 8)


def test_deterministic_given_seed():
    first = json.dumps(to_plain(study_stats(make_answers(), LABELS, RESAMPLES, seed=3)))
    again = json.dumps(to_plain(study_stats(make_answers(), LABELS, RESAMPLES, seed=3)))
    assert first == again


def test_condition_without_answers_is_nan_not_an_error():
    labels = [*LABELS, "oracle / full", "trained / cvd(kind=deutan)", "base / cvd(kind=deutan)"]
    stats = study_stats(make_answers(), labels, RESAMPLES)
    empty = stats.condition("oracle / full")
    assert (empty.answers, empty.participants, empty.time.n) == (0, 0, 0)
    assert all(math.isnan(v) for v in (empty.accuracy, empty.lo, empty.hi, empty.time.median))
    assert empty.models["literal"].answers == 0 and math.isnan(empty.models["literal"].accuracy)
    cvd = stats.differences[-1]
    assert (cvd.perception, cvd.boards) == ("cvd(kind=deutan)", 0) and math.isnan(cvd.mean)
    nothing = study_stats([], LABELS, RESAMPLES)
    assert nothing.answers == 0 and nothing.checks is None and math.isnan(nothing.conditions[0].accuracy)


def test_write_study_report(tmp_path):
    answers = make_answers()
    labels = [*LABELS, "oracle / full"]
    stats = write_study_report(answers, labels, LISTENERS, tmp_path, "Pilot study", N_IMAGES, resamples=RESAMPLES)
    names = {"report.md", "report.png", "report.json", "answers.csv", "answers.jsonl"}
    assert {p.name for p in tmp_path.iterdir()} == names  # and no temporary left behind

    with open(tmp_path / "answers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(answers) == 40
    assert list(rows[0])[:3] == ["participant", "number", "trial"]
    assert {"correct", "model_pick/literal", "model_pick/gray", "ms", "answered_at"} <= set(rows[0])
    assert "model_picks" not in rows[0]
    first_board = next(i for i, a in enumerate(answers) if a.kind == BOARD)
    assert rows[first_board]["condition"] == answers[first_board].condition
    assert int(rows[first_board]["model_pick/gray"]) == answers[first_board].model_picks["gray"]
    assert rows[first_board]["correct"] == str(answers[first_board].correct)
    check = next(i for i, a in enumerate(answers) if a.kind == CHECK)
    assert (rows[check]["condition"], rows[check]["model_pick/literal"]) == ("", "")

    lines = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(lines) == 40
    assert lines[first_board]["model_picks"] == answers[first_board].model_picks
    assert lines[check]["condition"] is None and "correct" in lines[check]

    report = json.loads((tmp_path / "report.json").read_text())  # strict JSON: NaN is null
    assert report["conditions"][1]["accuracy"] == pytest.approx(0.5)
    assert report["conditions"][-1]["accuracy"] is None and report["conditions"][-1]["answers"] == 0
    assert report["checks"]["pass_rate"] == pytest.approx(0.875)

    md = (tmp_path / "report.md").read_text()
    gray = stats.condition("trained / grayscale")
    assert "# Pilot study" in md and "chance level 0.250" in md
    assert f"| trained / grayscale | 0.750 | [{gray.lo:.3f}, {gray.hi:.3f}] | 8 | 4 | 4.5 | 2.8 - 6.2 |" in md
    assert "| full | trained / full - base / full | +0.500 |" in md
    assert "Pass rate 0.875 over 8 check answers. Participants who passed all their checks: 0.750 of the 4" in md
    assert "| oracle / full | - | - | 0 | 0 | - | - |" in md
    assert "| gray (grayscale, subtracted) | trained / grayscale | 0.000 | [0.000, 0.000] | 0.250 | 8 |" in md
    assert f"{RESAMPLES} resamples, seed 0" in md and "resamples participants" in md
    assert "![people's accuracy per condition](report.png)" in md

    with Image.open(tmp_path / "report.png") as image:
        assert image.format == "PNG" and image.size[0] > 400

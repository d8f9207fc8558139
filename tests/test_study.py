"""Human listener studies: the Latin square, the materials and the store (one transaction per answer, refusals with a
4xx), a participant playing a whole study in Chromium, a kill -9 of the server under 50 participants, and the
command line."""

import html
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import study_load
from browser import REQUIRE, Browser, find_browser
from PIL import Image
from tiny_game import CAPTIONS, one_thread, tiny_game, tiny_listeners  # noqa: F401 (one_thread: an autouse fixture)

from listener_sub.oracle import oracle_speaker
from listener_sub.perception import Full, Grayscale
from listener_sub.report.study import write_study_report
from listener_sub.study.materials import CHECK_SPEAKER, prepare_study
from listener_sub.study.protocol import BOARD, CHECK, Condition, StudyConfig, schedule, williams_rows
from listener_sub.study.store import AlreadyAnswered, BadPick, NotShown, StudyStore, UnknownParticipant
from listener_sub.web.server import running
from listener_sub.web.study_app import create_study_app

STUDY = StudyConfig(
    conditions=[
        Condition("base", "full"),
        Condition("oracle", "full"),
        Condition("base", "grayscale"),
        Condition("oracle", "grayscale"),
    ],
    boards=4,
    attention_checks=1,
)
TRIALS = STUDY.boards + STUDY.attention_checks


@pytest.fixture(scope="module")
def game():
    return tiny_game(tiny_listeners())


@pytest.fixture(scope="module")
def materials(game):
    speakers = {
        "base": lambda boards: [CAPTIONS[i % len(CAPTIONS)] for i in range(len(boards))],
        "oracle": lambda boards: oracle_speaker(game, boards)[0],
    }
    listeners = {name: name for name in game.listeners}
    return prepare_study(STUDY, game, speakers, {"full": Full(), "grayscale": Grayscale()}, listeners, "test")


@pytest.fixture
def store(materials, tmp_path):
    store = StudyStore.create(tmp_path / "study.db", materials)
    yield store
    store.close()


def browser_binary() -> str:
    binary = find_browser()
    if binary is None:
        if os.environ.get(REQUIRE):
            pytest.fail(f"{REQUIRE} is set but no chromium is on PATH (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    return binary


# ---------------------------------------------------------------- the protocol


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_williams_design_balances_position_and_carryover(n):
    rows = williams_rows(n)
    assert len(rows) == (n if n % 2 == 0 else 2 * n)
    assert all(sorted(row) == list(range(n)) for row in rows)
    for column in zip(*rows):  # every condition equally often at every position
        assert set(Counter(column).values()) == {len(rows) // n}
    follows = Counter(pair for row in rows for pair in pairwise(row))
    assert len(follows) == n * (n - 1) and len(set(follows.values())) == 1  # every ordered pair equally often


def test_schedule_shows_every_board_once_and_each_under_every_condition():
    config = StudyConfig(boards=8, attention_checks=2)  # 4 conditions
    sessions = [schedule(config, p) for p in range(4)]
    seen = Counter()
    for trials in sessions:
        boards = [t.board for t in trials if t.kind == BOARD]
        assert sorted(boards) == list(range(8))  # each board once per participant
        assert [t.index for t in trials] == list(range(10))
        assert [t.board for t in trials if t.kind == CHECK] == [0, 1]
        assert trials[0].kind == BOARD and trials[-1].kind == BOARD  # checks inside the session
        seen.update((t.board, t.condition) for t in trials if t.kind == BOARD)
    assert seen == Counter({(b, c): 1 for b in range(8) for c in range(4)})  # 4 participants: every pairing once


def test_a_config_that_cannot_work_is_refused():
    with pytest.raises(ValueError, match="multiple of the 4 conditions"):
        StudyConfig(boards=6)
    with pytest.raises(ValueError, match="unknown speaker"):
        StudyConfig(conditions=[Condition("base"), Condition("someone")], boards=2)
    with pytest.raises(ValueError, match="repeats a condition"):
        StudyConfig(conditions=[Condition("base"), Condition("base")], boards=2)


# ---------------------------------------------------------------- materials and store


def test_materials_hold_the_games_play_of_every_caption(materials, game):
    assert len(materials.boards) == STUDY.boards and len(materials.checks) == STUDY.attention_checks
    board = materials.boards[1]
    for speaker in ("base", "oracle"):
        from listener_sub.game import Boards

        boards = Boards(np.array([board.items]), np.array([board.target]), game.pool("test"))
        outcome = game.play([board.captions[speaker]], boards)
        assert board.model_picks[speaker] == {name: int(c[0]) for name, c in outcome.choices.items()}
    check = materials.checks[0]
    scenes = game.pool("test").scenes
    target = check.items[check.target]
    assert check.captions[CHECK_SPEAKER] == game.pool("test").describe(target)  # every attribute named
    assert scenes is not None
    gray = np.asarray(Image.open(io.BytesIO(materials.images[(BOARD, 0, 0, "grayscale")])))
    full = np.asarray(Image.open(io.BytesIO(materials.images[(BOARD, 0, 0, "full")])))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert np.array_equal(full, game.pool("test").images[board_items(materials, 0)[0]])


def board_items(materials, b):
    return materials.boards[b].items


def test_store_keeps_one_answer_per_trial_and_refuses_the_rest(store):
    who = store.join()
    with pytest.raises(NotShown):
        store.answer(who.id, 0, 1)  # not shown yet
    trial, view = store.show(who.id)
    assert trial.index == 0 and view.n_images == 4
    with pytest.raises(BadPick):
        store.answer(who.id, 0, 4)
    assert store.answer(who.id, 0, 2) is True
    assert store.answer(who.id, 0, 2) is False  # the same answer again: stored once
    with pytest.raises(AlreadyAnswered):
        store.answer(who.id, 0, 3)
    with pytest.raises(NotShown):
        store.answer(who.id, 2, 0)  # a board further on
    with pytest.raises(UnknownParticipant):
        store.answer("forged", 0, 0)
    other = store.join()
    with pytest.raises(NotShown):
        store.answer(other.id, 0, 0)  # shown to someone else, not to them
    assert [(a.participant, a.trial, a.pick) for a in store.answers()] == [(who.id, 0, 2)]
    assert store.show(who.id)[0].index == 1  # resumes at the first unanswered trial


def post(url: str, path: str, data: dict, cookie: str | None = None) -> tuple[int, str, str]:
    """(status, final URL, body) of a form post; a refusal's body too."""
    request = urllib.request.Request(url + path, data=urllib.parse.urlencode(data).encode())
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.url, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, url + path, error.read().decode()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def refusal(body: str) -> str:
    """The one line of a refusal page, unescaped."""
    return html.unescape(re.search(r'id="refusal"><strong>\d+</strong> (.*?)</p>', body).group(1))


def test_bad_requests_get_a_4xx_and_one_line(store):
    with running(create_study_app(store)) as url:
        status, page_url, _ = post(url, "/join", {})
        pid = page_url.rsplit("/", 1)[1]
        assert status == 200 and store.participant(pid).number == 0
        cases = [
            ({"participant": pid, "trial": 0, "pick": 9}, 422, "not on the board"),
            ({"participant": pid, "trial": 3, "pick": 0}, 409, "not shown to you"),
            ({"participant": pid, "trial": 99, "pick": 0}, 409, "not in your session"),
            ({"participant": "someone", "trial": 0, "pick": 0}, 403, "another participant"),
            ({"participant": pid, "trial": "zero", "pick": 0}, 422, "trial: Input should be a valid integer"),
            ({"participant": pid, "trial": 0}, 422, "pick: Field required"),
        ]
        for form, status, words in cases:
            code, _, body = post(url, f"/p/{pid}/answer", form)
            assert (code, words in refusal(body)) == (status, True), (form, body[-300:])
        assert post(url, f"/p/{pid}/answer", {"participant": pid, "trial": 0, "pick": 1})[0] == 200
        assert post(url, f"/p/{pid}/answer", {"participant": pid, "trial": 0, "pick": 1})[0] == 200  # again: fine
        code, _, body = post(url, f"/p/{pid}/answer", {"participant": pid, "trial": 0, "pick": 2})
        assert code == 409 and "already answered" in refusal(body)
        assert post(url, "/p/nobody/answer", {"participant": "nobody", "trial": 0, "pick": 0})[0] == 404
        assert get(f"{url}/p/nobody")[0] == 404
        assert get(f"{url}/p/{pid}/t/0/img/7.png")[0] == 404
        assert get(f"{url}/p/{pid}/t/4/img/0.png")[0] == 409  # a board not shown yet: nothing to see
        assert get(f"{url}/nowhere")[0] == 404
        with urllib.request.urlopen(f"{url}/p/{pid}") as response:
            csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
    assert [(a.trial, a.pick) for a in store.answers()] == [(0, 1)]


# ---------------------------------------------------------------- in a browser


def test_a_participant_plays_the_whole_study_in_chromium(store, tmp_path):
    """Clicks through the study, leaves half way and comes back by the start page, then in another browser by the
    link; the stored answers are the clicks, and the report's accuracies are the clicks'."""
    binary = browser_binary()
    clicks = []
    with running(create_study_app(store)) as url:
        with Browser(binary, width=1100, height=800) as browser:
            assert browser.open(url + "/").errors == []
            run = browser.click("#start")
            assert run.errors == [], run.errors  # the page keeps to its Content-Security-Policy
            pid = browser.evaluate("location.pathname").rsplit("/", 1)[1]
            progress = "document.getElementById('progress').textContent"
            for k in range(2):
                assert browser.evaluate(progress) == f"Board {k + 1} of {TRIALS}"
                assert browser.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
                pick = (k * 3) % 4
                browser.click(f"#pick-{pick}")
                clicks.append(pick)
            browser.open("about:blank")  # the tab is left ...
            browser.open(url + "/")  # ... and the start page opened again: the cookie leads back
            assert browser.evaluate("document.getElementById('start').textContent") == "Continue where you stopped"
            browser.click("#start")
            assert browser.evaluate(progress) == f"Board 3 of {TRIALS}"
            browser.click("#pick-1")
            clicks.append(1)
        with Browser(binary, width=1100, height=800) as browser:  # a new browser, no cookie: the link resumes
            browser.open(f"{url}/p/{pid}")
            while browser.evaluate("document.getElementById('done') === null"):
                pick = len(clicks) % 4
                browser.click(f"#pick-{pick}")
                clicks.append(pick)
            browser.screenshot(tmp_path / "done.png")
    answers = store.answers()
    assert [(a.participant, a.trial, a.pick) for a in answers] == [(pid, t, p) for t, p in enumerate(clicks)]
    assert len(answers) == TRIALS and all(a.ms >= 0 for a in answers)
    stats = write_study_report(answers, [c.label for c in STUDY.conditions], store.listeners, tmp_path, "t", 4)
    for condition in STUDY.conditions:
        mine = [a.correct for a in answers if a.condition == condition.label]
        assert stats.condition(condition.label).accuracy == pytest.approx(np.mean(mine))
        assert f"| {condition.label} | {np.mean(mine):.3f} |" in (tmp_path / "report.md").read_text()


# ---------------------------------------------------------------- the server under load, killed


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    """`listener-sub study dir=FOLDER port=0` in its own process; its URL once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "listener_sub", "study", f"dir={folder}", "port=0", f"hydra.run.dir={folder / 'run'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    for line in process.stdout:
        found = re.search(r"join at (http://\S+)/", line)
        if found:
            return process, found.group(1)
        assert time.monotonic() < deadline, "the study server did not start"
    raise AssertionError(f"the study server exited with {process.wait()}")


def load_until_killed(folder: Path, participants: int, seconds: float) -> study_load.Load:
    """`participants` simulated participants answering for `seconds`, then the server killed with SIGKILL under
    them."""
    process, url = serve(folder)
    load, stop = study_load.Load(), threading.Event()
    threads = study_load.start(url, participants, load, stop)
    time.sleep(seconds)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    stop.set()
    for thread in threads:
        thread.join(30)
    return load


def check_nothing_lost(folder: Path, load: study_load.Load) -> None:
    store = StudyStore(folder / "study.db")
    stored = {(a.participant, a.trial): a.pick for a in store.answers()}
    acknowledged = {(pid, trial): pick for pid, trial, pick in load.acknowledged}
    assert all(stored.get(key) == pick for key, pick in acknowledged.items())  # nothing acknowledged is lost
    assert len(stored) - len(acknowledged) <= 50  # at most the answers in flight when the server died
    assert not [s for s in load.statuses if s >= 500]
    assert set(load.statuses) <= {200, 303}
    store.close()


def test_kill_9_under_50_participants_loses_no_acknowledged_answer(store, tmp_path):
    folder = store.path.parent
    store.close()
    load = load_until_killed(folder, participants=50, seconds=2.5)
    assert len(load.acknowledged) > 100
    check_nothing_lost(folder, load)
    process, url = serve(folder)  # restarted: every participant resumes where they stopped
    try:
        after = StudyStore(folder / "study.db")
        pid, trial, _ = load.acknowledged[0]
        done = after.answered(pid)
        status, page = get(f"{url}/p/{pid}")
        shown = re.search(r'name="trial" value="(\d+)"', page)
        expected = min(set(range(TRIALS)) - set(done), default=None)
        assert status == 200 and (int(shown.group(1)) if shown else None) == expected
        after.close()
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


@pytest.mark.slow
def test_a_minute_of_50_participants(store, tmp_path, capsys):
    folder = store.path.parent
    store.close()
    load = load_until_killed(folder, participants=50, seconds=60)
    check_nothing_lost(folder, load)
    with capsys.disabled():
        print(
            f"\n50 participants, 60 s: {sum(load.statuses.values())} requests, {len(load.acknowledged)} answers "
            f"acknowledged, statuses {dict(load.statuses)}, p95 latency {load.p95_ms():.1f} ms"
        )


def test_study_command_creates_and_reports_a_study(warm_cache, tmp_path, monkeypatch, capsys):
    """`listener-sub study create` on the tiny models (base against oracle, full against grayscale), then `report`."""
    from test_pretrain import TINY

    from listener_sub import cli

    monkeypatch.setattr(sys, "argv", list(sys.argv))
    conditions = "[{speaker:base,perception:full},{speaker:oracle,perception:gray}]"
    common = [f"dir={tmp_path / 'study'}", f"hydra.run.dir={tmp_path / 'run'}"]
    cli.main(["study", "create", *TINY, f"study.conditions={conditions}", "study.boards=2", *common])
    store = StudyStore(tmp_path / "study" / "study.db")
    assert len(store.boards) == 2 and len(store.checks) == 2 and store.config.conditions[1].perception == "gray"
    who = store.join()
    for _ in range(4):
        trial, _ = store.show(who.id)
        store.answer(who.id, trial.index, store.material(trial).target)  # always right
    store.close()
    cli.main(["study", "report", *common])
    assert "1 participants, 2 answers" in capsys.readouterr().out
    report = (tmp_path / "study" / "report.md").read_text()
    assert "| base / full | 1.000 |" in report and "| oracle / gray | 1.000 |" in report
    assert "Pass rate 1.000 over 2 check answers" in report
    assert len((tmp_path / "study" / "answers.csv").read_text().splitlines()) == 1 + 4

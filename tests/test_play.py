"""`listener-sub play`: a researcher plays the speaker role and a person the listener role in Chromium against the
real server; every number on the pages is the game core's; bad requests get a 4xx; the command writes its
screenshots."""

import io
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from browser import Browser  # noqa: I001 (a test helper module)
from PIL import Image
from test_pretrain import TINY
from test_study import browser_binary, get, post, refusal
from tiny_game import CAPTIONS, one_thread, tiny_game, tiny_listeners  # noqa: F401 (one_thread: an autouse fixture)

from listener_sub.commands.play import take_shots
from listener_sub.images import perceived
from listener_sub.oracle import oracle_speaker
from listener_sub.web.play_app import create_play_app
from listener_sub.web.server import running
from listener_sub.web.table import people_views, play_table
from listener_sub.web.turns import TurnStore

BOARDS = 4


@pytest.fixture(scope="module")
def table():
    game = tiny_game(tiny_listeners())
    boards = game.sample(BOARDS, np.random.default_rng(0), "test")
    speakers = {
        "base": lambda b: [CAPTIONS[i % len(CAPTIONS)] for i in range(len(b))],
        "oracle": lambda b: oracle_speaker(game, b)[0],
    }
    return play_table(game, boards, speakers, people_views(game))


@pytest.fixture
def server(table, tmp_path):
    turns = TurnStore(tmp_path / "play.db")
    with running(create_play_app(table, turns)) as url:
        yield url, turns


def test_the_speaker_and_listener_roles_in_chromium(table, server):
    url, turns = server
    binary = browser_binary()
    caption = "a striped circle on the left."
    with Browser(binary, width=1100, height=900) as browser:  # a researcher plays the speaker
        assert browser.open(f"{url}/speaker?board=2").errors == []
        browser.type("#caption", caption)
        assert browser.click("#say").errors == []
        expected = table.game.play([caption], table.boards[2])
        shown = browser.evaluate("document.getElementById('reward').textContent")
        assert f"Reward {float(expected.reward[0]):+.3f}" in shown
        rows = browser.evaluate(
            "[...document.querySelectorAll('#listeners tr')].slice(1).map(r => r.lastElementChild.textContent)"
        )
        assert rows == [f"picture {int(c[0]) + 1}" for c in expected.choices.values()]
        assert browser.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        score = browser.evaluate("document.getElementById('score').textContent")
        assert f"Speaker: {float(expected.reward[0]):.2f} reward" in score and "of 1 won" in score
    with Browser(binary, width=1100, height=900) as browser:  # another person reads that caption
        browser.open(f"{url}/listener?speaker=person&view=grayscale")
        assert browser.evaluate("document.getElementById('caption').textContent") == caption
        browser.click("#pick-1")
        verdict = browser.evaluate("document.getElementById('verdict').textContent")
        target = int(table.boards.target[2])
        assert ("not the target" not in verdict) == (target == 1)
        assert "Listener: " + ("1" if target == 1 else "0") + " of 1 right" in browser.evaluate(
            "document.getElementById('score').textContent"
        )
        browser.click("#next")  # the next board, the same speaker and view
    kinds = [(t.role, t.caption, t.pick) for t in (turns.get(i) for i in (1, 2))]
    assert kinds == [("speaker", caption, None), ("listener", caption, 1)]


def test_a_view_is_the_perception_of_its_listener(table, server):
    url, _ = server
    for view, listener in (("as-gray", "gray"), ("grayscale", "gray"), ("as-full", "full")):
        status, _ = get(f"{url}/listener?speaker=base&view={view}&board=1")
        assert status == 200
        with urllib.request.urlopen(f"{url}/img/1/3.png?view={view}") as response:
            served = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
        expected = perceived(table.game.listeners[listener].perception, table.boards.images[1, 3][None])[0]
        assert np.array_equal(served, expected), view


def test_bad_requests_get_a_4xx_and_one_line(server):
    url, turns = server
    for path, status, words in [
        ("/listener?board=99", 404, "board=99 does not exist"),
        ("/listener?view=xray", 422, "view='xray' is not a perception"),
        ("/listener?speaker=nobody", 422, "speaker='nobody' is unknown"),
        ("/listener?board=x", 422, "board: Input should be a valid integer"),
        ("/listener/turn/7", 404, "turn 7 is not a listener turn"),
        ("/img/0/9.png", 404, "position=9 is not on the board"),
    ]:
        code, body = get(url + path)
        assert (code, words in refusal(body)) == (status, True), (path, body[-300:])
    for form, status, words in [
        ({"board": 0, "caption": "   "}, 422, "write a few words"),
        ({"board": 0, "caption": "a" * 201}, 422, "keep it under 200"),
        ({"board": 0, "caption": "a red\x00 object"}, 422, "control characters"),
        ({"board": 7, "caption": "a red object"}, 404, "board=7 does not exist"),
    ]:
        code, _, body = post(url, "/speaker", form)
        assert (code, words in refusal(body)) == (status, True), (form, body[-300:])
    code, _, body = post(url, "/listener", {"board": 0, "speaker": "base", "view": "full", "pick": 4})
    assert code == 422 and "pick=4 is not on the board" in refusal(body)
    code, _, body = post(url, "/listener", {"board": 0, "speaker": "person", "view": "full", "pick": 0, "turn": 1})
    assert code == 422 and "person's caption" in refusal(body)
    assert get(f"{url}/listener?speaker=person")[1].count('id="none"') == 1  # no person has written a caption yet
    code, _, body = post(url, "/speaker", {"board": 1, "caption": "<script>alert(1)</script>"})
    assert code == 200 and "<script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert turns.score("nobody").captions == 0


def test_screenshots_of_each_role(table, tmp_path):
    browser_binary()
    paths = take_shots(table, TurnStore(tmp_path / "play.db"), tmp_path)
    assert [p.name for p in paths] == ["play_listener.png", "play_speaker.png"]
    for path in paths:
        shot = np.asarray(Image.open(path).convert("RGB"))
        assert shot.shape[1] == 1100 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50, path


@pytest.mark.slow
def test_play_command_writes_a_screenshot_of_each_role(warm_cache, tmp_path):
    browser_binary()
    result = subprocess.run(
        [sys.executable, "-m", "listener_sub", "play", *TINY, "boards=2", f"shots={tmp_path}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("play_listener.png", "play_speaker.png"):
        shot = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert shot.shape[1] == 1100 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50, name
    assert (tmp_path / "run" / "play.db").is_file()


def test_a_folder_of_plain_images_is_played_without_an_oracle(tmp_path):
    """Any data the game can use: a plain image folder (no scene attributes) -- no oracle speaker, no attention
    checks for a study, the rest as on the embedded world."""
    from folders import plain_folder
    from tiny_game import COLORBLIND

    from listener_sub.data import DataConfig, DataSource
    from listener_sub.game import create_game
    from listener_sub.perception import Full, Grayscale
    from listener_sub.study.materials import prepare_study
    from listener_sub.study.protocol import Condition, StudyConfig

    plain_folder(tmp_path / "photos" / "test", 12)
    source = DataSource(DataConfig(kind="folder", root=str(tmp_path / "photos")))
    game = create_game(source, tiny_listeners(), COLORBLIND, pool_size=None)
    boards = game.sample(2, np.random.default_rng(0), "test")
    table = play_table(game, boards, {"base": lambda b: ["a red object."] * len(b)}, people_views(game))
    with running(create_play_app(table, TurnStore(tmp_path / "play.db"))) as url:
        assert get(f"{url}/listener?speaker=base&board=1")[0] == 200
        status, _, body = post(url, "/speaker", {"board": 1, "caption": "a blue object."})
        assert status == 200 and "oracle" not in body and "a blue object." in body
    config = StudyConfig(conditions=[Condition("base", "full"), Condition("base", "grayscale")], boards=2)
    with pytest.raises(ValueError, match="has no scene attributes; set study.attention_checks=0"):
        speakers = {"base": lambda b: ["a red object."] * len(b)}
        prepare_study(config, game, speakers, {"full": Full(), "grayscale": Grayscale()}, {}, "test")

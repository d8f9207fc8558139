"""`listener-sub inspect`: the report of a tiny train run, HTML escaping, the text table, the board picture
(format=png), and the page in headless Chromium."""

import copy
import io
import os
import re
import subprocess
import sys
from html import escape
from pathlib import Path

import numpy as np
import pytest
from browser import REQUIRE, Browser, find_browser
from hydra import compose, initialize_config_module
from PIL import Image
from rich.console import Console
from test_rl import TINY
from tiny_game import one_thread  # noqa: F401 (an autouse fixture: one torch thread)

from listener_sub.commands.inspect import OWN_KEYS
from listener_sub.report.figure import CHIPS, Layout
from listener_sub.report.gather import gather
from listener_sub.report.page import render_html
from listener_sub.report.plots import SPEAKER_COLORS
from listener_sub.report.text import boards_table

BOARDS = 3
PAYLOAD = "<script>alert(1)</script>"


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "listener_sub", *args], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_models):
    """A finished tiny train run (2 RL steps, a checkpoint each); its models in the session's cache, named in its
    config."""
    root = tmp_path_factory.mktemp("inspect")
    result = cli(
        "train",
        *TINY,
        f"cache_dir={tiny_models}",
        f"hydra.run.dir={root / 'run'}",
        "trainer.steps=2",
        "trainer.save_every=1",
    )
    assert result.returncode == 0, result.stderr
    return root / "run"


@pytest.fixture(scope="module")
def page(run_dir, tmp_path_factory):
    """report.html written by the command, and what it printed."""
    out = tmp_path_factory.mktemp("report")
    result = cli("inspect", f"run={run_dir}", f"boards={BOARDS}", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    return out / "report.html", result.stdout


@pytest.fixture(scope="module")
def report(run_dir):
    """The same run gathered in this process."""
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose("inspect", overrides=[f"run={run_dir}"])
    return gather(cfg, run_dir, BOARDS, OWN_KEYS, overrides=[])


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; skipped only where none is installed and none is required."""
    binary = find_browser()
    if binary is None:
        if os.environ.get(REQUIRE):
            pytest.fail(
                f"{REQUIRE} is set but no chromium is on PATH (.ci/run installs it with apt-get install chromium)"
            )
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    with Browser(binary, width=1280, height=900) as browser:
        yield browser


def test_report_is_one_self_contained_page(page):
    path, stdout = page
    assert f"wrote {path}" in stdout
    text = path.read_text()
    assert len(re.findall(r'<article class="board (?:won|lost)"', text)) == BOARDS
    # each board: 4 images as each of the two listeners (full, gray) sees them, inline PNGs
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == BOARDS * 4 * 2
    assert len(re.findall(r'src="data:image/svg\+xml;base64,', text)) == 2  # mention chart, training curves
    assert not re.search(r"""(?:src|href)=["']?(?!data:)[a-z]+:""", text)  # nothing fetched from anywhere
    assert "<script" not in text.lower() and "Content-Security-Policy" in text
    for heading in ("Summary", "fixed_oracle_gap", "mention/color", "Boards", "base", "trained", "oracle"):
        assert heading in text


def test_page_in_chromium(page, browser, tmp_path):
    path, _ = page
    run = browser.load(path)
    assert run.errors == [] and run.dialogs == []
    assert browser.evaluate("document.querySelectorAll('article.board').length") == BOARDS
    assert browser.evaluate("document.getElementById('board-count').textContent") == str(BOARDS)
    assert browser.evaluate("[...document.images].every(img => img.complete && img.naturalWidth > 0)")
    assert browser.evaluate("document.images.length") == BOARDS * 4 * 2 + 2
    visible = "[...document.querySelectorAll('article.board')].filter(a => a.offsetParent !== null).length"
    won = browser.evaluate("document.querySelectorAll('article.board.won').length")
    for key, expected in (("won", won), ("lost", BOARDS - won), ("all", BOARDS)):
        browser.evaluate(f"document.querySelector('label[for=show-{key}]').click()")
        assert browser.evaluate(visible) == expected, key
    shot = np.asarray(Image.open(browser.screenshot(tmp_path / "report.png")).convert("RGB"))
    assert shot.shape[0] > 900 and shot.shape[1] >= 1200  # the whole page, taller than the window
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 100  # not blank


def tagged(text: str) -> str:
    """A string from the data with markup in it that names where it came from."""
    return f'{text}<x-payload title="{text}">\'&'


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the curves are keyed by the renamed listeners
def test_every_string_from_the_data_is_escaped_in_the_page(report):
    """Without a browser: captions, descriptions, listener, perception, attribute and metric names, the oracle's
    subset, the data's name, the reward and the paths all carry markup; none of it reaches the page as markup."""
    report = copy.deepcopy(report)
    shown = [
        *report.roles,
        *report.perceptions.values(),
        report.data,
        report.reward,
        str(report.run),
        "ckpt",
        "board 0",
        "trained 0",
        "base 2",
    ]
    names = {name: tagged(name) for name in report.roles}
    renamed = lambda mapping: {names.get(k, k): v for k, v in mapping.items()}  # noqa: E731
    report.roles, report.perceptions = (
        renamed(report.roles),
        {names[k]: tagged(v) for k, v in report.perceptions.items()},
    )
    report.attributes = tuple(tagged(a) for a in report.attributes)
    report.mention = {speaker: {tagged(a): v for a, v in rates.items()} for speaker, rates in report.mention.items()}
    report.data, report.reward, report.run, report.checkpoint = (
        tagged(report.data),
        tagged(report.reward),
        Path(tagged(str(report.run))),
        Path(tagged("ckpt")),
    )
    for key in ("before", "after"):
        report.summary[key] = {tagged(k): v for k, v in report.summary[key].items()}
    report.summary["fixed_oracle_subset"] = [tagged(a) for a in report.summary.get("fixed_oracle_subset", ["color"])]
    for i, board in enumerate(report.boards):
        board.description, board.views = tagged(f"board {i}"), renamed(board.views)
        board.oracle_subset = tuple(tagged(a) for a in board.oracle_subset)
        for speaker, play in board.plays.items():
            play.caption = tagged(f"{speaker} {i}")
            play.probs, play.picks, play.correct = renamed(play.probs), renamed(play.picks), renamed(play.correct)
    text = render_html(report)
    assert "<x-payload" not in text and text.count("&lt;x-payload title=&quot;") > 20
    for original in shown:
        assert escape(tagged(original)) in text, original


def test_injected_caption_shows_as_text_and_runs_nothing(report, browser, tmp_path):
    board = report.boards[0]
    board.plays["trained"].caption = PAYLOAD
    board.description = f'{PAYLOAD}<img src=x onerror="alert(2)">'
    text = render_html(report)
    assert PAYLOAD not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    path = tmp_path / "report.html"
    path.write_text(text)
    run = browser.load(path)
    assert run.dialogs == [] and run.errors == []
    assert browser.evaluate("document.scripts.length") == 0
    trained_caption = "document.querySelector('#board-1 table.plays tbody tr:nth-child(2) td.caption').textContent"
    assert browser.evaluate(trained_caption).startswith(PAYLOAD)
    assert PAYLOAD in browser.evaluate("document.querySelector('#board-1 h3').textContent")


def test_text_format_is_a_table_of_every_board(report):
    report.boards[1].plays["base"].caption = "[bold red]markup[/bold red]"
    console = Console(file=io.StringIO(), width=400, record=True)
    console.print(boards_table(report))
    text = console.export_text()
    assert f"{BOARDS} boards of synthetic test (seed 123)" in text
    assert "[bold red]markup[/bold red]" in text  # data is never read as rich markup
    for board in report.boards:
        assert board.description in text
        for speaker in report.speakers:
            assert board.plays[speaker].caption in text
    assert text.count(" won") + text.count(" lost") >= BOARDS * len(report.speakers)


@pytest.mark.slow
def test_text_format_command_prints_the_boards(run_dir, tmp_path):
    result = cli("inspect", f"run={run_dir}", f"boards={BOARDS}", "format=text", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert f"{BOARDS} boards of synthetic test" in result.stdout and "fixed_oracle_gap" in result.stdout
    assert not (tmp_path / "report.html").exists()


def test_png_format_draws_the_first_board_as_each_listener_sees_it(run_dir, report, tmp_path):
    """board.png: the picture's size is its layout's; in each listener's row, each image is that listener's view of the
    board (the gray listener's without colour); under each listener's pick after each caption, that speaker's mark."""
    result = cli("inspect", f"run={run_dir}", f"boards={BOARDS}", "format=png", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "board.png"
    assert f"wrote {path}" in result.stdout and not (tmp_path / "report.html").exists()
    board = report.boards[0]  # the same run, boards and seed: the command's first board
    layout = Layout(len(board.views), len(board.views["full"]))
    image = Image.open(path)
    assert image.format == "PNG" and image.size == layout.size
    pixels = np.asarray(image.convert("RGB")).astype(int)
    for row, (name, views) in enumerate(board.views.items()):
        shown = []
        for position, view in enumerate(views):
            x0, y0, x1, y1 = layout.box(row, position)
            cell = pixels[y0:y1, x0:x1].astype(np.uint8)
            seen = np.asarray(Image.fromarray(cell).resize(view.shape[1::-1], Image.Resampling.BOX)).astype(int)
            assert np.abs(seen - view).mean() < 3, (name, position)
            shown.append(cell.astype(int))
            for speaker in ("base", "trained"):
                if board.plays[speaker].picks[name] == position:
                    under = pixels[y1 : y1 + CHIPS, x0:x1]
                    mark = np.array(Image.new("RGB", (1, 1), SPEAKER_COLORS[speaker]).getpixel((0, 0)))
                    assert (np.abs(under - mark).max(-1) < 4).sum() > 50, (name, speaker, position)
        spread = max(int((cell.max(-1) - cell.min(-1)).max()) for cell in shown)  # colour in the row's images
        assert spread <= 2 if report.perceptions[name] == "grayscale" else spread > 40, (name, spread)

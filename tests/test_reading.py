"""One reading of a board everywhere: positions count from 0 and a pick reports the listener's P(target | caption),
in the env's transcripts, `rollout`'s line and `inspect`'s report (HTML and text), with the same numbers for the
same board."""

import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from tiny_game import one_thread, tiny_game, tiny_listeners, word_tokenizer  # noqa: F401 (one_thread: an autouse fixture)

from listener_sub.commands.rollout import transcript_line
from listener_sub.envs import caption_action, dixit_v0
from listener_sub.envs.render import transcript
from listener_sub.report.gather import BoardReport, Report, plays
from listener_sub.report.page import board_article
from listener_sub.report.text import boards_table

ROLES = {"full": "intended", "gray": "subtracted", "full_b": "player"}


@pytest.fixture(scope="module")
def played():
    """A finished parallel round (a fixed caption, each listener picking a different position) and its record."""
    tokenizer = word_tokenizer()
    env = dixit_v0.parallel_env(game=tiny_game(tiny_listeners()), tokenizer=tokenizer, split="test")
    env.reset(seed=7)
    env.step({"speaker_0": caption_action(tokenizer, "a red object .", 16)})
    env.step({agent: i for i, agent in enumerate(env.acting_agents)})
    return env.round, {"episode": 0, **env.round.record()}


def report_of(round_) -> Report:
    """The round as `inspect`'s report would show it: one board, its caption as the trained speaker's."""
    (play,) = plays([round_.caption], round_.outcome, round_.game, round_.boards)
    views = {name: round_.view(agent) for agent, name in round_.listeners.items()}
    board = BoardReport(int(round_.boards.target[0]), "the target", views, {"trained": play}, ())
    return Report(
        run=Path("run"),
        checkpoint=Path("ckpt"),
        data="synthetic test",
        speakers=("trained",),
        split="test",
        seed=7,
        roles=ROLES,
        perceptions={"full": "full", "gray": "grayscale", "full_b": "full"},
        reward="prob of full - 1.0 x prob of gray",
        summary={},
        curves=[],
        attributes=(),
        mention={},
        mention_boards=0,
        boards=[board],
    )


PICK = r"(\d) (?:right|wrong|✓|✗) p\(target\)=(\d\.\d\d)"  # position, verdict, P(target)


def test_env_rollout_and_report_read_a_board_alike(played):
    round_, record = played
    target = record["target"]
    expected = [
        (str(v["choice"]), f"{v['probs'][target]:.2f}") for v in record["listeners"].values()
    ]  # positions from 0 and P(target), per listener in order
    assert len({p for p, _ in expected}) == 3 and any(p != str(target) for p, _ in expected)
    assert re.findall(PICK, transcript_line(record)) == expected
    assert re.findall(PICK, transcript(round_)) == expected

    report = report_of(round_)
    html = board_article(report, 1, report.boards[0])
    assert f'<th class="is-target">{target} target</th>' in html and f"target: position {target}," in html
    assert re.findall(PICK, html) == expected

    console = Console(file=io.StringIO(), width=400, record=True)
    console.print(boards_table(report))
    text = console.export_text()
    assert f"{target}: the target" in text and "pick: position (from 0" in text
    assert re.findall(PICK, text) == expected

"""The report's per-board information as a rich table for the terminal (captions as plain text, never markup)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from listener_sub.report.gather import Report


def boards_table(report: Report) -> Table:
    """One row per board and speaker: caption, each listener's pick (position from 0) and P(target), reward, won /
    lost."""
    won = sum(board.won for board in report.boards)
    table = Table(
        title=f"{len(report.boards)} boards of {report.data} (seed {report.seed}): "
        f"trained won {won}, lost {len(report.boards) - won}",
        caption="pick: position (from 0, as the env and rollout count), ✓ right / ✗ wrong, the listener's "
        "P(target | caption); won: intended right, subtracted wrong",
    )
    table.add_column("board", justify="right")
    table.add_column("target")
    table.add_column("speaker")
    table.add_column("caption")
    for name, role in report.roles.items():
        table.add_column(Text(f"{name} ({role})"))
    table.add_column("reward", justify="right")
    table.add_column("won")
    for index, board in enumerate(report.boards, start=1):
        for row, speaker in enumerate(report.speakers):
            play = board.plays[speaker]
            picks = [
                Text(
                    f"{play.picks[name]} {'✓' if play.correct[name] else '✗'} "
                    f"p(target)={play.probs[name][board.target]:.2f}"
                )
                for name in report.roles
            ]
            first = row == 0
            table.add_row(
                str(index) if first else "",
                Text(f"{board.target}: {board.description}") if first else Text(""),
                speaker,
                Text(play.caption + (" (untruthful)" if play.truthful is False else "")),
                *picks,
                f"{play.reward:+.3f}",
                Text("won", style="green") if play.won else Text("lost", style="red"),
                end_section=row == len(report.speakers) - 1,
            )
    return table

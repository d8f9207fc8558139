"""The report as one self-contained HTML page: images and plots inline as data URIs, no script, no external asset.

Every string that comes from data (captions, descriptions, names, paths) goes through `html.escape`; the page's
Content-Security-Policy allows no script and no fetch at all, and the won / lost filter is pure CSS.
"""

from __future__ import annotations

import base64
import io
from html import escape

import numpy as np
from PIL import Image

from listener_sub.report.gather import BoardReport, Play, Report
from listener_sub.report.plots import SPEAKER_COLORS, mention_chart, training_curves
from listener_sub.report.tables import metric_rows

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
TILE = 72  # displayed pixels per board image
SPEAKER_HELP = {
    "base": "the captioning adapter (before RL), greedy",
    "trained": "the run's latest checkpoint, greedy",
    "oracle": "canonical caption of the attribute subset best for this board",
}
CSS = """
body { font: 14px/1.4 system-ui, sans-serif; color: #1d2228; background: #f4f5f7; margin: 0; }
header, main { max-width: 1240px; margin: 0 auto; padding: 0 20px; }
h1 { font-size: 22px; margin: 18px 0 6px; }
h2 { font-size: 18px; margin: 22px 0 8px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
dl.meta dt { color: #5b6470; }
dl.meta dd { margin: 0; }
code { font-size: 12px; word-break: break-all; }
.summary-row { display: flex; gap: 20px; align-items: flex-start; flex-wrap: wrap; }
.summary-row figure { flex: 1 1 480px; min-width: 0; }
.summary-row figure img { width: 100%; }
figure { margin: 0; background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 8px; }
figure img { display: block; max-width: 100%; height: auto; }
figure.wide { margin-top: 16px; }
figure.wide img { width: 100%; }
figcaption { font-size: 12px; color: #5b6470; margin-top: 4px; }
table.metrics { border-collapse: collapse; background: #fff; border: 1px solid #dde1e6; font-size: 12px; }
table.metrics caption { text-align: left; font-size: 12px; color: #5b6470; padding-bottom: 4px; }
table.metrics th, table.metrics td { padding: 2px 8px; border-bottom: 1px solid #eef0f3; }
table.metrics td { text-align: right; font-variant-numeric: tabular-nums; }
table.metrics th { text-align: left; font-weight: normal; }
table.metrics thead th, table.metrics tfoot th { font-weight: 600; }
.filter { position: absolute; opacity: 0; }
.filter + label { display: inline-block; padding: 3px 12px; margin: 0 4px 10px 0; border: 1px solid #b9c0c8; \
border-radius: 14px; cursor: pointer; background: #fff; }
.filter:checked + label { background: #1d2228; color: #fff; border-color: #1d2228; }
.filter:focus-visible + label { outline: 2px solid #2b6cd4; }
#show-won:checked ~ .boards .board:not(.won) { display: none; }
#show-lost:checked ~ .boards .board.won { display: none; }
.legend { font-size: 12px; color: #5b6470; margin: 0 0 10px; }
.board { background: #fff; border: 1px solid #dde1e6; border-left: 5px solid #c9372c; border-radius: 6px; \
padding: 8px 12px 10px; margin-bottom: 12px; }
.board.won { border-left-color: #2e9d5b; }
.board h3 { font-size: 15px; margin: 0 0 6px; }
.board .target { font-weight: normal; color: #5b6470; font-size: 13px; }
.badge { font-size: 11px; padding: 1px 8px; border-radius: 9px; color: #fff; background: #c9372c; vertical-align: 1px; }
.board.won .badge { background: #2e9d5b; }
.board-body { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
table.views { border-collapse: separate; border-spacing: 4px 2px; table-layout: fixed; }
table.views col.label { width: 84px; }
table.views th { font-size: 11px; font-weight: normal; color: #5b6470; text-align: center; }
table.views th[scope=row] { text-align: right; padding-right: 4px; }
table.views th[scope=row] b { display: block; color: #1d2228; font-size: 12px; }
table.views td { padding: 0; vertical-align: top; }
table.views img { display: block; image-rendering: pixelated; border: 3px solid transparent; }
table.views td.is-target img { border-color: #2e9d5b; }
th.is-target { color: #2e9d5b !important; font-weight: 600 !important; }
.marks { height: 16px; display: flex; gap: 2px; justify-content: center; }
.mark { display: inline-block; font-size: 10px; line-height: 14px; width: 14px; text-align: center; \
border-radius: 3px; color: #fff; font-weight: 600; }
table.plays { border-collapse: collapse; flex: 1 1 560px; table-layout: fixed; font-size: 13px; }
table.plays col.speaker { width: 72px; }
table.plays col.listener { width: 142px; }
table.plays col.reward { width: 64px; }
table.plays th, table.plays td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eef0f3; \
vertical-align: top; }
table.plays thead th { font-size: 11px; color: #5b6470; font-weight: normal; }
table.plays td.caption { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; \
word-break: break-word; }
table.plays td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.good { background: #e6f4ec; }
td.bad { background: #fbe9e7; }
.note { display: block; font-family: system-ui, sans-serif; font-size: 11px; color: #5b6470; }
.note.warn { color: #c9372c; }
tr.row-won th { box-shadow: inset 3px 0 #2e9d5b; }
"""


def data_uri(mime: str, payload: bytes) -> str:
    """payload inline as a base64 data URI."""
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def png(image: np.ndarray) -> str:
    """(H, W, 3) uint8 image as a PNG data URI."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", optimize=True)
    return data_uri("image/png", out.getvalue())


def number(value: float, signed: bool = False) -> str:
    """A metric value with three decimals (a sign with `signed`)."""
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def header(report: Report) -> str:
    """Run, checkpoint, reward, listeners and board counts."""
    won = sum(board.won for board in report.boards)
    listeners = " · ".join(
        f"<b>{escape(name)}</b> ({escape(report.perceptions[name])}, {escape(role)})"
        for name, role in report.roles.items()
    )
    return f"""<header>
<h1>listener-sub inspect</h1>
<dl class="meta">
<dt>run</dt><dd><code>{escape(str(report.run))}</code></dd>
<dt>trained speaker</dt><dd><code>{escape(str(report.checkpoint))}</code></dd>
<dt>reward</dt><dd>{escape(report.reward)}</dd>
<dt>listeners</dt><dd>{listeners}</dd>
<dt>boards</dt><dd><span id="board-count">{len(report.boards)}</span> \
boards of {escape(report.data)} (seed {report.seed}):
the trained speaker won {won}, lost {len(report.boards) - won}</dd>
</dl>
</header>"""


def metrics_table(report: Report) -> str:
    """summary.json's before / after metrics (greedy and sample/) and the oracle gaps."""
    summary = report.summary
    names, rows = metric_rows({"before": summary["before"], "after": summary["after"]})
    head = "".join(f"<th>{escape(name)}</th>" for name in names)
    body = "".join(
        f"<tr><th>{escape(key)}</th>{''.join(f'<td>{number(v)}</td>' for v in values)}</tr>" for key, values in rows
    )
    foot = ""
    if "fixed_oracle_gap" in summary:
        subset = "+".join(str(a) for a in summary.get("fixed_oracle_subset", []))
        foot += f"<tr><th>fixed_oracle_gap ({escape(subset)})</th><td>{number(summary['fixed_oracle_gap'])}</td></tr>"
    if "oracle_gap" in summary:
        foot += f"<tr><th>oracle_gap</th><td>{number(summary['oracle_gap'])}</td></tr>"
    return (
        f'<table class="metrics"><caption>summary.json: {report.mention_boards} held-out boards, '
        "before and after training"
        f"</caption><thead><tr><th>metric</th>{head}</tr></thead><tbody>{body}</tbody><tfoot>{foot}</tfoot></table>"
    )


def summary_section(report: Report) -> str:
    """The metric table, the mention chart and the training curves."""
    mention = data_uri("image/svg+xml", mention_chart(report.mention, report.attributes, report.mention_boards))
    oracle = (
        "; oracle: per board the canonical caption of the attribute subset with the best reward, "
        f"on the same {report.mention_boards} boards"
        if "oracle" in report.mention
        else ""
    )
    curves = data_uri("image/svg+xml", training_curves(report.curves, list(report.roles), report.attributes))
    return f"""<section id="summary">
<h2>Summary</h2>
<div class="summary-row">
{metrics_table(report)}
<figure><img alt="mention rate per attribute: {escape(", ".join(report.mention))}" src="{mention}">
<figcaption>base and trained: greedy captions (summary.json){oracle}.</figcaption></figure>
</div>
<figure class="wide"><img alt="training curves" src="{curves}">
<figcaption>metrics.jsonl. Faint lines: train/ metrics of each step's sampled captions, solid: their moving average;
markers: eval/ metrics of greedy captions on the held-out boards.</figcaption></figure>
</section>"""


def views_table(report: Report, index: int, board: BoardReport) -> str:
    """The board's images as each listener sees them, the target framed, each speaker's pick marked."""
    n_images = len(next(iter(board.views.values())))
    head = "".join(
        f'<th class="is-target">{i} target</th>' if i == board.target else f"<th>{i}</th>" for i in range(n_images)
    )
    rows = []
    for name, images in board.views.items():
        cells = []
        for i, image in enumerate(images):
            marks = "".join(
                f'<span class="mark" style="background:{SPEAKER_COLORS[speaker]}" '
                f'title="{speaker}: {escape(name)} picks this">{speaker[0].upper()}</span>'
                for speaker, play in board.plays.items()
                if play.picks[name] == i
            )
            target = ' class="is-target"' if i == board.target else ""
            alt = f"board {index}, position {i} as {name} sees it"
            cells.append(
                f'<td{target}><img src="{png(image)}" width="{TILE}" height="{TILE}" alt="{escape(alt)}">'
                f'<div class="marks">{marks}</div></td>'
            )
        label = (
            f'<th scope="row"><b>{escape(name)}</b>{escape(report.perceptions[name])}'
            f"<br>{escape(report.roles[name])}</th>"
        )
        rows.append(f"<tr>{label}{''.join(cells)}</tr>")
    cols = f'<col class="label">{"<col>" * n_images}'
    return f'<table class="views">{cols}<thead><tr><th></th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def pick_cell(report: Report, name: str, play: Play, target: int) -> str:
    """A listener's pick under a caption: position (from 0), ✓ right / ✗ wrong, its P(target | caption), as the env's
    transcripts read it; green when it helps the speaker."""
    pick, probs = play.picks[name], play.probs[name]
    helps = play.correct[name] if report.roles[name] == "intended" else not play.correct[name]
    style = "" if report.roles[name] == "player" else f' class="{"good" if helps else "bad"}"'
    return f"<td{style}>{pick} {'✓' if play.correct[name] else '✗'} p(target)={probs[target]:.2f}</td>"


def plays_table(report: Report, board: BoardReport) -> str:
    """Per speaker its caption, every listener's pick and probability, and the reward."""
    head = "".join(f"<th>{escape(name)} ({escape(report.roles[name])})</th>" for name in report.roles)
    rows = []
    for speaker in report.speakers:
        play = board.plays[speaker]
        notes = '<span class="note warn">untruthful</span>' if play.truthful is False else ""
        if speaker == "oracle":
            notes += f'<span class="note">names: {escape(", ".join(board.oracle_subset))}</span>'
        picks = "".join(pick_cell(report, name, play, board.target) for name in report.roles)
        won = ' class="row-won"' if play.won else ""
        rows.append(
            f'<tr{won}><th title="{escape(SPEAKER_HELP[speaker])}">{speaker}</th>'
            f'<td class="caption">{escape(play.caption)}{notes}</td>'
            f'{picks}<td class="num">{number(play.reward, signed=True)}</td></tr>'
        )
    cols = '<col class="speaker"><col>' + '<col class="listener">' * len(report.roles) + '<col class="reward">'
    return (
        f'<table class="plays">{cols}<thead><tr><th>speaker</th><th>caption</th>{head}<th>reward</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def board_article(report: Report, index: int, board: BoardReport) -> str:
    """One board: the views and the three speakers' plays."""
    state = "won" if board.won else "lost"
    return f"""<article class="board {state}" id="board-{index}">
<h3>Board {index} <span class="badge">{state}</span> <span class="target">target: position {board.target},
{escape(board.description)}</span></h3>
<div class="board-body">{views_table(report, index, board)}{plays_table(report, board)}</div>
</article>"""


def boards_section(report: Report) -> str:
    """The won / lost filter (radio buttons and CSS) and every board."""
    won = sum(board.won for board in report.boards)
    counts = {"all": len(report.boards), "won": won, "lost": len(report.boards) - won}
    filters = "".join(
        f'<input class="filter" type="radio" name="show" id="show-{key}"{" checked" if key == "all" else ""}>'
        f'<label for="show-{key}">{key} ({count})</label>'
        for key, count in counts.items()
    )
    marks = " ".join(
        f'<span class="mark" style="background:{SPEAKER_COLORS[s]}">{s[0].upper()}</span> {s}' for s in report.speakers
    )
    articles = "\n".join(board_article(report, i + 1, board) for i, board in enumerate(report.boards))
    return f"""<section id="boards">
<h2>Boards</h2>
{filters}
<p class="legend">won: the trained speaker's caption made every intended listener pick the target and every subtracted
listener miss it. Each row of images is the board as that listener perceives it, by position from 0 (the env's
actions, rollouts.jsonl); the target is framed green; letters mark the image each speaker's caption made that listener
pick ({marks}). Pick cells: position, ✓ right / ✗ wrong, the listener's P(target | caption) (as rollout's transcripts);
green when it is what the speaker wants (intended right, subtracted wrong). A green bar marks each speaker whose caption
won the board.</p>
<div class="boards">
{articles}
</div>
</section>"""


def render_html(report: Report) -> str:
    """The whole report as one HTML document."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>listener-sub inspect: {escape(str(report.run))}</title>
<style>{CSS}</style>
</head>
<body>
{header(report)}
<main>
{summary_section(report)}
{boards_section(report)}
</main>
</body>
</html>
"""

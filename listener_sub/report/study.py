"""The human listener study's report: from the stored answers, report.md (people's accuracy per condition, paired
differences, attention checks, the model listeners beside the people), report.png (the accuracy chart), the answers
as answers.csv and answers.jsonl, and report.json (the statistics, `listener_sub.study.stats.StudyStats`).

Every file is written atomically into the output folder; every number comes from `study_stats`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from listener_sub.files import atomic_path, to_plain, write_json  # noqa: E402
from listener_sub.report.plots import SERIES_COLORS  # noqa: E402
from listener_sub.report.results import save_png  # noqa: E402
from listener_sub.study.protocol import Answer  # noqa: E402
from listener_sub.study.stats import StudyStats, Times, study_stats  # noqa: E402

REPORT_MD = "report.md"
REPORT_PNG = "report.png"
REPORT_JSON = "report.json"
ANSWERS_CSV = "answers.csv"
ANSWERS_JSONL = "answers.jsonl"
MODEL_PICK = "model_pick/"  # prefix of the CSV columns of the model listeners' picks
MODEL_MARKERS = ["D", "^", "s", "v", "P", "X"]  # one per model listener in the chart, in order
LABEL_WIDTH = 14  # characters per line of a condition's label under its bar (long words stay whole)
BAR_WIDTH = 0.45  # of people's accuracy bar, in condition slots
MARKERS_SPAN = 0.3  # the strip right of each bar where the model listeners' markers stand, in condition slots


def write_study_report(
    answers: Sequence[Answer],
    conditions: Sequence[str],
    listeners: Mapping[str, str],
    out_dir: str | Path,
    title: str,
    n_images: int,
    resamples: int = 2000,
    seed: int = 0,
) -> StudyStats:
    """Write report.md, report.png, report.json, answers.csv and answers.jsonl into `out_dir` and return the
    statistics. conditions: the condition labels in config order; listeners: model listener -> a short description
    ("grayscale, subtracted"); n_images: images per board (chance is 1 / n_images)."""
    out = Path(out_dir)
    stats = study_stats(answers, conditions, resamples, seed)
    order = [name for name in listeners if name in stats.listeners]
    order += [name for name in stats.listeners if name not in listeners]  # listeners the caller did not describe
    with atomic_path(out / REPORT_MD) as tmp:
        tmp.write_text("\n".join(markdown(stats, order, listeners, title, n_images)) + "\n")
    accuracy_chart(stats, order, listeners, n_images, out / REPORT_PNG)
    write_json(out / REPORT_JSON, nan_to_none(to_plain(stats)))
    rows = [answer_row(a) for a in answers]
    with atomic_path(out / ANSWERS_JSONL) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with atomic_path(out / ANSWERS_CSV) as tmp:
        tmp.write_text(answers_csv(rows, order))
    return stats


def nan_to_none(obj: Any) -> Any:
    """Plain data with every NaN float replaced by None (JSON has no NaN; it is written as null)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {key: nan_to_none(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [nan_to_none(value) for value in obj]
    return obj


def answer_row(answer: Answer) -> dict[str, Any]:
    """Every field of an answer (model_picks as an object) and whether it is correct."""
    return {**dataclasses.asdict(answer), "correct": answer.correct}


def answers_csv(rows: Sequence[dict[str, Any]], listeners: Sequence[str]) -> str:
    """The answers as CSV: one row each, model_picks flattened into a `model_pick/<name>` column per model listener
    (the described ones first; empty where an answer has no pick of that listener)."""
    names = list(listeners) + sorted({name for row in rows for name in row["model_picks"]} - set(listeners))
    fields = [f.name for f in dataclasses.fields(Answer) if f.name != "model_picks"] + ["correct"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, [*fields, *(MODEL_PICK + name for name in names)], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        picks = {MODEL_PICK + name: pick for name, pick in row["model_picks"].items()}
        writer.writerow({**{key: row[key] for key in fields}, **picks})
    return buffer.getvalue()


def _num(value: float) -> str:
    """A number with 3 decimals ("-" for NaN)."""
    return "-" if math.isnan(value) else f"{value:.3f}"


def _signed(value: float) -> str:
    """A difference with its sign and 3 decimals ("-" for NaN)."""
    return "-" if math.isnan(value) else f"{value:+.3f}"


def _interval(lo: float, hi: float) -> str:
    """A 95% interval, "[0.250, 1.000]" ("-" for NaN)."""
    return "-" if math.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]"


def _named(name: str, listeners: Mapping[str, str]) -> str:
    """A model listener with its description, "gray (grayscale, subtracted)" (the name alone without one)."""
    return f"{name} ({listeners[name]})" if listeners.get(name) else name


def _seconds(ms: float) -> str:
    """Milliseconds as seconds with 1 decimal ("-" for NaN)."""
    return "-" if math.isnan(ms) else f"{ms / 1000:.1f}"


def _quartiles(times: Times) -> str:
    """The quartiles in seconds, "2.8 - 6.2" ("-" without answers)."""
    return "-" if times.n == 0 else f"{_seconds(times.q25)} - {_seconds(times.q75)}"


def markdown(
    stats: StudyStats, order: Sequence[str], listeners: Mapping[str, str], title: str, n_images: int
) -> list[str]:
    """The lines of report.md."""
    checks = stats.checks
    n_checks = checks.answers if checks else 0
    lines = [
        f"# {title}",
        "",
        f"{stats.participants} participants, {stats.answers} answers to study boards ({n_checks} to attention "
        f"checks); {n_images} images per board, chance level {_num(1 / n_images)}.",
        "",
        "## People's accuracy",
        "",
        "| condition | accuracy | 95% interval | answers | participants | median time (s) | time quartiles (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in stats.conditions:
        lines.append(
            f"| {c.label} | {_num(c.accuracy)} | {_interval(c.lo, c.hi)} | {c.answers} | {c.participants} | "
            f"{_seconds(c.time.median)} | {_quartiles(c.time)} |"
        )
    t = stats.time
    lines += [
        "",
        f"Time per answer over all {t.n} board answers: median {_seconds(t.median)} s, quartiles {_quartiles(t)} s.",
        "",
        "## Paired differences",
        "",
    ]
    if stats.differences:
        lines += [
            "Per board: the accuracy under the first condition minus under the second (each over the participants "
            "who saw the board that way), averaged over the boards seen under both.",
            "",
            "| perception | conditions | difference | 95% interval | boards |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {d.perception} | {d.a} - {d.b} | {_signed(d.mean)} | {_interval(d.lo, d.hi)} | {d.boards} |"
            for d in stats.differences
        ]
    else:
        lines.append("No perception is studied under both compared speakers.")
    lines += ["", "## Attention checks", ""]
    if checks:
        lines.append(
            f"Pass rate {_num(checks.pass_rate)} over {checks.answers} check answers. Participants who passed all "
            f"their checks: {_num(checks.all_passed)} of the {checks.participants} who answered a check."
        )
    else:
        lines.append("No attention check was answered.")
    lines += ["", "## Model listeners beside people", ""]
    if order:
        lines += [
            "Each model listener on the same boards and captions as the people (one value per answer): its accuracy, "
            "and agreement, the share of the answers where the person picked what it picked.",
            "",
            "| model listener | condition | accuracy | 95% interval | agreement with people | answers |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for name in order:
            shown = _named(name, listeners)
            for c in stats.conditions:
                m = c.models[name]
                lines.append(
                    f"| {shown} | {c.label} | {_num(m.accuracy)} | {_interval(m.lo, m.hi)} | {_num(m.agreement)} | "
                    f"{m.answers} |"
                )
            lines.append(f"| {shown} | all board answers | | | {_num(stats.agreement[name])} | {stats.answers} |")
    else:
        lines.append("No answer holds a model listener's pick.")
    lines += [
        "",
        f"Intervals are bootstrap 95% percentile intervals ({stats.resamples} resamples, seed {stats.seed}): "
        "people's accuracy resamples participants (all of a participant's answers together), paired differences "
        "resample boards, model listeners' accuracy resamples answers.",
        "",
        f"![people's accuracy per condition]({REPORT_PNG})",
    ]
    return lines


def accuracy_chart(
    stats: StudyStats, order: Sequence[str], listeners: Mapping[str, str], n_images: int, path: Path
) -> None:
    """Bars of people's accuracy per condition with the participants' 95% interval as error bars, each model
    listener's accuracy on the same answers as a marker beside the bar, and chance as a dashed line."""
    n = len(stats.conditions)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * n + 2.5), 4.0), dpi=120)
    x = np.arange(n)  # (C,) the centre of each condition's bar and markers, under its label
    bars = x - MARKERS_SPAN / 2  # (C,)
    means = np.array([c.accuracy for c in stats.conditions])  # (C,)
    lo_hi = np.array([[c.lo, c.hi] for c in stats.conditions]).reshape(n, 2)  # (C, 2)
    shown = ~np.isnan(means)  # conditions with answers
    err = np.abs(lo_hi.T - means)[:, shown]  # (2, C shown)
    ax.bar(bars[shown], means[shown], BAR_WIDTH, color="#8a8f98", label="people (95% interval)", yerr=err, capsize=4)
    for i in np.flatnonzero(~shown):
        ax.text(bars[i], 0.02, "no answers", ha="center", va="bottom", fontsize=8, rotation=90)
    step = MARKERS_SPAN / max(len(order), 1)  # the markers share a strip right of the bar
    for k, name in enumerate(order):
        acc = np.array([c.models[name].accuracy for c in stats.conditions])  # (C,)
        ax.scatter(
            bars + BAR_WIDTH / 2 + step * (k + 0.5),
            acc,
            marker=MODEL_MARKERS[k % len(MODEL_MARKERS)],
            s=36,
            color=SERIES_COLORS[k % len(SERIES_COLORS)],
            edgecolor="black",
            linewidth=0.5,
            zorder=3,
            label=_named(name, listeners),
        )
    ax.axhline(1 / n_images, color="black", lw=1, ls="--", label=f"chance (1/{n_images})")
    wrapped = [textwrap.fill(c.label, LABEL_WIDTH, break_long_words=False) for c in stats.conditions]
    ax.set_xticks(x, wrapped, fontsize=8)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(-0.03, 1.05)  # markers at 0 stay whole
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy per condition (markers: model listeners on the same answers)", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save_png(fig, path)

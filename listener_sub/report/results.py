"""docs/results.md from finished runs: each row's seeds as mean +- std, a bootstrap 95% interval over boards, plots.

A row is one setting run with several RL seeds (`<runs>/<row>/seed_<s>/`, each a `listener-sub train` run directory
with summary.json and eval_boards.npz); a transfer entry is a `listener-sub eval` of each of a row's runs on other data.
Every number in the document is read from those files here; nothing is typed by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from listener_sub.files import atomic_path  # noqa: E402
from listener_sub.metrics import bootstrap_interval  # noqa: E402
from listener_sub.perception import CONFUSABLE_DISTANCE  # noqa: E402
from listener_sub.report.gather import SUMMARY  # noqa: E402
from listener_sub.report.plots import place_labels  # noqa: E402
from listener_sub.runs import EVAL_BOARDS  # noqa: E402

TRUTHFUL_BAR = 0.95  # a speaker that beats the fixed oracle below this truthfulness is flagged
ZOOM_TRUTHFUL = 0.9  # the frontier plot's second panel: the points at least this truthful, where the bar is


@dataclass
class Run:
    """One finished run: its summary and the final evaluation's per-board values."""

    path: Path
    summary: dict
    boards: dict[str, np.ndarray]  # key -> (B,) values of the held-out boards

    @classmethod
    def read(cls, path: Path) -> Run:
        summary = json.loads((path / SUMMARY).read_text())
        with np.load(path / EVAL_BOARDS) as data:
            boards = {key: data[key] for key in data.files}
        return cls(path, summary, boards)

    @property
    def after(self) -> dict:
        return self.summary["after"]


def finished(path: Path, needs_boards: bool = True) -> bool:
    """Whether a run directory holds a finished run (a summary, and the per-board values when needed)."""
    return (path / SUMMARY).is_file() and (not needs_boards or (path / EVAL_BOARDS).is_file())


def seed_stats(afters: Sequence[Mapping[str, float]], key: str) -> tuple[float, float]:
    """Mean and standard deviation (ddof 1; 0 for one run) of a metric over the runs' "after" metrics."""
    values = np.array([after[key] for after in afters], dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def board_interval(runs: Sequence[Run], key: str, resamples: int) -> tuple[float, float]:
    """Bootstrap 95% interval over boards of the seeds' mean: each board's value averaged over the runs first (every
    run of a row plays the same held-out boards)."""
    stacked = np.stack([run.boards[key] for run in runs])  # (S, B)
    return bootstrap_interval(stacked.mean(0), resamples)


def _stats(row: RowResult, *keys: str) -> list[str]:
    """mean +- std over the row's seeds of each metric."""
    return [_pm(*row.stat(key)) for key in keys]


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} +- {std:.3f}"


def _interval(lo_hi: tuple[float, float]) -> str:
    return f"[{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"


def _listeners(runs: Sequence[Run], side: str) -> str:
    """`name acc` of each intended or subtracted listener, mean over the runs."""
    names = runs[0].summary["config"]["reward"][side]
    return ", ".join(f"{name} {seed_stats([run.after for run in runs], f'acc/{name}')[0]:.3f}" for name in names) or "-"


@dataclass
class RowResult:
    """The statistics of one row, as the document shows them."""

    name: str
    runs: list[Run]
    resamples: int

    def stat(self, key: str) -> tuple[float, float]:
        return seed_stats([run.after for run in self.runs], key)

    def interval(self, key: str) -> tuple[float, float]:
        return board_interval(self.runs, key, self.resamples)

    @property
    def oracle(self) -> tuple[float, str]:
        """The best fixed-subset oracle's gap on the same boards and its subset (the same listeners in every seed)."""
        first = self.runs[0].summary
        return float(first["fixed_oracle_gap"]), "+".join(first["fixed_oracle_subset"])

    def finding(self, truthful_setting: RowResult | None = None) -> str:
        """What the document must say of the row: a gap past the oracle with untruthful captions is flagged; with
        captions below the truthful bar, the setting named to keep them truthful (`truthful_setting`, another row) is
        shown beside."""
        gap, truthful = self.stat("gap")[0], self.stat("truthful")[0]
        oracle, subset = self.oracle
        if gap > oracle and truthful < TRUTHFUL_BAR:
            text = (
                f"beats the best fixed-subset oracle ({oracle:.3f}, {subset}) "
                f"with truthful {truthful:.3f} < {TRUTHFUL_BAR}: the gain comes from untruthful captions"
            )
        elif gap > oracle:
            text = (
                f"beats the best fixed-subset oracle ({oracle:.3f}, {subset}) with truthful captions ({truthful:.3f})"
            )
        else:
            text = (
                f"{gap / oracle:.2f}x the best fixed-subset oracle ({oracle:.3f}, {subset})"
                if oracle > 0
                else f"fixed-subset oracle {oracle:.3f}"
            )
            text += f", truthful {truthful:.3f} < {TRUTHFUL_BAR}" if truthful < TRUTHFUL_BAR else ""
        if truthful < TRUTHFUL_BAR and truthful_setting is not None:
            kept = truthful_setting.stat("truthful")[0]
            verdict = (
                f"keeps truthful >= {TRUTHFUL_BAR}"
                if kept >= TRUTHFUL_BAR
                else f"does not reach truthful {TRUTHFUL_BAR} either"
            )
            text += f"; `{truthful_setting.name}` {verdict} ({kept:.3f}) with gap {truthful_setting.stat('gap')[0]:.3f}"
        return text


EXPERIMENT_COLUMNS = (
    "row",
    "seeds",
    "gap (mean +- std over seeds)",
    "gap 95% CI (boards)",
    "prob_gap",
    "prob_gap 95% CI",
    "gap before RL",
    "intended acc",
    "subtracted acc",
    "mention/color",
    "mention/shape",
    "truthful",
    "grammatical",
    "kl",
    "sample/gap",
    "sample/truthful",
)


def experiment_table(rows: Sequence[RowResult]) -> list[str]:
    """Markdown lines: one row per setting, after RL (greedy captions unless `sample/`)."""
    lines = ["| " + " | ".join(EXPERIMENT_COLUMNS) + " |", "|" + " --- |" * len(EXPERIMENT_COLUMNS)]
    for row in rows:
        before = np.mean([run.summary["before"]["gap"] for run in row.runs])
        cells = [
            f"`{row.name}`",
            str(len(row.runs)),
            _pm(*row.stat("gap")),
            _interval(row.interval("gap")),
            _pm(*row.stat("prob_gap")),
            _interval(row.interval("prob_gap")),
            f"{before:.3f}",
            _listeners(row.runs, "intended"),
            _listeners(row.runs, "subtracted"),
            *_stats(row, "mention/color", "mention/shape", "truthful", "grammatical", "kl", "sample/gap"),
            _pm(*row.stat("sample/truthful")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


CONSTRAINED_COLUMNS = (
    "row",
    "seeds",
    "lam (final)",
    "bound on subtracted acc",
    "sample/subtracted acc",
    "subtracted acc",
    "intended acc",
    "gap",
    "prob_gap",
    "truthful",
    "kl",
)


def constrained_table(rows: Sequence[RowResult]) -> list[str]:
    """Markdown lines: fixed-lam rows beside constrained ones (lam learnt by dual ascent under a bound on the subtracted
    listeners' accuracy, which `sample/` -- one temperature-1 caption per board, as in training -- measures)."""
    lines = ["| " + " | ".join(CONSTRAINED_COLUMNS) + " |", "|" + " --- |" * len(CONSTRAINED_COLUMNS)]
    for row in rows:
        names = list(row.runs[0].summary["config"]["reward"]["subtracted"])
        bound = row.runs[0].summary["config"]["trainer"]["constraint"]["subtracted_acc"]
        afters = [run.after for run in row.runs]
        sampled = seed_stats([{"x": np.mean([a[f"sample/acc/{n}"] for n in names])} for a in afters], "x")
        greedy = seed_stats([{"x": np.mean([a[f"acc/{n}"] for n in names])} for a in afters], "x")
        lam = seed_stats([run.summary["multipliers"] for run in row.runs], "lam")
        cells = [
            f"`{row.name}`",
            str(len(row.runs)),
            _pm(*lam),
            "-" if bound is None else f"{bound:.2f}",
            _pm(*sampled),
            _pm(*greedy),
            _listeners(row.runs, "intended"),
            _pm(*row.stat("gap")),
            _pm(*row.stat("prob_gap")),
            _pm(*row.stat("truthful")),
            _pm(*row.stat("kl")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


ABLATION_COLUMNS = (
    "row",
    "seeds",
    "truthful before RL (captioner)",
    "lm_nll before RL",
    "gap",
    "prob_gap",
    "mention/color",
    "mention/shape",
    "truthful",
    "kl",
)


def ablation_table(rows: Sequence[RowResult]) -> list[str]:
    """Markdown lines: one row per setting, with the captioning speaker's own quality (its greedy captions before
    RL)."""
    lines = ["| " + " | ".join(ABLATION_COLUMNS) + " |", "|" + " --- |" * len(ABLATION_COLUMNS)]
    for row in rows:
        befores = [run.summary["before"] for run in row.runs]
        cells = [
            f"`{row.name}`",
            str(len(row.runs)),
            _pm(*seed_stats(befores, "truthful")),
            _pm(*seed_stats(befores, "lm_nll")),
            *_stats(row, "gap", "prob_gap", "mention/color", "mention/shape", "truthful", "kl"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


RERANK_COLUMNS = (
    "speaker",
    "seeds",
    "captions scored per test board",
    "captions scored in training",
    "gap",
    "gap 95% CI (boards)",
    "prob_gap",
    "mention/color",
    "mention/shape",
    "truthful",
    "grammatical",
    "kl (rerank: upper bound)",
    "training s",
    "evaluation s",
)


def rerank_table(entries: Sequence[RowResult], rl_rows: Sequence[RowResult]) -> list[str]:
    """Markdown lines: the captioning speaker decoded greedily or reranked (best of n by the game's reward, no training)
    beside RL rows, on the same boards; cost as captions the listeners scored and seconds on the clock."""
    lines = ["| " + " | ".join(RERANK_COLUMNS) + " |", "|" + " --- |" * len(RERANK_COLUMNS)]
    for row, is_rl in [*((e, False) for e in entries), *((r, True) for r in rl_rows)]:
        config = row.runs[0].summary["config"]
        if is_rl:
            trainer = config["trainer"]
            per_board, trained = "1", f"{row.runs[0].summary['steps'] * trainer['boards'] * trainer['k']}"
            train_s, eval_s = _pm(*seed_stats([run.summary for run in row.runs], "wall_s/rl")), "-"
        else:
            reranked = config["speaker"].get("decode") == "rerank"
            per_board, trained, train_s = str(config["speaker"]["rerank"]["n"] if reranked else 1), "0", "0"
            eval_s = _pm(*seed_stats([run.summary for run in row.runs], "wall_s/eval"))
        cells = [
            f"`{row.name}`" + (" (RL)" if is_rl else ""),
            str(len(row.runs)),
            per_board,
            trained,
            _pm(*row.stat("gap")),
            _interval(row.interval("gap")),
            _pm(*row.stat("prob_gap")),
            _pm(*row.stat("mention/color")),
            _pm(*row.stat("mention/shape")),
            _pm(*row.stat("truthful")),
            _pm(*row.stat("grammatical")),
            _pm(*row.stat("kl")),
            train_s,
            eval_s,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


@dataclass
class TransferResult:
    """Zero-shot evaluations of a row's runs on one held-out domain."""

    name: str  # the domain
    row: RowResult
    evals: list[dict]  # each run's eval summary.json there

    def stat(self, key: str) -> tuple[float, float]:
        return seed_stats([e["after"] for e in self.evals], key)


TRANSFER_COLUMNS = (
    "domain",
    "row",
    "seeds",
    "gap",
    "in-domain gap",
    "ratio (of the means)",
    "mention/color",
    "mention/shape",
    "in-domain mention/shape",
    "truthful",
    "grammatical",
    "fixed oracle gap",
)


def transfer_table(results: Sequence[TransferResult]) -> list[str]:
    lines = ["| " + " | ".join(TRANSFER_COLUMNS) + " |", "|" + " --- |" * len(TRANSFER_COLUMNS)]
    for t in results:
        gap, home = t.stat("gap"), t.row.stat("gap")
        ratio = f"{gap[0] / home[0]:.2f}" if home[0] else "n/a (in-domain gap 0)"  # of the means over seeds
        oracle = np.mean([e["fixed_oracle_gap"] for e in t.evals])
        cells = [
            t.name,
            f"`{t.row.name}`",
            str(len(t.evals)),
            _pm(*gap),
            _pm(*home),
            ratio,
            _pm(*t.stat("mention/color")),
            _pm(*t.stat("mention/shape")),
            _pm(*t.row.stat("mention/shape")),
            _pm(*t.stat("truthful")),
            _pm(*t.stat("grammatical")),
            f"{oracle:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


SHARE_BAR = 0.9  # the audience sweep's bar: the gap at least this share of the pair's fixed oracle...
MEANINGFUL_ORACLE = 0.1  # ...for pairs whose fixed oracle gap is above this (below it there is little to specialise)
AUDIENCE_COLUMNS = (
    "row",
    "subtracted listener",
    "fixed oracle gap (subset)",
    "gap (mean +- std)",
    "gap 95% CI (boards)",
    "share of the oracle",
    "truthful",
    "grammatical",
    "names (>= half the captions)",
    "colour named: confusable / distinct boards",
    "most often wrong",
    f"share >= {SHARE_BAR}, truthful and grammatical >= {TRUTHFUL_BAR}",
)


def subtracted_listener(row: RowResult) -> str:
    """The row's subtracted listeners: `name (perception)`, a knowledge limit named where there is one."""
    config = row.runs[0].summary["config"]
    described = []
    for name in config["reward"]["subtracted"]:
        listener = config["listeners"][name]
        perception = listener["perception"]
        if isinstance(perception, dict):
            kind = perception.get("name") or perception.get("_target_", "").rsplit(".", 1)[-1].lower()
            settings = [f"{k}={v}" for k, v in perception.items() if k not in ("name", "_target_")]
            perception = " ".join([kind, *settings])
        excluded = listener.get("knowledge", {}).get("exclude") or []
        described.append(f"{name} ({perception}" + (f", never read: {', '.join(excluded)})" if excluded else ")"))
    return ", ".join(described) or "-"


def audience_share(row: RowResult) -> tuple[float, float] | None:
    """The gap as a share of the fixed oracle: mean and std over seeds; None when the oracle is not meaningful."""
    oracle = row.oracle[0]
    if oracle <= MEANINGFUL_ORACLE:
        return None
    return seed_stats([{"share": run.after["gap"] / oracle} for run in row.runs], "share")


def confusable_split(row: RowResult) -> str:
    """How often the captions name the colour on boards whose target colour the subtracted listener confuses with a
    distractor's, and on the other boards (means over the seeds' boards; `-` where a side has no boards)."""
    subtracted = list(row.runs[0].summary["config"]["reward"]["subtracted"])
    if len(subtracted) != 1:
        return "n/a (not one subtracted listener)"
    name = subtracted[0]
    if any(f"confusable/{name}" not in run.boards for run in row.runs):
        return "n/a (no world colours)"
    confusable = row.runs[0].boards[f"confusable/{name}"] > 0.5  # (B,) the same boards in every seed
    named = np.stack([run.boards["mention/color"] for run in row.runs]).mean(0)  # (B,)
    sides = [named[confusable], named[~confusable]]
    cells = [f"{side.mean():.2f}" if len(side) else "-" for side in sides]
    return f"{cells[0]} ({confusable.sum()}) / {cells[1]} ({(~confusable).sum()})"


def most_wrong(row: RowResult) -> str:
    """The attribute the captions most often name with a value the target does not have, and how often."""
    rates = {key.split("/", 1)[1]: row.stat(key)[0] for key in row.runs[0].after if key.startswith("wrong/")}
    if not rates:
        return "n/a"
    attribute = max(rates, key=rates.get)
    return f"{attribute} {rates[attribute]:.3f}"


def audience_table(rows: Sequence[RowResult]) -> list[str]:
    """Markdown lines: each pair's oracle, gap, share of the oracle, what the speaker names and gets wrong."""
    lines = ["| " + " | ".join(AUDIENCE_COLUMNS) + " |", "|" + " --- |" * len(AUDIENCE_COLUMNS)]
    for row in rows:
        oracle, subset = row.oracle
        share = audience_share(row)
        truthful, grammatical = row.stat("truthful")[0], row.stat("grammatical")[0]
        mentions = [key for key in row.runs[0].after if key.startswith("mention/")]
        names = [key.split("/", 1)[1] for key in mentions if row.stat(key)[0] >= 0.5]
        if share is None:
            verdict = f"n/a (oracle <= {MEANINGFUL_ORACLE})"
        else:
            verdict = "yes" if share[0] >= SHARE_BAR and min(truthful, grammatical) >= TRUTHFUL_BAR else "no"
        cells = [
            f"`{row.name}`",
            subtracted_listener(row),
            f"{oracle:.3f} ({subset})",
            _pm(*row.stat("gap")),
            _interval(row.interval("gap")),
            _pm(*share) if share is not None else "n/a",
            _pm(*row.stat("truthful")),
            _pm(*row.stat("grammatical")),
            ", ".join(names) or "-",
            confusable_split(row),
            most_wrong(row),
            verdict,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def audience_plot(chosen: Sequence[RowResult], held_out: Sequence[RowResult], path: Path) -> None:
    """Horizontal bars: each pair's gap as a share of its fixed oracle (mean over seeds, each seed a dot), the pairs
    the defaults were chosen on apart from the held-out ones; the bar at SHARE_BAR; pairs without a meaningful
    oracle are left out."""
    rows = [(row, kind) for kind, group in (("chosen on", chosen), ("held out", held_out)) for row in group]
    rows = [(row, kind) for row, kind in rows if audience_share(row) is not None]
    fig, ax = plt.subplots(figsize=(6.4, 0.42 * len(rows) + 1.3), dpi=120)
    y = np.arange(len(rows))[::-1]
    labels = {"chosen on": "the defaults chosen on these", "held out": "held out: run only with the defaults fixed"}
    colors = {"chosen on": "#2b6cd4", "held out": "#d4572b"}
    for kind, color in colors.items():
        mine = [i for i, (_, k) in enumerate(rows) if k == kind]
        if mine:
            shares = [audience_share(rows[i][0])[0] for i in mine]
            ax.barh(y[mine], shares, 0.6, color=color, label=labels[kind])
    for i, (row, _) in enumerate(rows):
        oracle = row.oracle[0]
        ax.scatter([run.after["gap"] / oracle for run in row.runs], np.full(len(row.runs), y[i]), s=8, color="black")
    ax.axvline(SHARE_BAR, color="#2e9d5b", lw=1, ls="--", label=f"{SHARE_BAR}x the fixed oracle")
    ax.set_yticks(y, [row.name for row, _ in rows], fontsize=8)
    ax.set_xlabel("gap after RL / best fixed-subset oracle gap (bars: mean, dots: seeds)")
    ax.legend(fontsize=7, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    save_png(fig, path)


def save_png(fig: plt.Figure, path: Path) -> None:
    """Write the figure as a PNG atomically (no software or date stamp in it); closes it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def gap_plot(rows: Sequence[RowResult], path: Path) -> None:
    """Bars per row: the gap and the probability gap (mean over seeds), each seed a dot, the boards' 95% interval as
    error bars; the fixed-subset oracle as a tick."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 3.4), dpi=120)
    x = np.arange(len(rows))
    for offset, key, color in ((-0.2, "gap", "#2b6cd4"), (0.2, "prob_gap", "#d4572b")):
        means = np.array([row.stat(key)[0] for row in rows])
        lo_hi = np.array([row.interval(key) for row in rows])  # (R, 2)
        ax.bar(x + offset, means, 0.38, color=color, label=key, yerr=np.abs(lo_hi.T - means), capsize=3)
        for i, row in enumerate(rows):
            ax.scatter(
                np.full(len(row.runs), i + offset), [run.after[key] for run in row.runs], s=8, color="black", zorder=3
            )
    ax.scatter(
        x,
        [row.oracle[0] for row in rows],
        marker="_",
        s=400,
        color="#2e9d5b",
        label="fixed-subset oracle gap",
        zorder=4,
    )
    ax.axhline(0, color="#888", lw=0.8)
    ax.set_xticks(x, [row.name for row in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("after RL")
    ax.legend(fontsize=7, frameon=False)
    save_png(fig, path)


def mention_plot(rows: Sequence[RowResult], attributes: Sequence[str], path: Path) -> None:
    """Grouped bars: per row the share of greedy captions naming each attribute after RL (mean over seeds)."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 3.2), dpi=120)
    width = 0.8 / len(attributes)
    x = np.arange(len(rows))
    for i, attribute in enumerate(attributes):
        ax.bar(
            x + (i - (len(attributes) - 1) / 2) * width,
            [row.stat(f"mention/{attribute}")[0] for row in rows],
            width,
            label=attribute,
        )
    ax.set_xticks(x, [row.name for row in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("mention rate after RL")
    ax.legend(fontsize=7, ncol=len(attributes), frameon=False)
    save_png(fig, path)


def frontier_plot(rows: Sequence[RowResult], entries: Sequence[RowResult], path: Path) -> None:
    """Gap against truthful (mean over seeds, std as error bars): RL rows as circles, the captioner decoded greedily or
    reranked as triangles; the truthful bar and the first row's fixed-subset oracle as lines.

    Points at least ZOOM_TRUTHFUL truthful crowd together on the whole range; when others lie below it, a second
    panel shows them alone at their own scale (shaded in the first, which names only the others). Every name is
    placed clear of the other names and points (`place_labels`).
    """
    points = [
        (row, marker, color, label)
        for group, marker, color, label in (
            (rows, "o", "#2b6cd4", "RL"),
            (entries, "^", "#d4572b", "captioner: greedy / rerank"),
        )
        for row in group
    ]
    xy = np.array([(row.stat("truthful")[0], row.stat("gap")[0]) for row, *_ in points])  # (P, 2)
    near_bar = xy[:, 0] >= ZOOM_TRUTHFUL
    zoom = bool(near_bar.any() and not near_bar.all())
    panels = [np.ones(len(points), bool), near_bar] if zoom else [np.ones(len(points), bool)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.6), dpi=120, squeeze=False)
    for ax, shown in zip(axes[0], panels):
        for index in np.flatnonzero(shown):
            row, marker, color, label = points[index]
            (x, dx), (y, dy) = row.stat("truthful"), row.stat("gap")
            ax.errorbar(x, y, xerr=dx, yerr=dy, fmt=marker, color=color, ms=5, capsize=2, label=label)
        ax.axvline(TRUTHFUL_BAR, color="#888", ls="--", lw=0.8, label=f"truthful bar ({TRUTHFUL_BAR})")
        ax.axhline(rows[0].oracle[0], color="#2e9d5b", lw=0.8, label=f"fixed-subset oracle ({rows[0].oracle[1]})")
        ax.set_xlabel("truthful (greedy or kept captions)")
        ax.set_ylabel("gap")
        ax.margins(0.12)
    if zoom:
        lo, hi = min(TRUTHFUL_BAR, xy[near_bar, 0].min()) - 0.005, max(1.0, xy[near_bar, 0].max()) + 0.005
        axes[0, 1].set_xlim(lo, hi)
        axes[0, 1].set_title(f"truthful >= {ZOOM_TRUTHFUL}", fontsize=9)
        axes[0, 0].axvspan(lo, hi, color="#000", alpha=0.06, lw=0, zorder=0)
        axes[0, 0].set_title("all (the shaded ones are named on the right)", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one entry per label: every point carries its group's
    legend = axes[0, 0].legend(unique.values(), unique.keys(), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.canvas.draw()  # the limits, the layout and the legend's place are final: labels are placed in pixels
    err = np.array([(row.stat("truthful")[1], row.stat("gap")[1]) for row, *_ in points])  # (P, 2)
    for ax, shown in zip(axes[0], panels):
        named = shown & ~near_bar if zoom and ax is axes[0, 0] else shown
        names = [row.name if named[i] else None for i, (row, *_) in enumerate(points) if shown[i]]
        avoid = [legend.get_window_extent()] if ax is axes[0, 0] else []
        place_labels(ax, xy[shown], names, err[shown], avoid=avoid)
    save_png(fig, path)


def write_results(
    out: Path,
    rows: Mapping[str, list[Path]],
    transfers: Sequence[tuple[str, str, list[Path]]],
    header: Sequence[str],
    resamples: int,
    attributes: Sequence[str] = ("color", "shape", "size", "fill"),
    constrained: Sequence[str] = (),
    ablations: Sequence[str] = (),
    reranks: Mapping[str, list[Path]] | None = None,
    rerank_against: Sequence[str] = (),
    truthful_settings: Mapping[str, str] | None = None,
    audience: Sequence[str] = (),
    chosen_on: Sequence[str] = (),
    speakers: Sequence[str] = (),
) -> list[RowResult]:
    """Write the document at `out` and its PNG plots beside it from finished run directories.

    rows: row name -> its runs' directories; transfers: (domain, the row evaluated, each run's eval directory in the
    row's order). header: the lines that open the document (the command and its wall time). constrained: the rows
    of the constrained-vs-fixed-lam table. ablations: the rows of the ablation table, the first its reference. reranks:
    entry -> the captioning speaker's eval directories (greedy or reranked), shown beside the RL rows `rerank_against`.
    truthful_settings: row or rerank entry -> the row or entry whose setting keeps its captions truthful, named in its
    finding when it is flagged. audience: the rows of the "every audience" section (one subtracted listener each),
    split by whether they are among `chosen_on`, the rows the defaults were chosen on. speakers: the rows of the "any
    speaker" section (the same game, each kind of speaker).
    """
    truthful_settings = dict(truthful_settings or {})
    results = [RowResult(name, [Run.read(p) for p in paths], resamples) for name, paths in rows.items()]
    entries = [RowResult(name, [Run.read(p) for p in paths], resamples) for name, paths in (reranks or {}).items()]
    by_name = {row.name: row for row in results}
    kept_by = {row.name: row for row in [*results, *entries]}  # what truthful_settings may name

    def finding(row: RowResult) -> str:
        return f"- `{row.name}`: {row.finding(kept_by.get(truthful_settings.get(row.name, '')))}."

    moved = [
        TransferResult(name, by_name[row], [json.loads((p / SUMMARY).read_text()) for p in paths])
        for name, row, paths in transfers
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [*header, "", *_wall_times(results, moved), "", "## Experiments", ""]
    lines += _experiments(results, attributes, resamples, out, finding)
    if audience:
        lines += _audience(
            [by_name[name] for name in audience if name in chosen_on],
            [by_name[name] for name in audience if name not in chosen_on],
            out,
            chosen_on,
        )
    if speakers:
        lines += _speakers([by_name[name] for name in speakers])
    if constrained:
        lines += _constrained([by_name[name] for name in constrained])
    if ablations:
        lines += _ablations([by_name[name] for name in ablations])
    if entries:
        lines += _reranks(entries, [by_name[name] for name in rerank_against], finding)
        frontier_rows = [by_name[name] for name in dict.fromkeys([*rerank_against, *ablations])]
        frontier_png = out.with_name(f"{out.stem}_frontier.png")
        frontier_plot(frontier_rows, entries, frontier_png)
        lines += ["", f"![gap against truthful, RL and rerank]({frontier_png.name})"]
    if moved:
        lines += _transfers(moved)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return results


def _wall_times(results: list[RowResult], moved: list[TransferResult]) -> list[str]:
    """What the sweep's runs cost by their own clocks."""
    train_s = sum(run.summary.get("wall_s", 0.0) for row in results for run in row.runs)
    pretrain_s = sum(
        sum(v for k, v in run.summary.items() if k.startswith("wall_s/pretrain/"))
        for row in results
        for run in row.runs
    )
    eval_s = sum(e.get("wall_s", 0.0) for t in moved for e in t.evals)
    n_runs = sum(len(row.runs) for row in results)
    return [
        (
            f"The {n_runs} train runs took {train_s:.0f} s in all by their own clocks "
            f"(of which {pretrain_s:.0f} s of worker time built"
        ),
        (
            f"missing models), the {sum(len(t.evals) for t in moved)} transfer evaluations {eval_s:.0f} s "
            "(`wall_s` of each summary.json)."
        ),
    ]


def _experiments(
    results: list[RowResult],
    attributes: Sequence[str],
    resamples: int,
    out: Path,
    finding: Callable[[RowResult], str],
) -> list[str]:
    """The experiments' table, each row's finding, and the gap and mention plots (written beside `out`)."""
    gap_png, mention_png = out.with_name(f"{out.stem}_gap.png"), out.with_name(f"{out.stem}_mentions.png")
    gap_plot(results, gap_png)
    mention_plot(results, attributes, mention_png)
    boards = len(results[0].runs[0].boards["gap"])
    return [
        (
            f"After RL, greedy captions on the {boards} held-out evaluation boards "
            "(the same boards for every row and seed);"
        ),
        "mean +- standard deviation over the RL seeds; the 95% interval is a bootstrap over boards of the seeds' mean",
        (
            f"({resamples} resamples). `prob_gap` is the intended listeners' mean probability of the target minus "
            "the subtracted"
        ),
        "listeners' (continuous, so its interval is tighter than the accuracy gap's).",
        "",
        *experiment_table(results),
        "",
        *[finding(row) for row in results],
        "",
        f"![gap per row]({gap_png.name})",
        "",
        f"![attributes named]({mention_png.name})",
    ]


CONSTRAINED_PROSE = """\
A row with a bound on the subtracted listeners' accuracy learns lam by dual ascent during RL (`trainer.constraint`);
the others keep lam fixed. lam is its value at the end of training."""
ABLATIONS_PROSE = """\
Each row changes one setting of `{reference}` (the first line; each row's overrides are in the table above). The
columns before RL are the captioning speaker's greedy captions (with the adapter it was trained with): captioning
quality apart from RL."""
RERANK_PROSE = """\
The captioning speaker without any RL (`listener-sub eval checkpoint=captioner`), greedy or reranked
(`speaker.decode=rerank speaker.rerank.n=N`: per board N captions sampled at temperature 1, the one with the best
listener-subtraction reward kept; with `speaker.rerank.beta=b` the best reward + b * log pi(caption), the decode-time
counterpart of RL's KL penalty), beside RL, on the same {boards} boards. Seeds: `speaker.rerank.seed` for the
rerank entries, `trainer.seed` for RL. A reranked speaker's kl is KL(best-of-N || captioner) <= log N - (N-1)/N (Beirami
et al., 2024). Cost: captions the listeners scored per test board and in training; training s is RL's `wall_s/rl`,
evaluation s the whole evaluation of an entry (its greedy or reranked pass, and one sampled caption per board)."""
AUDIENCE_PROSE = """\
The full-colour listener intended against each single subtracted listener the library ships, every row at the same
default settings (its overrides only name the listeners). The share is the gap as a share of the pair's best
fixed-subset oracle (a speaker that names the same attributes, truthfully, on every board; n/a where that oracle's
gap is <= {meaningful}). Colour named: the captions naming the colour on boards whose target colour the subtracted
listener confuses with a distractor's (perceived closer than {distance:.0f} of 255, `confusable_colours`) and on the
other boards (board counts in brackets). Most often wrong: the attribute captions most often name with a value the
target does not have (`wrong/<attribute>`), the share of captions that do.

The defaults were chosen looking at the rows {chosen} only; the pairs under "held out" were not run while choosing
them."""
SPEAKERS_PROSE = """\
The colour-blind game with each kind of speaker at the same RL settings: the paper's adapter speaker (a frozen CLIP
tower, a trained Perceiver adapter, a frozen LM) and a vision-language model whose LoRA adapters train (`speaker=vlm`;
its reference policy is the base model, the adapter disabled). Columns as in "Every audience"."""
TRANSFER_PROSE = """\
Each run of the row evaluated, without further training, on held-out data: RL saw only the `train` split's style
and combinations; the models were pretrained on the broad `pretrain` split. mention/shape beside its in-domain
value: whether the speaker still leaves shape out there."""


def _section(title: str, prose: str, *body: list[str]) -> list[str]:
    """A section of the document: its heading, its prose (kept at its own line breaks), then each body part after a
    blank line."""
    lines = ["", f"## {title}", "", *prose.splitlines()]
    for part in body:
        lines += ["", *part]
    return lines


def _constrained(rows: list[RowResult]) -> list[str]:
    return _section("Constrained subtraction vs fixed lam", CONSTRAINED_PROSE, constrained_table(rows))


def _ablations(rows: list[RowResult]) -> list[str]:
    return _section("Ablations", ABLATIONS_PROSE.format(reference=rows[0].name), ablation_table(rows))


def _reranks(entries: list[RowResult], against: list[RowResult], finding: Callable[[RowResult], str]) -> list[str]:
    prose = RERANK_PROSE.format(boards=len(entries[0].runs[0].boards["gap"]))
    title = "Inference-time subtraction (rerank) vs RL"
    return _section(title, prose, rerank_table(entries, against), [finding(entry) for entry in entries])


def _audience(chosen: list[RowResult], held_out: list[RowResult], out: Path, chosen_on: Sequence[str]) -> list[str]:
    png = out.with_name(f"{out.stem}_audience.png")
    audience_plot(chosen, held_out, png)
    prose = AUDIENCE_PROSE.format(
        meaningful=MEANINGFUL_ORACLE,
        distance=CONFUSABLE_DISTANCE,
        chosen=", ".join(f"`{name}`" for name in chosen_on) or "no row",
    )
    return _section(
        "Every audience",
        prose,
        ["Chosen on:", "", *audience_table(chosen)] if chosen else [],
        ["Held out:", "", *audience_table(held_out)] if held_out else [],
        [f"![share of the oracle per pair]({png.name})"],
    )


def _speakers(rows: list[RowResult]) -> list[str]:
    kinds = [f"`{row.name}`: {speaker_kind(row)}" for row in rows]
    return _section("Any speaker", SPEAKERS_PROSE, audience_table(rows), [f"- {kind}" for kind in kinds])


def speaker_kind(row: RowResult) -> str:
    """What speaks in the row's runs: the adapter speaker's tower and adapter, or the VLM (given or embedded)."""
    speaker = row.runs[0].summary["config"]["speaker"]
    if speaker.get("kind") == "vlm":
        lora = f"LoRA r {speaker['lora_r']} on {', '.join(speaker['target_modules'])}"
        if speaker.get("name"):
            return f"the VLM {speaker['name']}, {lora}"
        recipe = speaker["train"]
        return (
            f"the embedded VLM -- a LLaVA of the locally trained CLIP {recipe['vision_model']} (tower frozen) and a "
            f"{recipe['text_layers']}-layer, {recipe['text_width']}-wide Llama trained by captioning --, {lora}"
        )
    adapter = speaker.get("adapter") or {}
    return f"the adapter speaker: CLIP {speaker['vision']['model']} -> {adapter.get('kind', '?')} adapter -> LM"


def _transfers(moved: list[TransferResult]) -> list[str]:
    return _section("Zero-shot transfer", TRANSFER_PROSE, transfer_table(moved))


HEADLINE_ROWS = (
    "colorblind",
    "no_subtraction",
    "control",
    "knowledge_limited",
    "two_subtracted",
    "two_subtracted_dixit",
    "colorblind_constrained",
)  # the README's table: the paper's experiments and constrained subtraction
ORACLE_WORDS = "the best fixed-subset oracle ("  # how a finding names the oracle: "(0.522, color)"
HEADLINE_START, HEADLINE_END = "<!-- results:headline -->", "<!-- /results:headline -->"


def _section_table(lines: Sequence[str], heading: str) -> tuple[list[str], dict[str, list[str]]]:
    """The first table under `## heading`: its header cells, and row name (the first cell, without backticks) ->
    its cells."""
    start = lines.index(f"## {heading}")
    rows: dict[str, list[str]] = {}
    header: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            if header:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif set(cells[0]) != {"-", " "} and cells[0] != "---":
            rows[cells[0].strip("`")] = cells
    return header, rows


def _findings(lines: Sequence[str], heading: str) -> dict[str, str]:
    """Row name -> its finding line (`- `name`: text.`) under `## heading`."""
    start = lines.index(f"## {heading}")
    found = {}
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("- `") and "`: " in line:
            name, text = line[3:].split("`: ", 1)
            found[name] = text.rstrip(".")
    return found


def headline(document: str, rows: Sequence[str] = HEADLINE_ROWS) -> str:
    """The README's headline: a short markdown table of `rows`, every cell read from the results document's
    Experiments table and findings (`docs/results.md`, as `write_results` writes it); nothing is computed here.

        block = headline(Path("docs/results.md").read_text())
    """
    lines = document.splitlines()
    header, table = _section_table(lines, "Experiments")
    findings = _findings(lines, "Experiments")
    column = {name: i for i, name in enumerate(header)}
    missing = [name for name in rows if name not in table or name not in findings]
    if missing:
        raise ValueError(f"the results document has no row {missing} in its Experiments table and findings")
    source = next((line for line in lines if line.startswith("Written by ")), "")
    command = source.split("`")[1] if source.count("`") >= 2 else "listener-sub results"
    when = source.split("(", 1)[1].split(")", 1)[0] if "(" in source else ""
    seeds = {table[name][column["seeds"]] for name in rows}
    per_row = len(seeds) > 1  # rows of different seed counts say theirs in the cell
    out = [
        "| experiment | gap before -> after RL | best fixed-subset oracle | share of it | intended acc "
        "| subtracted acc | truthful |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in rows:
        cells, finding = table[name], findings[name]
        oracle_at = finding.find(ORACLE_WORDS)
        if oracle_at < 0:
            raise ValueError(f"the finding of {name} names no fixed-subset oracle: {finding}")
        gap, subset = finding[oracle_at + len(ORACLE_WORDS) :].split(")", 1)[0].split(", ", 1)
        share = "beats it" if finding.startswith("beats") else finding.split("x the best", 1)[0] + "x"
        after = cells[column["gap (mean +- std over seeds)"]]
        after += f" ({cells[column['seeds']]} seeds)" if per_row else ""
        row = [
            f"`{name}`",
            f"{cells[column['gap before RL']]} -> {after}",
            f"{gap} ({subset})",
            share,
            cells[column["intended acc"]],
            cells[column["subtracted acc"]],
            cells[column["truthful"]],
        ]
        out.append("| " + " | ".join(row) + " |")
    boards = next((line.split(" held-out")[0].rsplit(" ", 1)[1] for line in lines if "held-out evaluation" in line), "")
    over = "the RL seeds" if per_row else f"{seeds.pop()} RL seeds"
    return "\n".join(
        [
            *out,
            "",
            f"Greedy captions on the {boards} held-out boards, mean +- std over {over}; read from "
            f"[`docs/results.md`](docs/results.md) (written by `{command}`, {when}) by "
            "`listener-sub results readme=README.md`.",
        ]
    )


def replace_headline(readme: str, document: str) -> str:
    """The README text with its block between HEADLINE_START and HEADLINE_END replaced by `headline(document)`."""
    if readme.count(HEADLINE_START) != 1 or readme.count(HEADLINE_END) != 1:
        raise ValueError(f"the README needs one {HEADLINE_START} ... {HEADLINE_END} block")
    before, rest = readme.split(HEADLINE_START)
    _, after = rest.split(HEADLINE_END)
    return f"{before}{HEADLINE_START}\n{headline(document)}\n{HEADLINE_END}{after}"

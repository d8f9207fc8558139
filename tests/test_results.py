"""`listener-sub results`: the document's statistics from run directories, the runs it hands to Hydra's launcher, and
the quick variant on a tiny sweep."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from PIL import Image
from test_rl import TINY

from listener_sub.commands.results import LAUNCHER, export_jobs, rerank_jobs, row_jobs, transfer_jobs, write_launcher
from listener_sub.report.results import (
    ABLATION_COLUMNS,
    AUDIENCE_COLUMNS,
    CONSTRAINED_COLUMNS,
    EXPERIMENT_COLUMNS,
    HEADLINE_END,
    HEADLINE_ROWS,
    HEADLINE_START,
    RERANK_COLUMNS,
    TRANSFER_COLUMNS,
    bootstrap_interval,
    headline,
    write_results,
)
from listener_sub.runs import EVAL_BOARDS

BOARDS = 400


def fake_run(
    path,
    seed: int,
    gap_level: float,
    truthful: float,
    oracle: float,
    subtracted: str = "gray",
    rerank_n: int | None = None,
    perception: str | dict = "grayscale",
):
    """A run directory in the real formats: summary.json and eval_boards.npz whose per-board means are the summary's."""
    rng = np.random.default_rng(seed)
    full = (rng.random(BOARDS) < 0.5 + gap_level / 2).astype(float)
    other = (rng.random(BOARDS) < 0.5 - gap_level / 2).astype(float)
    prob_gap = np.clip(full - other + rng.normal(0, 0.1, BOARDS), -1, 1) * 0.5
    boards = {"gap": full - other, "prob_gap": prob_gap, "acc/full": full, f"acc/{subtracted}": other}
    confusable = np.arange(BOARDS) < BOARDS // 4  # the same boards in every seed: the first quarter
    boards |= {f"confusable/{subtracted}": confusable.astype(float), "mention/color": (~confusable).astype(float)}
    after = {key: float(value.mean()) for key, value in boards.items()}
    after[f"sample/acc/{subtracted}"] = after[f"acc/{subtracted}"] + 0.1
    after |= {
        "mention/color": 0.75,
        "wrong/shape": 0.02 * seed,
        "wrong/color": 0.0,
        "mention/shape": 0.1,
        "mention/size": 0.0,
        "mention/fill": 0.0,
        "truthful": truthful,
    }
    after |= {
        "grammatical": 1.0,
        "kl": 2.0 + seed,
        "sample/gap": after["gap"] - 0.05,
        "sample/truthful": truthful - 0.1,
    }
    speaker = {"decode": "rerank" if rerank_n else "greedy", "rerank": {"n": rerank_n or 16, "seed": seed}}
    trainer = {"constraint": {"subtracted_acc": 0.3}, "boards": 32, "k": 4}
    summary = {
        "before": {"gap": 0.1, "truthful": 0.9 + 0.01 * seed, "lm_nll": 2.0},
        "after": after,
        "fixed_oracle_gap": oracle,
        "fixed_oracle_subset": ["color"],
        "config": {
            "reward": {"intended": {"full": 1.0}, "subtracted": {subtracted: 1.0}},
            "listeners": {subtracted: {"perception": perception, "knowledge": {"exclude": []}}},
            "trainer": trainer,
            "speaker": speaker,
        },
        "multipliers": {"lam": 1.0 + seed, "beta": 0.15},
        "steps": 400,
        "wall_s/rl": 50.0 + seed,
        "wall_s/eval": 10.0 + seed,
    }
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps(summary))
    np.savez(path / EVAL_BOARDS, **boards)
    return summary, boards


def table_rows(text: str, first_cell: str, columns: tuple[str, ...] = EXPERIMENT_COLUMNS) -> list[list[str]]:
    """The cells of the lines of a table with `columns` that start with first_cell."""
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell} |")
    ]
    return [cells for cells in rows if len(cells) == len(columns)]


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_boards():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.3, 1.0, 100), rng.normal(0.3, 1.0, 10_000)
    lo, hi = bootstrap_interval(small, 2000)
    assert lo < small.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / 10, rel=0.2)  # about 2 x 1.96 sigma / sqrt(B)
    lo_l, hi_l = bootstrap_interval(large, 2000)
    assert hi_l - lo_l < (hi - lo) / 5 and lo_l < 0.3 < hi_l


def test_the_document_reports_seeds_intervals_findings_and_plots(tmp_path):
    rows, made = {}, {}
    for name, level, truthful, oracle in (("honest", 0.5, 0.99, 0.55), ("liar", 0.4, 0.6, 0.3)):
        rows[name] = [tmp_path / name / f"seed_{s}" for s in range(3)]
        made[name] = [
            fake_run(p, s + (10 if name == "liar" else 0), level, truthful, oracle) for s, p in enumerate(rows[name])
        ]
    evals = []
    for s in range(3):
        path = tmp_path / "transfer" / f"seed_{s}"
        path.mkdir(parents=True)
        after = {
            "gap": 0.4 + 0.01 * s,
            "mention/color": 0.95,
            "mention/shape": 0.2,
            "truthful": 0.97,
            "grammatical": 1.0,
        }
        (path / "summary.json").write_text(json.dumps({"after": after, "fixed_oracle_gap": 0.5}))
        evals.append(path)
    reranks = {
        "greedy": [tmp_path / "greedy" / f"seed_{s}" for s in range(3)],
        "best_of_8": [tmp_path / "best" / f"seed_{s}" for s in range(3)],
    }
    for s, (greedy, best) in enumerate(zip(*reranks.values())):
        fake_run(greedy, 20, 0.1, 0.99, 0.55)  # one deterministic captioner: the same values in every seed
        fake_run(best, 30 + s, 0.3, 0.9, 0.55, rerank_n=8)  # below the truthful bar without beating the oracle
    out = tmp_path / "docs" / "results.md"
    write_results(
        out,
        rows,
        [("shifted", "honest", evals)],
        ["# Results", "", "header line"],
        resamples=500,
        constrained=["liar"],
        ablations=["honest", "liar"],
        reranks=reranks,
        rerank_against=["honest"],
        truthful_settings={"liar": "honest", "best_of_8": "greedy"},
    )
    text = out.read_text()
    assert text.startswith("# Results\n\nheader line")

    for name in rows:
        (cells,) = table_rows(text, f"`{name}`")
        gaps = np.array([summary["after"]["gap"] for summary, _ in made[name]])
        assert cells[1] == "3" and cells[2] == f"{gaps.mean():.3f} +- {gaps.std(ddof=1):.3f}"
        lo, hi = map(float, re.findall(r"-?\d\.\d+", cells[3]))
        per_board = np.mean([boards["gap"] for _, boards in made[name]], axis=0)  # the seeds' mean, board by board
        assert lo < per_board.mean() < hi and 0.02 < hi - lo < 0.2
        prob = np.array([summary["after"]["prob_gap"] for summary, _ in made[name]])
        assert cells[4] == f"{prob.mean():.3f} +- {prob.std(ddof=1):.3f}"
        plo, phi = map(float, re.findall(r"-?\d\.\d+", cells[5]))
        assert phi - plo < hi - lo  # the continuous gap is the tighter measure
        assert cells[8] == f"gray {np.mean([s['after']['acc/gray'] for s, _ in made[name]]):.3f}"
    assert "`honest`: " in text and "x the best fixed-subset oracle (0.550, color)" in text
    honest_gap = np.mean([summary["after"]["gap"] for summary, _ in made["honest"]])
    assert (
        "`liar`: beats the best fixed-subset oracle (0.300, color) with truthful 0.600 < 0.95: "
        "the gain comes from untruthful captions; "
        f"`honest` keeps truthful >= 0.95 (0.990) with gap {honest_gap:.3f}."
    ) in text

    (cells,) = table_rows(text, "shifted", TRANSFER_COLUMNS)
    honest_gaps = [summary["after"]["gap"] for summary, _ in made["honest"]]
    assert cells[1] == "`honest`" and cells[3] == "0.410 +- 0.010" and cells[5] == f"{0.41 / np.mean(honest_gaps):.2f}"
    assert cells[7] == "0.200 +- 0.000" and cells[8] == "0.100 +- 0.000"  # mention/shape there and at home

    (cells,) = table_rows(text, "`liar`", CONSTRAINED_COLUMNS)
    lams = [summary["multipliers"]["lam"] for summary, _ in made["liar"]]
    sampled = [summary["after"]["sample/acc/gray"] for summary, _ in made["liar"]]
    assert cells[2] == f"{np.mean(lams):.3f} +- {np.std(lams, ddof=1):.3f}" and cells[3] == "0.30"
    assert cells[4] == f"{np.mean(sampled):.3f} +- {np.std(sampled, ddof=1):.3f}"
    assert "## Constrained subtraction vs fixed lam" in text and not table_rows(text, "`honest`", CONSTRAINED_COLUMNS)

    (cells,) = table_rows(text, "`liar`", ABLATION_COLUMNS)
    truthful_before = [0.9 + 0.01 * (s + 10) for s in range(3)]
    assert (
        cells[2] == f"{np.mean(truthful_before):.3f} +- {np.std(truthful_before, ddof=1):.3f}"
        and cells[3] == "2.000 +- 0.000"
    )
    assert "## Ablations" in text and table_rows(text, "`honest`", ABLATION_COLUMNS)

    (greedy,) = table_rows(text, "`greedy`", RERANK_COLUMNS)
    (best,) = table_rows(text, "`best_of_8`", RERANK_COLUMNS)
    (rl,) = table_rows(text, "`honest` (RL)", RERANK_COLUMNS)
    assert greedy[2:4] == ["1", "0"] and best[2:4] == ["8", "0"] and rl[2:4] == ["1", str(400 * 32 * 4)]
    assert (
        greedy[4].endswith("+- 0.000")
        and best[13] == "41.000 +- 1.000"
        and rl[12] == "51.000 +- 1.000"
        and rl[13] == "-"
    )
    assert "log N - (N-1)/N" in text
    best_gap = np.mean([json.loads((p / "summary.json").read_text())["after"]["gap"] for p in reranks["best_of_8"]])
    greedy_gap = json.loads((reranks["greedy"][0] / "summary.json").read_text())["after"]["gap"]
    assert (
        f"- `best_of_8`: {best_gap / 0.55:.2f}x the best fixed-subset oracle (0.550, color), truthful 0.900 < 0.95; "
        f"`greedy` keeps truthful >= 0.95 (0.990) with gap {greedy_gap:.3f}."
    ) in text

    for png in ("results_gap.png", "results_mentions.png", "results_frontier.png"):
        assert f"]({png})" in text
        image = np.asarray(Image.open(out.parent / png).convert("L"))
        assert image.shape[1] >= 600 and image.std() > 10  # a drawn chart, not a blank page


def test_the_audience_section_shows_chosen_and_held_out_pairs_apart(tmp_path):
    pairs = {  # row -> (gap level, truthful, oracle, subtracted listener, its perception)
        "colorblind": (0.5, 0.99, 0.52, "gray", "grayscale"),
        "deuteranope": (0.1, 0.99, 0.05, "deutan", {"name": "cvd", "kind": "deutan", "severity": 1.0}),
        "short_sighted": (0.3, 0.90, 0.40, "blur", {"_target_": "listener_sub.perception.Blur", "sigma": 1.5}),
    }
    rows = {name: [tmp_path / name / f"seed_{s}" for s in range(3)] for name in pairs}
    made = {
        name: [
            fake_run(p, s, *pairs[name][:3], subtracted=pairs[name][3], perception=pairs[name][4])
            for s, p in enumerate(paths)
        ]
        for name, paths in rows.items()
    }
    out = tmp_path / "results.md"
    write_results(out, rows, [], ["# Results"], 200, audience=list(pairs), chosen_on=["colorblind"])
    text = out.read_text()
    section = text[text.index("## Every audience") :]
    assert "looking at the rows `colorblind` only" in section
    assert section.index("Chosen on:") < section.index("`colorblind` |") < section.index("Held out:")
    assert section.index("Held out:") < section.index("`deuteranope` |") < section.index("`short_sighted` |")
    (cb,) = table_rows(section, "`colorblind`", AUDIENCE_COLUMNS)
    shares = [summary["after"]["gap"] / 0.52 for summary, _ in made["colorblind"]]
    assert cb[1] == "gray (grayscale)" and cb[2] == "0.520 (color)"
    assert cb[5] == f"{np.mean(shares):.3f} +- {np.std(shares, ddof=1):.3f}" and cb[8] == "color"
    assert cb[9] == "0.00 (100) / 1.00 (300)"  # colour never named on the confusable quarter of the boards
    assert cb[10] == "shape 0.020" and cb[11] == ("yes" if np.mean(shares) >= 0.9 else "no")
    (deutan,) = table_rows(section, "`deuteranope`", AUDIENCE_COLUMNS)
    assert deutan[1] == "deutan (cvd kind=deutan severity=1.0)" and deutan[5] == "n/a"
    assert deutan[11] == "n/a (oracle <= 0.1)"
    (blur,) = table_rows(section, "`short_sighted`", AUDIENCE_COLUMNS)
    assert blur[1] == "blur (blur sigma=1.5)" and blur[11] == "no"  # truthful 0.90 < 0.95
    assert "](results_audience.png)" in section
    image = np.asarray(Image.open(tmp_path / "results_audience.png").convert("L"))
    assert image.std() > 10


def test_the_readme_headline_is_read_from_the_documents_table_and_findings(tmp_path):
    """`headline` reads every cell from the document write_results wrote; `listener-sub results readme=R` puts it
    between R's markers, runs nothing else, and refuses a README without them (exit 2, one line)."""
    rows = {}
    for i, name in enumerate(HEADLINE_ROWS):
        rows[name] = [tmp_path / "runs" / name / f"seed_{s}" for s in range(2)]
        for s, path in enumerate(rows[name]):
            fake_run(path, 10 * i + s, 0.1 * (i % 5), 0.99 if i % 2 else 0.8, 0.45)
    out = tmp_path / "docs" / "results.md"
    written = "Written by `listener-sub results jobs=2` (full variant, 2026-01-01): every number below is read."
    write_results(out, rows, [], ["# Results", "", written], resamples=100)
    document = out.read_text()
    block = headline(document)
    for name in HEADLINE_ROWS:
        (cells,) = table_rows(document, f"`{name}`")
        finding = next(line for line in document.splitlines() if line.startswith(f"- `{name}`: "))
        share = finding.split(": ", 1)[1].split("x the best")[0]
        line = next(line for line in block.splitlines() if line.startswith(f"| `{name}` |"))
        assert [c.strip() for c in line.strip("|").split("|")] == [
            f"`{name}`",
            f"{cells[6]} -> {cells[2]}",
            "0.450 (color)",
            "beats it" if finding.split(": ", 1)[1].startswith("beats") else f"{share}x",
            cells[7],
            cells[8],
            cells[11],
        ]
    assert "mean +- std over 2 RL seeds" in block and "`listener-sub results jobs=2`, full variant, 2026-01-01" in block

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{HEADLINE_START}\nold table\n{HEADLINE_END}\nend\n")
    done = listener_sub(f"readme={readme}", f"out={out}", f"runs={tmp_path / 'no_runs'}")
    assert done.returncode == 0, done.stderr
    assert readme.read_text() == f"intro\n{HEADLINE_START}\n{block}\n{HEADLINE_END}\nend\n"
    assert not (tmp_path / "no_runs").exists()
    readme.write_text("no markers\n")
    refused = listener_sub(f"readme={readme}", f"out={out}")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert HEADLINE_START in refused.stderr and readme.read_text() == "no markers\n"


def test_names_of_crowded_points_overlap_neither_each_other_nor_the_points():
    """The frontier plot's rows near truthful 1 crowd together: each name finds a spot of its own."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from listener_sub.report.plots import place_labels

    rng = np.random.default_rng(0)
    xy = np.concatenate([0.97 + 0.02 * rng.random((12, 2)), [[0.3, 0.6], [0.5, 0.2]]])  # (14, 2): 12 in a cluster
    names = [f"colorblind_setting_{i}" for i in range(len(xy))]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.scatter(*xy.T)
    ax.set_xlim(0.2, 1.02)
    ax.set_ylim(0.1, 1.1)
    fig.canvas.draw()
    place_labels(ax, xy, names[:-1] + [None])  # the last point is kept free but not named
    renderer = fig.canvas.get_renderer()
    for text in ax.texts:
        text.update_positions(renderer)
    boxes = [Text.get_window_extent(text, renderer) for text in ax.texts]  # the names, without their leader lines
    assert sorted(text.get_text() for text in ax.texts) == sorted(names[:-1])
    for i, box in enumerate(boxes):
        assert not any(box.overlaps(other) for other in boxes[i + 1 :])
        assert not any(box.contains(*point) for point in ax.transData.transform(xy))
        assert ax.get_window_extent(renderer).contains(box.x0, box.y0)
    plt.close(fig)


def composed(command: str, overrides: list[str], hydra: bool = False):
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        return compose(command, overrides=overrides, return_hydra_config=hydra)


def test_each_phase_lists_the_runs_it_lacks_with_their_own_overrides_where_the_document_reads_them(tmp_path):
    """A job per missing run: its row's (or entry's) override list as written, its seed, and its run directory where
    report/results.py reads it; a finished run is found and is no job."""
    mlp = ["experiment=colorblind", "speaker/adapter=mlp", "trainer.beta=0.15"]
    cfg = composed(
        "results",
        [
            "~rows",
            f"+rows={{mlp:[{','.join(repr(o) for o in mlp)}],control:['experiment=control']}}",
            "~rerank",
            "+rerank={best_of_2:['speaker.decode=rerank','speaker.rerank.n=2']}",
            "~transfer",
            "+transfer={shifted:{eval:['evaluation.split=shifted']},waves:{eval:['x=1'],export:['split=shifted']}}",
            "transfer_rows=[control]",
            "launch_first=[control]",
        ],
    )
    runs, common = tmp_path / "runs", ["trainer.steps=2"]
    fake_run(runs / "control" / "seed_0", 0, 0.3, 1.0, 0.5)
    fake_run(runs / "rerank" / "best_of_2" / "seed_1", 1, 0.3, 1.0, 0.5)
    rows, trains = row_jobs(cfg, runs, [0, 1], common)
    assert rows == {name: [runs / name / "seed_0", runs / name / "seed_1"] for name in ("mlp", "control")}
    assert [(job.where, job.overrides) for job in trains] == [  # seed by seed, launch_first's rows first in each
        ("mlp/seed_0", [*common, *mlp, "trainer.seed=0"]),
        ("control/seed_1", [*common, "experiment=control", "trainer.seed=1"]),
        ("mlp/seed_1", [*common, *mlp, "trainer.seed=1"]),
    ]
    entries, reranks = rerank_jobs(cfg, runs, [0, 1], common)
    assert entries == {"best_of_2": [runs / "rerank" / "best_of_2" / f"seed_{s}" for s in (0, 1)]}
    assert [(job.where, job.overrides) for job in reranks] == [
        (
            "rerank/best_of_2/seed_0",
            ["checkpoint=captioner", *common, "speaker.decode=rerank", "speaker.rerank.n=2", "speaker.rerank.seed=0"],
        )
    ]
    folder = runs / "transfer" / "waves_folder"
    (export,) = export_jobs(cfg, runs)
    assert export.where == "transfer/waves_folder_export"
    assert export.overrides == [f"out={folder}", "scenes=4096", "split=shifted"]
    transfers, zero_shot = transfer_jobs(cfg, runs, rows)
    shifted, waves = (
        [runs / "transfer" / domain / "control" / f"seed_{s}" for s in (0, 1)] for domain in ("shifted", "waves")
    )
    assert transfers == [("shifted", "control", shifted), ("waves", "control", waves)]
    on_folder = ["x=1", "data=clevr", f"data.root={folder}", "data.image_size=null"]
    expected = [
        (f"transfer/shifted/control/{r.name}", [f"checkpoint={r}", "evaluation.split=shifted"]) for r in rows["control"]
    ]
    expected += [(f"transfer/waves/control/{r.name}", [f"checkpoint={r}", *on_folder]) for r in rows["control"]]
    assert [(job.where, job.overrides) for job in zero_shot] == expected
    assert not any(job.finished() for job in [*trains, *reranks, export, *zero_shot])
    fake_run(runs / "mlp" / "seed_1", 1, 0.3, 1.0, 0.5)
    (folder / "scenes").mkdir(parents=True)
    assert [job.finished() for job in trains] == [False, False, True] and export.finished()
    assert [job.where for job in row_jobs(cfg, runs, [0, 1], common)[1]] == ["mlp/seed_0", "control/seed_1"]


def test_the_listed_sweeper_runs_each_job_with_its_own_overrides_on_a_launcher(tmp_path):
    """`hydra/sweeper=listed` on submitit's local executor, from a folder outside the checkout: each listed job runs in
    its own run directory with its overrides alone (a config group among them), as the command composes them; a
    failing job leaves the others running, and the sweep ends with exit status 2 and one line naming it."""
    jobs = [
        [f"out={tmp_path / 'a'}", "scenes=2", "hydra.sweep.subdir=a"],
        [f"out={tmp_path / 'b'}", "scenes=2", "split=nope", "hydra.sweep.subdir=b"],
        [f"out={tmp_path / 'c'}", "scenes=2", "world=multi", "split=shifted", "hydra.sweep.subdir=nested/c"],
    ]
    listed, sweep = tmp_path / "jobs.json", tmp_path / "sweep"
    listed.write_text(json.dumps(jobs))
    args = ["export", "-m", "hydra/sweeper=listed", f"hydra.sweeper.jobs={listed}", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(
        [sys.executable, "-m", "listener_sub", *args, "hydra/launcher=submitit_local"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"listener-sub export: error: 1 of 3 runs failed: {sweep / 'b'} (split=nope: export splits of the embedded "
            "world, one or a list of: train, val, test, shifted, pretrain)"
        )
    )
    for job, where, split in ((jobs[0], "a", "test"), (jobs[2], "nested/c", "shifted")):
        overrides = job[:-1]
        run = sweep / where / ".hydra"
        assert OmegaConf.to_container(OmegaConf.load(run / "overrides.yaml")) == overrides
        saved = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
        assert saved == OmegaConf.to_container(composed("export", overrides))
        assert (tmp_path / where.split("/")[-1] / "scenes" / f"CLEVR_{split}_scenes.json").is_file()
    assert OmegaConf.load(sweep / "nested" / "c" / ".hydra" / "config.yaml").world.max_objects > 1  # world=multi
    assert not (tmp_path / "b").exists()


def test_every_phase_runs_on_the_launcher_the_results_command_was_given(tmp_path):
    """The launcher given to `listener-sub results` (group and settings) is written where each phase's multirun
    composes it from: the same launcher, its own settings, the sweep's folders filled in by each phase."""
    slurm = ["hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=90"]
    given = composed("results", ["hydra/launcher=submitit_slurm", *slurm], hydra=True)
    HydraConfig.instance().set_config(given)
    try:
        configs = write_launcher(tmp_path / "runs")
    finally:
        HydraConfig.instance().cfg = None
    phase = composed(
        "train",
        [f"hydra.searchpath=[file://{configs}]", f"hydra/launcher={LAUNCHER}", f"hydra.sweep.dir={tmp_path}"],
        hydra=True,
    )
    launcher = phase.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 90)
    assert launcher.submitit_folder == f"{tmp_path}/.submitit/%j"
    assert OmegaConf.to_container(launcher, resolve=False) == OmegaConf.to_container(
        given.hydra.launcher, resolve=False
    )


def listener_sub(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "listener_sub", "results", *args], capture_output=True, text=True, timeout=900, env=env
    )


def test_a_failed_run_is_named_once_its_phase_ends_and_the_finished_runs_are_kept(tmp_path):
    """A run that fails in its phase's multirun: `results` exits with status 2 and one line naming it, after the phase;
    a finished run is found and kept, not run again."""
    runs = tmp_path / "runs" / "full"
    fake_run(runs / "done" / "seed_0", 0, 0.3, 1.0, 0.5)
    stamp = (runs / "done" / "seed_0" / "summary.json").stat().st_mtime_ns
    args = [
        f"runs={tmp_path / 'runs'}",
        "seeds=[0]",
        "~rows",
        "+rows={done:['experiment=colorblind'],bad:['speaker.decode=rerank']}",  # train refuses reranked decoding
        *(f"{key}=[done]" for key in ("audience", "chosen_on", "speakers", "constrained", "ablations")),
        *(f"{key}=[]" for key in ("rerank_against", "transfer_rows", "launch_first")),
        *(f"~{key}" for key in ("rerank", "transfer", "truthful_settings")),
        *(f"+{key}={{}}" for key in ("rerank", "transfer", "truthful_settings")),
        "hydra/launcher=basic",
    ]
    done = listener_sub(*args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "results: train: 1 run(s) to the launcher: bad/seed_0\n" in done.stdout
    assert "listener-sub train: error: speaker.decode=rerank chooses evaluation captions" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"listener-sub results: error: 1 train run(s) under {runs} failed: bad/seed_0 (their errors are above); "
        "fix them and rerun: finished runs are kept"
    )
    assert (runs / "done" / "seed_0" / "summary.json").stat().st_mtime_ns == stamp


# about 150 s: two tiny rows trained with two seeds, the captioner reranked, evaluated zero-shot, all on submitit's
# local executor; then two runs again on joblib, then nothing
@pytest.mark.slow
def test_the_quick_variant_writes_the_document_of_a_tiny_sweep_on_a_launcher_and_reuses_its_runs(tmp_path, warm_cache):
    tiny = ",".join(f"'{o}'" for o in TINY)
    args = [
        f"out={tmp_path / 'docs' / 'results.md'}",
        f"runs={tmp_path / 'runs'}",
        "quick=true",
        "quick_seeds=[0,1]",
        f"quick_overrides=[{tiny},'trainer.steps=2','trainer.eval_every=0']",
        "bootstrap=200",
        "~rows",
        "+rows={colorblind:['experiment=colorblind'],no_subtraction:['experiment=no_subtraction']}",
        "~transfer",
        "+transfer={shifted:{eval:['evaluation.split=shifted']}}",
        "transfer_rows=[colorblind]",
        "constrained=[no_subtraction,colorblind]",
        "ablations=[colorblind,no_subtraction]",
        "audience=[colorblind]",
        "chosen_on=[colorblind]",
        "speakers=[colorblind]",
        "launch_first=[no_subtraction]",
        "~rerank",
        "+rerank={best_of_2:['speaker.decode=rerank','speaker.rerank.n=2']}",
        "rerank_against=[colorblind]",
        "~truthful_settings",  # a dict override merges into the default's entries: removed, then set empty
        "+truthful_settings={}",
    ]
    first = listener_sub(*args, "hydra/launcher=submitit_local")  # every run of a phase at once, each a process
    assert first.returncode == 0, first.stderr[-3000:]
    text = (tmp_path / "docs" / "results.md").read_text()
    (fixed,) = table_rows(text, "`no_subtraction`", CONSTRAINED_COLUMNS)
    assert fixed[2] == "0.000 +- 0.000" and fixed[3] == "-"  # lam 0, fixed: no bound
    runs = tmp_path / "runs" / "quick"
    for row in ("colorblind", "no_subtraction"):
        summaries = [json.loads((runs / row / f"seed_{s}" / "summary.json").read_text()) for s in (0, 1)]
        assert [s["config"]["trainer"]["seed"] for s in summaries] == [0, 1] and all(s["steps"] == 2 for s in summaries)
        gaps = np.array([s["after"]["gap"] for s in summaries])
        (cells,) = table_rows(text, f"`{row}`")
        assert cells[2] == f"{gaps.mean():.3f} +- {gaps.std(ddof=1):.3f}"
    assert (
        json.loads((runs / "no_subtraction" / "seed_0" / "summary.json").read_text())["config"]["reward"]["lam"] == 0.0
    )
    shifted = [
        json.loads((runs / "transfer" / "shifted" / "colorblind" / f"seed_{s}" / "summary.json").read_text())
        for s in (0, 1)
    ]
    (cells,) = table_rows(text, "shifted", TRANSFER_COLUMNS)
    gaps = [s["after"]["gap"] for s in shifted]
    assert cells[3] == f"{np.mean(gaps):.3f} +- {np.std(gaps, ddof=1):.3f}"
    assert "`listener-sub results quick=true hydra/launcher=submitit_local` (quick variant" in text
    assert "with hydra/launcher=submitit_local on" in text
    submitted = list((runs / ".submitit").glob("*/*_result.pkl"))
    assert len(submitted) == 8  # the 4 train runs and the 4 evaluations, each a job of submitit's
    reranked = [json.loads((runs / "rerank" / "best_of_2" / f"seed_{s}" / "summary.json").read_text()) for s in (0, 1)]
    assert [r["config"]["speaker"]["rerank"]["seed"] for r in reranked] == [0, 1] and reranked[0][
        "checkpoint"
    ] == "captioner"
    (cells,) = table_rows(text, "`best_of_2`", RERANK_COLUMNS)
    gaps = [r["after"]["gap"] for r in reranked]
    assert cells[2] == "2" and cells[4] == f"{np.mean(gaps):.3f} +- {np.std(gaps, ddof=1):.3f}"
    assert table_rows(text, "`colorblind` (RL)", RERANK_COLUMNS) and table_rows(
        text, "`no_subtraction`", ABLATION_COLUMNS
    )

    stamp = (runs / "colorblind" / "seed_0" / "summary.json").stat().st_mtime_ns
    for lost in (runs / "colorblind" / "seed_1", runs / "transfer" / "shifted" / "colorblind" / "seed_1"):
        shutil.rmtree(lost)
    again = listener_sub(*args, "hydra.launcher.n_jobs=2")  # joblib, the default launcher: the two lost runs only
    assert again.returncode == 0, again.stderr[-3000:]
    assert "results: train: 1 run(s) to the launcher: colorblind/seed_1\n" in again.stdout
    assert "results: eval: 1 run(s) to the launcher: transfer/shifted/colorblind/seed_1\n" in again.stdout
    assert (runs / "colorblind" / "seed_0" / "summary.json").stat().st_mtime_ns == stamp
    assert "`listener-sub results quick=true hydra.launcher.n_jobs=2`" in (tmp_path / "docs" / "results.md").read_text()
    last = listener_sub(*args)
    assert last.returncode == 0 and "to the launcher" not in last.stdout, last.stderr[-3000:]


def test_the_any_speaker_section_names_each_kind_of_speaker(tmp_path):
    """The "any speaker" section: each row's gap against the fixed oracle, what it names, and what speaks."""
    speakers = {
        "colorblind": {"kind": "adapter", "vision": {"model": "ls-rn-tiny-64"}, "adapter": {"kind": "perceiver"}},
        "colorblind_vlm": {
            "kind": "vlm",
            "name": None,
            "lora_r": 8,
            "target_modules": ["q_proj", "v_proj"],
            "train": {"vision_model": "ls-vit-tiny-64", "text_layers": 2, "text_width": 128},
        },  # fmt: skip
    }
    rows = {name: [tmp_path / name / f"seed_{s}" for s in range(2)] for name in speakers}
    for name, paths in rows.items():
        for seed, path in enumerate(paths):
            fake_run(path, seed, 0.5 if name == "colorblind" else 0.4, 0.99, 0.52)
            summary = json.loads((path / "summary.json").read_text())
            summary["config"]["speaker"] |= speakers[name]
            (path / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "results.md"
    write_results(out, rows, [], ["# Results"], 200, speakers=list(speakers))
    section = out.read_text().split("## Any speaker", 1)[1]
    (vlm,) = table_rows(section, "`colorblind_vlm`", AUDIENCE_COLUMNS)
    gaps = [json.loads((p / "summary.json").read_text())["after"]["gap"] for p in rows["colorblind_vlm"]]
    assert vlm[2] == "0.520 (color)" and vlm[3] == f"{np.mean(gaps):.3f} +- {np.std(gaps, ddof=1):.3f}"
    assert "- `colorblind`: the adapter speaker: CLIP ls-rn-tiny-64 -> perceiver adapter -> LM" in section
    assert (
        "- `colorblind_vlm`: the embedded VLM -- a LLaVA of the locally trained CLIP ls-vit-tiny-64 (tower frozen) "
        "and a 2-layer, 128-wide Llama trained by captioning --, LoRA r 8 on q_proj, v_proj"
    ) in section

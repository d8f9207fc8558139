"""`listener-sub results [quick=true] [out=docs/results.md] [runs=DIR] [hydra/launcher=...]`: every run behind the
results document, then it.

Each row (`rows.<name>`: train overrides) runs once per RL seed (`trainer.seed`) into <runs>/<row>/seed_<s>/; each
rerank entry (`rerank.<name>`: eval overrides) evaluates the captioning speaker (`listener-sub eval
checkpoint=captioner`, inference-time subtraction when it sets speaker.decode=rerank) once per seed
(`speaker.rerank.seed`) into <runs>/rerank/<name>/seed_<s>/; each transfer domain (`transfer.<name>`: eval overrides on
held-out data, the world's `shifted` split or a folder the command exports first) evaluates the runs of every row of
`transfer_rows` zero-shot with `listener-sub eval` into <runs>/transfer/<name>/<row>/seed_<s>/. A finished run is found
and reused, so an interrupted sweep continues where it stopped.

The runs go to Hydra's launcher in three phases, each one multirun of every run it lacks (`listener-sub train -m`,
`export -m`, `eval -m` with the listed sweeper, `hydra_plugins.listener_sub_sweeper`): the launcher is the one this
command is given (`hydra/launcher=...`, `hydra.launcher.*`; by default joblib: `hydra.launcher.n_jobs` runs side by
side, each with cores // n_jobs threads), so `hydra/launcher=submitit_slurm` spreads the runs over a SLURM cluster.
The train runs are listed seed by seed (a row's seeds side by side would wait on each other while the first builds the
models they share), the rows of `launch_first` (the slowest) first in each, so that no core idles at the end.
Then the document and its PNG plots are written from those run directories alone (`listener_sub.report.results`).
`quick=true` is the same sweep with `quick_overrides` and `quick_seeds`, into <runs>/quick/, for checking the pipeline
in minutes.

`listener-sub results readme=README.md` runs nothing: it rewrites the README's headline block (between
`<!-- results:headline -->` and `<!-- /results:headline -->`) from the document at `out`
(`listener_sub.report.results.headline`), so the README's table is always the document's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from listener_sub.cli import hydra_command
from listener_sub.errors import UserError
from listener_sub.report.results import finished, replace_headline, write_results
from listener_sub.report.tables import show

EXPORT_SCENES = 4096  # scenes of an exported transfer folder (the game's pool)
SWEEP = ".sweep"  # under the runs directory: each phase's list of jobs and the launcher they run on
LAUNCHER = "listener_sub_results"  # the launcher's config there, as an option of hydra/launcher


@dataclass
class Job:
    """One run of the sweep: where it goes, its command-line overrides, and whether it is done."""

    where: str  # its run directory under the runs directory (hydra.sweep.subdir)
    overrides: list[str]
    finished: Callable[[], bool]


def seed_jobs(
    root: Path, runs: Path, seed_key: str, seeds: list[int], overrides: list[str]
) -> tuple[list[Path], dict[int, Job]]:
    """The run directories <root>/seed_<s>/ (in seed order) and a job for each one not finished, `seed_key` set, by
    seed."""
    paths, jobs = [root / f"seed_{seed}" for seed in seeds], {}
    for seed, path in zip(seeds, paths):
        if not finished(path):
            where = str(path.relative_to(runs))
            jobs[seed] = Job(where, [*overrides, f"{seed_key}={seed}"], partial(finished, path))
    return paths, jobs


def row_jobs(
    cfg: DictConfig, runs: Path, seeds: list[int], common: list[str]
) -> tuple[dict[str, list[Path]], list[Job]]:
    """Every row's run directories (in seed order) and the train runs of its missing seeds, in launch order: seed by
    seed, since a row's seeds side by side would wait on each other for the models they share and the first builds;
    in each seed the rows of `launch_first` (the slowest) first, so that no core waits on one of them at the end."""
    rows, missing = {}, {}
    for name, overrides in cfg.rows.items():
        rows[name], missing[name] = seed_jobs(runs / name, runs, "trainer.seed", seeds, [*common, *overrides])
    order = [*cfg.launch_first, *(name for name in cfg.rows if name not in cfg.launch_first)]
    return rows, [missing[name][seed] for seed in seeds for name in order if seed in missing[name]]


def rerank_jobs(
    cfg: DictConfig, runs: Path, seeds: list[int], common: list[str]
) -> tuple[dict[str, list[Path]], list[Job]]:
    """Every rerank entry's evaluation directories (one per seed, as speaker.rerank.seed) and the evaluations of the
    missing ones."""
    entries, jobs = {}, []
    for name, overrides in cfg.rerank.items():
        args = ["checkpoint=captioner", *common, *overrides]
        entries[name], missing = seed_jobs(runs / "rerank" / name, runs, "speaker.rerank.seed", seeds, args)
        jobs += missing.values()
    return entries, jobs


def export_jobs(cfg: DictConfig, runs: Path) -> list[Job]:
    """Export each folder a transfer entry names and the sweep lacks."""
    jobs = []
    for name, entry in cfg.transfer.items():
        folder = runs / "transfer" / f"{name}_folder"
        if entry.get("export") and not (folder / "scenes").is_dir():
            args = [f"out={folder}", f"scenes={EXPORT_SCENES}", *entry.export]
            where = str(folder.relative_to(runs)) + "_export"
            jobs.append(Job(where, args, (folder / "scenes").is_dir))
    return jobs


def transfer_jobs(
    cfg: DictConfig, runs: Path, rows: dict[str, list[Path]]
) -> tuple[list[tuple[str, str, list[Path]]], list[Job]]:
    """(domain, row, each run's evaluation directory) for every transfer domain and row of `transfer_rows`, and the
    zero-shot evaluations of them it lacks."""
    transfers, jobs = [], []
    for name, entry in cfg.transfer.items():
        overrides = list(entry.eval)
        if entry.get("export"):
            overrides += ["data=clevr", f"data.root={runs / 'transfer' / f'{name}_folder'}", "data.image_size=null"]
        for row in cfg.transfer_rows:
            out = []
            for run in rows[row]:
                target = runs / "transfer" / name / row / run.name
                if not finished(target, needs_boards=False):
                    done = partial(finished, target, needs_boards=False)
                    jobs.append(Job(str(target.relative_to(runs)), [f"checkpoint={run}", *overrides], done))
                out.append(target)
            transfers.append((name, row, out))
    return transfers, jobs


def write_launcher(runs: Path) -> Path:
    """The launcher this command was given (hydra/launcher and hydra.launcher.*), written as an option of
    hydra/launcher in a config folder under `runs`, for every phase's multirun to run on; returns the folder."""
    folder = runs / SWEEP
    option = folder / "hydra" / "launcher" / f"{LAUNCHER}.yaml"
    option.parent.mkdir(parents=True, exist_ok=True)
    option.write_text(OmegaConf.to_yaml(HydraConfig.get().launcher), encoding="utf-8")
    return folder.resolve()


def launch(command: str, jobs: list[Job], runs: Path, configs: Path) -> None:
    """Run the jobs as one multirun of `listener-sub COMMAND` on the launcher at `configs`, each job's run in
    <runs>/<job.where>/; UserError naming the runs left unfinished once all have ended."""
    if not jobs:
        return
    listed = configs / f"{command}.json"
    listed.write_text(json.dumps([[*job.overrides, f"hydra.sweep.subdir={job.where}"] for job in jobs], indent=1))
    show(f"results: {command}: {len(jobs)} run(s) to the launcher: {', '.join(job.where for job in jobs)}")
    start = time.perf_counter()
    args = [
        "-m",
        "hydra/sweeper=listed",
        f"hydra.sweeper.jobs={listed}",
        f"hydra.sweep.dir={runs}",
        f"hydra.searchpath=[file://{configs}]",
        f"hydra/launcher={LAUNCHER}",
    ]
    subprocess.run([sys.executable, "-m", "listener_sub", command, *args])
    failed = [job.where for job in jobs if not job.finished()]
    wall = time.perf_counter() - start
    show(f"results: {command}: {len(jobs) - len(failed)} of {len(jobs)} run(s) finished in {wall:.0f} s")
    if failed:
        raise UserError(
            f"{len(failed)} {command} run(s) under {runs} failed: {', '.join(failed)} (their errors are above); "
            "fix them and rerun: finished runs are kept"
        )


def launcher_text() -> tuple[str, str]:
    """The launcher as the document's header states it: (this command's launcher overrides, in words)."""
    hydra = HydraConfig.get()
    given = " ".join(o for o in hydra.overrides.hydra if o.startswith(("hydra/launcher=", "hydra.launcher.")))
    choice = hydra.runtime.choices["hydra/launcher"]
    if choice != "joblib":
        return given, f"hydra/launcher={choice}"
    from joblib import effective_n_jobs

    return given, f"{effective_n_jobs(hydra.launcher.n_jobs)} run(s) at a time (hydra/launcher=joblib)"


def check_sweep(cfg: DictConfig, seeds: list[int]) -> None:
    """What the sweep names exists, before any run starts."""
    if not cfg.rows:
        raise UserError("rows is empty; name at least one row (rows.NAME=[overrides])")
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds={seeds}: give distinct RL seeds, at least one")
    sections = ("constrained", "ablations", "rerank_against", "transfer_rows", "audience", "chosen_on", "speakers")
    for key in (*sections, "launch_first"):
        unknown = [name for name in cfg[key] if name not in cfg.rows]
        if unknown:
            raise UserError(f"{key} names {unknown}, which are not rows; choose from: {', '.join(cfg.rows)}")
    named = [*cfg.rows, *cfg.rerank]
    unknown = [name for pair in cfg.truthful_settings.items() for name in pair if name not in named]
    if unknown:
        raise UserError(
            f"truthful_settings names {unknown}, which are neither rows nor rerank entries; "
            f"choose from: {', '.join(named)}"
        )
    if cfg.transfer and not cfg.transfer_rows:
        raise UserError(
            "transfer names domains but transfer_rows is empty; "
            "name the rows to evaluate there (transfer_rows=[colorblind])"
        )


def write_readme(readme: Path, document: Path) -> None:
    """Rewrite the headline block of `readme` from the results document; UserError naming what is missing."""
    try:
        text, results = readme.read_text(encoding="utf-8"), document.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(
            f"{error.filename} is unreadable ({error.strerror}); pass readme=README.md out=docs/results.md"
        ) from None
    try:
        updated = replace_headline(text, results)
    except ValueError as error:
        raise UserError(f"readme={readme}, out={document}: {error}") from None
    readme.write_text(updated, encoding="utf-8")
    show(f"results: wrote the headline block of {readme} from {document}")


@hydra_command("results")
def main(cfg: DictConfig) -> None:
    """Run (or find) every run of the sweep, then write the document and its plots; with readme=, only rewrite the
    README's headline block from the document."""
    start = time.perf_counter()
    if cfg.readme:
        write_readme(Path(cfg.readme).expanduser(), Path(cfg.out).expanduser())
        return
    seeds = [int(s) for s in (cfg.quick_seeds if cfg.quick else cfg.seeds)]
    check_sweep(cfg, seeds)
    runs = Path(cfg.runs).expanduser() / ("quick" if cfg.quick else "full")
    common = [*cfg.overrides, *(cfg.quick_overrides if cfg.quick else [])]
    if cfg.cache_dir:
        common.append(f"cache_dir={cfg.cache_dir}")
    configs = write_launcher(runs)
    rows, trains = row_jobs(cfg, runs, seeds, common)
    reranks, evals = rerank_jobs(cfg, runs, seeds, common)
    launch("train", trains, runs, configs)
    launch("export", export_jobs(cfg, runs), runs, configs)
    transfers, zero_shot = transfer_jobs(cfg, runs, rows)
    launch("eval", [*evals, *zero_shot], runs, configs)
    wall = time.perf_counter() - start
    variant = "quick" if cfg.quick else "full"
    given, launcher = launcher_text()
    command = " ".join(["listener-sub results", *(["quick=true"] if cfg.quick else []), *([given] if given else [])])
    header = [
        "# Results",
        "",
        f"Written by `{command}` ({variant} variant, "
        f"{datetime.now(timezone.utc):%Y-%m-%d}): every number below is read from the run directories under `{runs}`. "
        f"This generation took {wall:.0f} s with {launcher} on {os.cpu_count()} cores, "
        "runs found finished "
        "included (each run's own wall time is in its summary.json).",
        "",
        "Settings of every run: the embedded default (`listener-sub train` with the row's overrides)"
        + (f", plus `{' '.join(common)}`" if common else "")
        + f"; RL seeds (`trainer.seed`) {seeds}.",
        "",
        "| row | overrides |",
        "| --- | --- |",
        *[f"| `{name}` | `{' '.join(overrides) or '(none)'}` |" for name, overrides in cfg.rows.items()],
    ]
    sections = {
        "constrained": list(cfg.constrained),
        "ablations": list(cfg.ablations),
        "rerank_against": list(cfg.rerank_against),
        "audience": list(cfg.audience),
        "chosen_on": list(cfg.chosen_on),
        "speakers": list(cfg.speakers),
    }
    write_results(
        Path(cfg.out).expanduser(),
        rows,
        transfers,
        header,
        int(cfg.bootstrap),
        reranks=reranks,
        truthful_settings=dict(cfg.truthful_settings),
        **sections,
    )
    show(f"results: wrote {cfg.out} in {time.perf_counter() - start:.0f} s")

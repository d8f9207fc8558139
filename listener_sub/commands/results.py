"""`listener-sub results [quick=true] [jobs=2] [out=docs/results.md] [runs=DIR]`: every run behind the results
document, then it.

Each row (`rows.<name>`: train overrides) runs once per RL seed (`trainer.seed`) as a Hydra multirun of `listener-sub
train` into <runs>/<row>/seed_<s>/; each rerank entry (`rerank.<name>`: eval overrides) evaluates the captioning speaker
(`listener-sub eval checkpoint=captioner`, inference-time subtraction when it sets speaker.decode=rerank) once per seed
(`speaker.rerank.seed`) into <runs>/rerank/<name>/seed_<s>/; each transfer domain (`transfer.<name>`: eval overrides on
held-out data, the world's `shifted` split or a folder the command exports first) evaluates the runs of every row of
`transfer_rows` zero-shot with `listener-sub eval` into <runs>/transfer/<name>/<row>/seed_<s>/. A finished run is found
and reused, so an interrupted sweep continues where it stopped.
`jobs` child commands run at once, each with cores // jobs torch threads and its output in a .log beside its runs. Then
the document and its PNG plots are written from those run directories alone (`listener_sub.report.results`).
`quick=true` is the same sweep with `quick_overrides` and `quick_seeds`, into <runs>/quick/, for checking the pipeline
in minutes.

`listener-sub results readme=README.md` runs nothing: it rewrites the README's headline block (between
`<!-- results:headline -->` and `<!-- /results:headline -->`) from the document at `out`
(`listener_sub.report.results.headline`), so the README's table is always the document's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig

from listener_sub.cli import hydra_command
from listener_sub.errors import UserError
from listener_sub.report.results import finished, replace_headline, write_results
from listener_sub.report.tables import show

EXPORT_SCENES = 4096  # scenes of an exported transfer folder (the game's pool)


@dataclass
class Job:
    """One child `listener-sub` command of the sweep."""

    name: str  # what the progress lines call it
    args: list[str]  # the command and its overrides
    log: Path  # its output, when jobs run side by side


def run_jobs(jobs: list[Job], parallel: int) -> None:
    """Run the child commands, `parallel` at a time, each with cores // parallel torch threads. One at a time, a child's
    output is shown; side by side, it goes to its log. A failure is reported once every started child has ended."""
    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = (
        dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if parallel > 1
        else dict(os.environ)
    )

    def run(job: Job) -> tuple[Job, int]:
        start = time.perf_counter()
        show(f"results: {job.name}: started")
        command = [sys.executable, "-m", "listener_sub", *job.args]
        if parallel == 1:
            code = subprocess.run(command, env=env).returncode
        else:
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "w") as log:
                code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        outcome = "finished" if code == 0 else f"FAILED (exit {code})"
        show(f"results: {job.name}: {outcome} in {time.perf_counter() - start:.0f} s")
        return job, code

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        failed = [job for job, code in pool.map(run, jobs) if code != 0]
    if failed:
        where = ", ".join(f"{job.name} ({job.log})" if parallel > 1 else job.name for job in failed)
        raise UserError(f"{len(failed)} run(s) failed: {where}; fix them and rerun: finished runs are kept")


def _seed_dirs(root: Path, seeds: list[int]) -> list[Path]:
    return [root / f"seed_{seed}" for seed in seeds]


def _sweep(root: Path, seed_key: str, seeds: list[int]) -> list[str]:
    """The multirun overrides that put each seed's run in <root>/seed_<s>/."""
    return [
        f"hydra.sweep.dir={root}",
        f"hydra.sweep.subdir=seed_${{{seed_key}}}",
        f"{seed_key}={','.join(map(str, seeds))}",
    ]


def row_jobs(
    cfg: DictConfig, runs: Path, seeds: list[int], common: list[str]
) -> tuple[dict[str, list[Path]], list[Job]]:
    """Every row's run directories (in seed order) and the multiruns that train its missing seeds."""
    rows, jobs = {}, []
    for name, overrides in cfg.rows.items():
        root = runs / name
        missing = [seed for seed, path in zip(seeds, _seed_dirs(root, seeds)) if not finished(path)]
        if missing:
            show(f"results: {name}: training seeds {missing} into {root}")
            jobs.append(
                Job(
                    name,
                    ["train", "-m", *common, *overrides, *_sweep(root, "trainer.seed", missing)],
                    root.with_suffix(".log"),
                )
            )
        rows[name] = _seed_dirs(root, seeds)
    return rows, jobs


def rerank_jobs(
    cfg: DictConfig, runs: Path, seeds: list[int], common: list[str]
) -> tuple[dict[str, list[Path]], list[Job]]:
    """Every rerank entry's evaluation directories (one per seed, as speaker.rerank.seed) and the multiruns of the
    missing ones."""
    entries, jobs = {}, []
    for name, overrides in cfg.rerank.items():
        root = runs / "rerank" / name
        missing = [seed for seed, path in zip(seeds, _seed_dirs(root, seeds)) if not finished(path)]
        if missing:
            show(f"results: rerank {name}: evaluating seeds {missing} into {root}")
            args = [
                "eval",
                "-m",
                "checkpoint=captioner",
                *common,
                *overrides,
                *_sweep(root, "speaker.rerank.seed", missing),
            ]
            jobs.append(Job(f"rerank {name}", args, root.with_suffix(".log")))
        entries[name] = _seed_dirs(root, seeds)
    return entries, jobs


def export_jobs(cfg: DictConfig, runs: Path) -> list[Job]:
    """Export each folder a transfer entry names and the sweep lacks."""
    jobs = []
    for name, entry in cfg.transfer.items():
        folder = runs / "transfer" / f"{name}_folder"
        if entry.get("export") and not (folder / "scenes").is_dir():
            args = [
                "export",
                f"out={folder}",
                f"scenes={EXPORT_SCENES}",
                *entry.export,
                f"hydra.run.dir={folder}_export",
            ]
            jobs.append(Job(f"export {name}", args, folder.with_suffix(".log")))
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
                    args = ["eval", f"checkpoint={run}", *overrides, f"hydra.run.dir={target}"]
                    jobs.append(Job(f"transfer {name} {row} {run.name}", args, target.with_suffix(".log")))
                out.append(target)
            transfers.append((name, row, out))
    return transfers, jobs


def check_sweep(cfg: DictConfig, seeds: list[int]) -> None:
    """What the sweep names exists, before any run starts."""
    if not cfg.rows:
        raise UserError("rows is empty; name at least one row (rows.NAME=[overrides])")
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds={seeds}: give distinct RL seeds, at least one")
    if int(cfg.jobs) < 1:
        raise UserError(f"jobs={cfg.jobs}: run at least one child command at a time")
    for key in ("constrained", "ablations", "rerank_against", "transfer_rows", "audience", "chosen_on", "speakers"):
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
    rows, trains = row_jobs(cfg, runs, seeds, common)
    reranks, evals = rerank_jobs(cfg, runs, seeds, common)
    run_jobs([*trains, *evals, *export_jobs(cfg, runs)], int(cfg.jobs))
    transfers, zero_shot = transfer_jobs(cfg, runs, rows)
    run_jobs(zero_shot, int(cfg.jobs))
    wall = time.perf_counter() - start
    variant = "quick" if cfg.quick else "full"
    header = [
        "# Results",
        "",
        f"Written by `listener-sub results{' quick=true' if cfg.quick else ''} jobs={cfg.jobs}` ({variant} variant, "
        f"{datetime.now(timezone.utc):%Y-%m-%d}): every number below is read from the run directories under `{runs}`. "
        f"This generation took {wall:.0f} s with {cfg.jobs} run(s) at a time on {os.cpu_count()} cores, "
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

"""`listener-sub results [quick=true] [out=docs/results.md] [runs=DIR]`: every run behind the results document, then it.

Each row (`rows.<name>`: train overrides) runs once per RL seed (`trainer.seed`) as a Hydra multirun of `listener-sub
train` into <runs>/<row>/seed_<s>/; each transfer entry evaluates a row's runs zero-shot with `listener-sub eval` on
held-out data (the world's `shifted` split, or a folder the command exports first) into <runs>/transfer/<name>/seed_<s>/.
A finished run is found and reused, so an interrupted sweep continues where it stopped. Then the document and its PNG
plots are written from those run directories alone (`listener_sub.report.results`). `quick=true` is the same sweep with
`quick_overrides` and `quick_seeds`, into <runs>/quick/, for checking the pipeline in minutes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig

from listener_sub.cli import hydra_command
from listener_sub.errors import UserError
from listener_sub.report.results import finished, write_results

EXPORT_SCENES = 4096  # scenes of an exported transfer folder (the game's pool)


def _listener_sub(*args: str) -> None:
    """Run a listener-sub command in a child process (its output shown); a failure stops the sweep."""
    result = subprocess.run([sys.executable, "-m", "listener_sub", *args], env=dict(os.environ))
    if result.returncode != 0:
        raise UserError(f"`listener-sub {' '.join(args[:3])} ...` failed (exit {result.returncode}); fix it and rerun: finished runs are kept")


def _seed_dirs(root: Path, seeds: list[int]) -> list[Path]:
    return [root / f"seed_{seed}" for seed in seeds]


def run_rows(cfg: DictConfig, runs: Path, seeds: list[int], common: list[str]) -> dict[str, list[Path]]:
    """Train every row's missing seeds (one multirun a row); returns row -> its run directories, in seed order."""
    rows = {}
    for name, overrides in cfg.rows.items():
        root = runs / name
        missing = [seed for seed, path in zip(seeds, _seed_dirs(root, seeds)) if not finished(path)]
        if missing:
            print(f"results: {name}: training seeds {missing} into {root}", flush=True)
            sweep = [f"hydra.sweep.dir={root}", "hydra.sweep.subdir=seed_${trainer.seed}", f"trainer.seed={','.join(map(str, missing))}"]
            _listener_sub("train", "-m", *common, *overrides, *sweep)
        rows[name] = _seed_dirs(root, seeds)
    return rows


def run_transfers(cfg: DictConfig, runs: Path, rows: dict[str, list[Path]], common: list[str]) -> dict[str, tuple[str, list[Path]]]:
    """Evaluate each transfer entry's row zero-shot (exporting its folder first when it names one)."""
    transfers = {}
    for name, entry in cfg.transfer.items():
        if entry.row not in rows:
            raise UserError(f"transfer.{name}.row={entry.row} is not a row; choose one of: {', '.join(rows)}")
        overrides = list(entry.eval)
        if entry.get("export"):
            folder = runs / "transfer" / f"{name}_folder"
            if not (folder / "scenes").is_dir():
                _listener_sub("export", f"out={folder}", f"scenes={EXPORT_SCENES}", *entry.export, f"hydra.run.dir={folder}_export")
            overrides += ["data=clevr", f"data.root={folder}", "data.image_size=null"]
        out = []
        for run in rows[entry.row]:
            target = runs / "transfer" / name / run.name
            if not finished(target, needs_boards=False):
                _listener_sub("eval", f"checkpoint={run}", *overrides, f"hydra.run.dir={target}")
            out.append(target)
        transfers[name] = (entry.row, out)
    return transfers


@hydra_command("results")
def main(cfg: DictConfig) -> None:
    """Run (or find) every run of the sweep, then write the document and its plots."""
    start = time.perf_counter()
    if not cfg.rows:
        raise UserError("rows is empty; name at least one row (rows.NAME=[overrides])")
    seeds = [int(s) for s in (cfg.quick_seeds if cfg.quick else cfg.seeds)]
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds={seeds}: give distinct RL seeds, at least one")
    runs = Path(cfg.runs).expanduser() / ("quick" if cfg.quick else "full")
    common = [*cfg.overrides, *(cfg.quick_overrides if cfg.quick else [])]
    if cfg.cache_dir:
        common.append(f"cache_dir={cfg.cache_dir}")
    unknown = [name for name in cfg.constrained if name not in cfg.rows]
    if unknown:
        raise UserError(f"constrained names {unknown}, which are not rows; choose from: {', '.join(cfg.rows)}")
    rows = run_rows(cfg, runs, seeds, common)
    transfers = run_transfers(cfg, runs, rows, common)
    wall = time.perf_counter() - start
    variant = "quick" if cfg.quick else "full"
    header = [
        "# Results",
        "",
        f"Written by `listener-sub results{' quick=true' if cfg.quick else ''}` ({variant} variant, "
        f"{datetime.now(timezone.utc):%Y-%m-%d}): every number below is read from the run directories under `{runs}`. "
        f"This generation took {wall:.0f} s, runs found finished included (each run's own wall time is in its summary.json).",
        "",
        "Settings of every run: the embedded default (`listener-sub train` with the row's overrides)"
        + (f", plus `{' '.join(common)}`" if common else "")
        + f"; RL seeds (`trainer.seed`) {seeds}.",
        "",
        "| row | overrides |",
        "| --- | --- |",
        *[f"| `{name}` | `{' '.join(overrides) or '(none)'}` |" for name, overrides in cfg.rows.items()],
    ]
    write_results(Path(cfg.out).expanduser(), rows, transfers, header, int(cfg.bootstrap), constrained=list(cfg.constrained))
    print(f"results: wrote {cfg.out} in {time.perf_counter() - start:.0f} s")

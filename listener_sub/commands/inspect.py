"""`listener-sub inspect run=DIR [boards=32] [format=html|text]`: qualitative inspection of a train run.

Plays the run's captioning speaker (base), its latest checkpoint (trained) and the per-board oracle on held-out
boards and writes report.html (format=html, one self-contained file) into this command's run directory, or
prints the boards as a table (format=text).
"""
from __future__ import annotations

import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console

from listener_sub.cli import hydra_command
from listener_sub.commands.train import metrics_table
from listener_sub.errors import UserError
from listener_sub.report.gather import gather
from listener_sub.report.page import render_html
from listener_sub.report.text import boards_table
from listener_sub.world import SPLITS

FORMATS = ("html", "text")


@hydra_command("inspect")
def main(cfg: DictConfig) -> None:
    """Gather the run's boards, then write report.html or print the table."""
    start = time.perf_counter()
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format} is not one of: {', '.join(FORMATS)}")
    if cfg.split not in SPLITS:
        raise UserError(f"split={cfg.split} is not one of: {', '.join(SPLITS)}")
    if cfg.boards < 1:
        raise UserError(f"boards={cfg.boards}; show at least one board (boards=32)")
    settings = {key: cfg.get(key) for key in ("cache_dir", "device", "threads")}
    report = gather(Path(cfg.run).expanduser(), int(cfg.boards), cfg.split, int(cfg.seed), settings)
    if cfg.format == "text":
        console = Console()
        console.print(metrics_table(f"listener-sub inspect {report.run}", {k: report.summary[k] for k in ("before", "after")}, report.summary))
        console.print(boards_table(report))
        return
    path = Path(HydraConfig.get().runtime.output_dir) / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    print(f"wrote {path} ({len(report.boards)} boards, {time.perf_counter() - start:.1f} s)")

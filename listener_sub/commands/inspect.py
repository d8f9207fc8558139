"""`listener-sub inspect run=DIR [boards=32] [format=html|text]`: qualitative inspection of a train run.

Plays the run's captioning speaker (base), its latest checkpoint (trained) and the per-board oracle on held-out
boards of the run's own game (its saved config, this command's overrides on top) and writes report.html (format=html, one self-contained file) into this command's run directory, or
prints the boards as a table (format=text).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console

from listener_sub.cli import hydra_command
from listener_sub.errors import UserError
from listener_sub.report.gather import gather
from listener_sub.report.page import render_html
from listener_sub.report.tables import metrics_table
from listener_sub.report.text import boards_table

FORMATS = ("html", "text")
OWN_KEYS = (
    "command",
    "run",
    "boards",
    "format",
    "threads",
    "debug",
)  # this command's settings; other overrides apply to the run's config


@hydra_command("inspect")
def main(cfg: DictConfig) -> None:
    """Gather the run's boards, then write report.html or print the table."""
    start = time.perf_counter()
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format} is not one of: {', '.join(FORMATS)}")
    if cfg.boards < 1:
        raise UserError(f"boards={cfg.boards}; show at least one board (boards=32)")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    report = gather(cfg, Path(cfg.run).expanduser(), int(cfg.boards), OWN_KEYS)
    if cfg.format == "text":
        console = Console()
        console.print(
            metrics_table(
                f"listener-sub inspect {report.run}",
                {k: report.summary[k] for k in ("before", "after")},
                report.summary,
            )
        )
        console.print(boards_table(report))
        return
    path = Path(HydraConfig.get().runtime.output_dir) / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    print(f"wrote {path} ({len(report.boards)} boards, {time.perf_counter() - start:.1f} s)")

"""`listener-sub inspect run=DIR [boards=32] [format=html|text|png]`: qualitative inspection of a train run.

Plays the run's captioning speaker (base), its latest checkpoint (trained) and the per-board oracle on held-out
boards of the run's own game (its saved config, this command's overrides on top) and writes report.html (format=html,
one self-contained file) into this command's run directory, prints the boards as a table (format=text), or draws the
first board as board.png (format=png: one row per listener, the board as it perceives it, the target framed, each
listener's pick after the base and the trained caption).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from listener_sub.cli import hydra_command
from listener_sub.errors import UserError
from listener_sub.report.figure import write_board_png
from listener_sub.report.gather import gather
from listener_sub.report.page import render_html
from listener_sub.report.tables import metrics_table, show
from listener_sub.report.text import boards_table

FORMATS = ("html", "text", "png")
FILES = {"html": "report.html", "png": "board.png"}  # what each format writes into the run dir (out= elsewhere)
OWN_KEYS = (
    "command",
    "run",
    "checkpoint",
    "boards",
    "format",
    "out",
    "threads",
    "debug",
)  # this command's settings; other overrides apply to the run's config


@hydra_command("inspect")
def main(cfg: DictConfig) -> None:
    """Gather the run's boards, then write report.html or board.png, or print the table."""
    start = time.perf_counter()
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format} is not one of: {', '.join(FORMATS)}")
    if cfg.boards < 1:
        raise UserError(f"boards={cfg.boards}; show at least one board (boards=32)")
    if cfg.out is not None and cfg.format == "text":
        raise UserError(f"out={cfg.out}: format=text prints to the terminal; name a file with format=html or png")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    report = gather(cfg, Path(cfg.run).expanduser(), int(cfg.boards), OWN_KEYS, checkpoint=cfg.checkpoint)
    if cfg.format == "text":
        show(
            metrics_table(
                f"listener-sub inspect {report.run}",
                {k: report.summary[k] for k in ("before", "after")},
                report.summary,
            ),
            boards_table(report),
        )
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = Path(cfg.out).expanduser() if cfg.out is not None else run_dir / FILES[cfg.format]
    if cfg.format == "png":
        write_board_png(report, path)
        show(f"wrote {path} (board 0 of {len(report.boards)}, {time.perf_counter() - start:.1f} s)")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    show(f"wrote {path} ({len(report.boards)} boards, {time.perf_counter() - start:.1f} s)")

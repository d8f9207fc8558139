"""`listener-sub eval checkpoint=PATH`: the full metric set of a trained speaker on the run's evaluation boards.

PATH: a checkpoint directory (RUN/checkpoints/step_N), a train run directory (its latest checkpoint) or an
adapter .safetensors file. A checkpoint inside a train run is evaluated in that run's own game: the run's saved
config, with this command's overrides on top. Writes summary.json ("after", the oracle gaps, wall_s, config) to the
run directory and returns the gap.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console

from listener_sub.assembly import Assembly
from listener_sub.cache import ArtifactCache
from listener_sub.cli import hydra_command
from listener_sub.commands.common import adapter_file, eval_config, from_run, run_of, run_spec, trainer_config
from listener_sub.evaluation import evaluate_speaker, held_out_boards
from listener_sub.files import write_json
from listener_sub.oracle import oracle_gaps
from listener_sub.report.tables import metrics_table

OWN_KEYS = ("command", "checkpoint", "threads", "debug")  # this command's settings; every other override applies to the run's config


@hydra_command("eval")
def main(cfg: DictConfig) -> float:
    """Evaluate the checkpoint's speaker (KL against the captioning adapter) and the oracle speakers on the same boards."""
    start = time.perf_counter()
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    path = adapter_file(cfg.checkpoint)
    run = run_of(path)
    if run is not None:
        cfg = from_run(cfg, run, OWN_KEYS)
    rl_cfg, eval_cfg, spec = trainer_config(cfg), eval_config(cfg), run_spec(cfg)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    models = Assembly(spec, ArtifactCache(cfg.get("cache_dir")))
    models.build_clips()
    game = models.game()
    speaker = models.speaker()
    reference = speaker.adapter  # the captioning adapter
    speaker.load_adapter(path)
    boards = held_out_boards(game, eval_cfg)
    after = evaluate_speaker(speaker, game, boards, reference, eval_cfg.seed, rl_cfg.max_new_tokens)
    oracle = oracle_gaps(game, boards, torch.Generator(device="cpu").manual_seed(eval_cfg.seed))
    summary: dict[str, Any] = {"after": after, **oracle, "checkpoint": str(path), "run": str(run) if run else None}
    summary |= {"wall_s": time.perf_counter() - start, "config": cfg}
    write_json(out_dir / "summary.json", summary)
    Console().print(metrics_table(f"listener-sub eval {path}", {"after": after}, oracle))
    print(f"wrote {out_dir / 'summary.json'}")
    return float(after["gap"])

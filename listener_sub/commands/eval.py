"""`listener-sub eval checkpoint=PATH [data=NAME data.root=DIR | evaluation.split=SPLIT] [speaker.decode=rerank]`: the full
metric set of a trained speaker on the run's evaluation boards, or zero-shot on other data.

PATH: a checkpoint directory (RUN/checkpoints/step_N), a train run directory (its latest checkpoint), an adapter
.safetensors file, or `captioner`: the game's captioning adapter itself (the RL reference, before any RL). A checkpoint
inside a train run is evaluated in that run's own game: the run's saved config, with this command's overrides on top;
`data=...` there names other data to evaluate on (the run's evaluation.data; its models stay). speaker.decode=rerank
keeps, per board, the best of speaker.rerank.n sampled captions by the game's reward (`listener_sub.rerank`).
Writes summary.json ("after", the oracle gaps where the data has scenes, the data, wall times, and -- when the boards are
not the run's own -- the transfer ratio: gap here / the run's own gap after training) to the run directory and returns the gap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from listener_sub.assembly import Assembly
from listener_sub.cache import ArtifactCache
from listener_sub.cli import hydra_command
from listener_sub.commands.common import (
    RUN_CONFIG,
    adapter_file,
    check_adapter,
    decode_config,
    eval_config,
    from_run,
    run_of,
    run_spec,
    trainer_config,
)
from listener_sub.evaluation import EvalConfig, evaluate_speaker, held_out_boards
from listener_sub.files import write_json
from listener_sub.oracle import has_oracle, oracle_gaps
from listener_sub.report.tables import metrics_table
from listener_sub.rl import EVAL_BOARDS

OWN_KEYS = (
    "command",
    "checkpoint",
    "threads",
    "debug",
)  # this command's settings; every other override applies to the run's config
SUMMARY = "summary.json"
CAPTIONER = "captioner"  # checkpoint=captioner: the captioning adapter, no RL


def transfer(run: Path, evaluation: EvalConfig, gap: float) -> dict[str, float | None] | None:
    """The transfer ratio (gap on these boards / the run's own gap after training; None when that is 0) when the boards
    are not the run's own evaluation boards and the run's summary.json has its own; else None."""
    own = OmegaConf.load(run / RUN_CONFIG).get("evaluation", {})
    if (evaluation.data is None and evaluation.split == own.get("split")) or not (run / SUMMARY).is_file():
        return None
    in_domain = float(json.loads((run / SUMMARY).read_text())["after"]["gap"])
    return {"in_domain_gap": in_domain, "gap": gap, "ratio": gap / in_domain if in_domain else None}


@hydra_command("eval")
def main(cfg: DictConfig) -> float:
    """Evaluate the checkpoint's speaker (KL against the captioning adapter) and the oracle speakers on the same boards."""
    start = time.perf_counter()
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    path = None if cfg.checkpoint == CAPTIONER else adapter_file(cfg.checkpoint)
    run = run_of(path) if path is not None else None
    if run is not None:
        cfg = from_run(cfg, run, OWN_KEYS)
    rl_cfg, eval_cfg, spec, decode = trainer_config(cfg), eval_config(cfg), run_spec(cfg), decode_config(cfg)
    if path is not None:
        check_adapter(path, spec, "checkpoint")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    models = Assembly(spec, ArtifactCache(cfg.get("cache_dir")))
    models.load_data([(eval_cfg.data, eval_cfg.split)])
    models.build_clips()
    game = models.game()
    speaker = models.speaker()
    reference = speaker.adapter  # the captioning adapter
    if path is not None:
        speaker.load_adapter(path)
    boards = held_out_boards(game, eval_cfg)
    eval_start = time.perf_counter()
    after = evaluate_speaker(
        speaker,
        game,
        boards,
        reference,
        eval_cfg.seed,
        rl_cfg.max_new_tokens,
        boards_file=out_dir / EVAL_BOARDS,
        decode=decode,
    )
    eval_s = time.perf_counter() - eval_start
    oracle = (
        oracle_gaps(game, boards, torch.Generator(device="cpu").manual_seed(eval_cfg.seed))
        if has_oracle(boards)
        else {}
    )
    summary: dict[str, Any] = {"after": after, **oracle, "data": {"evaluation": boards.checked_pool().data.name}}
    moved = transfer(run, eval_cfg, after["gap"]) if run is not None else None
    if moved is not None:
        summary["transfer"] = moved
    summary |= {
        "checkpoint": str(path or CAPTIONER),
        "run": str(run) if run else None,
        "wall_s": time.perf_counter() - start,
        "wall_s/eval": eval_s,
        "config": cfg,
    }
    write_json(out_dir / SUMMARY, summary)
    Console().print(
        metrics_table(
            f"listener-sub eval {path or CAPTIONER} on {boards.checked_pool().data.name}", {"after": after}, summary
        )
    )
    print(f"wrote {out_dir / SUMMARY}")
    return float(after["gap"])

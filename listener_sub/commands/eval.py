"""`listener-sub eval [run=RUN] [checkpoint=PATH|captioner] [data=NAME data.root=DIR] [speaker.decode=rerank]`: the
full metric set of a speaker on the game's evaluation boards, or zero-shot on other data.

The game: a train run's (`run=RUN`: its saved config, this command's overrides on top), or else the composed
experiment's. The speaker: `checkpoint=` -- a checkpoint dir (RUN/checkpoints/step_N), a train run (its latest
checkpoint), an adapter file, or `captioner` (the game's captioning adapter, RL's reference); unset, the run's latest
checkpoint (without a run, the captioning adapter). A checkpoint inside a train run plays in that run's game unless
run= names another. The data: `data=...` names the images the boards come from (the game's evaluation.data); the
game's own models stay as they are. speaker.decode=rerank keeps, per board, the best of speaker.rerank.n sampled
captions by the game's reward (`listener_sub.rerank`).

Writes summary.json ("after", the oracle gaps where the data has scenes, the data, wall times, and -- when the boards
are not the run's own -- the transfer ratio: gap here / the run's own gap after training) and returns the gap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from listener_sub.cli import hydra_command
from listener_sub.commands.common import decode_config, eval_config, run_spec, trainer_config
from listener_sub.evaluation import EvalConfig, evaluate_speaker, held_out_boards
from listener_sub.files import write_json
from listener_sub.loading import CAPTIONER, game_and_speaker, game_config, players
from listener_sub.oracle import has_oracle, oracle_gaps
from listener_sub.report.tables import metrics_table, show
from listener_sub.runs import CONFIG, EVAL_BOARDS, SUMMARY, environment

OWN_KEYS = ("command", "run", "checkpoint", "threads", "debug")  # this command's; every other override is the game's


def transfer(run: Path, evaluation: EvalConfig, gap: float) -> dict[str, float | None] | None:
    """The transfer ratio (gap on these boards / the run's own gap after training; None when that is 0) when the boards
    are not the run's own evaluation boards and the run's summary.json has its own; else None."""
    own = OmegaConf.load(run / CONFIG).get("evaluation", {})
    if (evaluation.data is None and evaluation.split == own.get("split")) or not (run / SUMMARY).is_file():
        return None
    in_domain = float(json.loads((run / SUMMARY).read_text())["after"]["gap"])
    return {"in_domain_gap": in_domain, "gap": gap, "ratio": gap / in_domain if in_domain else None}


@hydra_command("eval")
def main(cfg: DictConfig) -> float:
    """Evaluate the speaker (KL against the captioning adapter) and the oracle speakers on the same boards."""
    start = time.perf_counter()
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    run, path = game_and_speaker(cfg.run, cfg.checkpoint)
    cfg = game_config(cfg, OWN_KEYS, run)
    rl_cfg, eval_cfg, spec = trainer_config(cfg), eval_config(cfg), run_spec(cfg)
    decode = decode_config(spec)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    played = players(cfg, spec, [(eval_cfg.data, eval_cfg.split)], path)
    game, speaker = played.game, played.speaker
    boards = held_out_boards(game, eval_cfg)
    eval_start = time.perf_counter()
    after = evaluate_speaker(
        speaker,
        game,
        boards,
        played.reference,
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
        "environment": environment(),
        "config": cfg,
    }
    write_json(out_dir / SUMMARY, summary)
    speaker = CAPTIONER if path is None else "trained"  # the table's column: which speaker was measured
    title = f"listener-sub eval on {boards.checked_pool().data.name}"
    played_by = f"speaker: {path or 'the captioning adapter'} in {f'the game of {run}' if run else 'the composed game'}"
    show(played_by, metrics_table(title, {speaker: after}, summary), f"wrote {out_dir / SUMMARY}")
    return float(after["gap"])

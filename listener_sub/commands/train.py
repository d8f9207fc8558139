"""`listener-sub train [experiment=NAME] [trainer.steps=N] [resume=true hydra.run.dir=DIR]`: RL with listener subtraction.

Builds (or finds) the pretrained listeners and captioning speaker, trains the speaker's adapter with
REINFORCE (`listener_sub.rl`), and writes summary.json (before / after metrics, oracle gaps, wall times,
config), metrics.jsonl, TensorBoard events and checkpoints/ into the run directory; prints a before/after table.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from listener_sub.cache import write_json
from listener_sub.cli import hydra_command
from listener_sub.errors import UserError
from listener_sub.game import Boards, Game
from listener_sub.oracle import oracle_gaps
from listener_sub.pretrain.stages import Pretrainer
from listener_sub.rl import RLConfig, Trainer, start_from

SAMPLE = "sample/"  # prefix of the metrics of temperature-1 samples


def trainer_config(cfg: DictConfig) -> RLConfig:
    """The run's RLConfig; bad trainer settings are a user error."""
    try:
        return hydra.utils.instantiate(cfg.trainer)
    except InstantiationException as error:
        raise UserError(f"{error.__cause__ or error}; fix the trainer.* settings") from None


def setup(cfg: DictConfig) -> tuple[RLConfig, Pretrainer, Game]:
    """Torch threads, the trainer settings (checked first), the Pretrainer and the game of a train or eval run."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    rl_cfg = trainer_config(cfg)
    pretrainer = Pretrainer(cfg)
    pretrainer.build_clips()
    return rl_cfg, pretrainer, Game.from_config(cfg, pretrainer)


def reference_gaps(game: Game, boards: Boards, seed: int) -> dict[str, Any]:
    """fixed_oracle_gap (+ subset), oracle_gap, oracle_reward and every subset's gap on the evaluation boards."""
    return oracle_gaps(game.listeners, boards, game.reward, game.choice, torch.Generator(device="cpu").manual_seed(seed))


def metric_rows(columns: dict[str, dict[str, float]]) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """Column names (each entry of `columns`, then its `sample/` twin) and one row of values per greedy metric."""
    names = [*columns, *(f"{SAMPLE}{name}" for name in columns)]
    first = next(iter(columns.values()))
    rows = [
        (key, [m[key] for m in columns.values()] + [m.get(SAMPLE + key, float("nan")) for m in columns.values()])
        for key in first
        if not key.startswith(SAMPLE)
    ]
    return names, rows


def metrics_table(title: str, columns: dict[str, dict[str, float]], oracle: dict[str, Any]) -> Table:
    """Metrics of greedy captions and of samples side by side, one column per entry of `columns`, oracle gaps below."""
    table = Table(title=title)
    table.add_column("metric")
    names, rows = metric_rows(columns)
    for name in names:
        table.add_column(name, justify="right")
    for key, values in rows:
        table.add_row(key, *(f"{v:.3f}" for v in values))
    subset = "+".join(oracle["fixed_oracle_subset"])
    table.add_row(f"fixed_oracle_gap ({subset})", f"{oracle['fixed_oracle_gap']:.3f}")
    table.add_row("oracle_gap", f"{oracle['oracle_gap']:.3f}")
    return table


@hydra_command("train")
def main(cfg: DictConfig) -> None:
    """Pretrain what is missing, train the speaker by RL, evaluate before and after, write summary.json."""
    start = time.perf_counter()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    start_from(run_dir, cfg.resume)  # a resume without a checkpoint fails here, before any pretraining
    rl_cfg, pretrainer, game = setup(cfg)
    speaker = pretrainer.speaker()
    pretrain_s = time.perf_counter() - start
    trainer = Trainer(rl_cfg, speaker, game, run_dir)
    result = trainer.fit(resume=cfg.resume)
    oracle_start = time.perf_counter()
    oracle = reference_gaps(game, trainer.eval_boards, rl_cfg.eval_seed)
    eval_s = trainer.wall_s["eval"] + time.perf_counter() - oracle_start
    summary: dict[str, Any] = {**result, **oracle, "wall_s": time.perf_counter() - start, "wall_s/pretrain": pretrain_s}
    summary |= {f"wall_s/pretrain/{stage}": s for stage, s in pretrainer.wall_s.items()}  # stages built by this run
    summary |= {"wall_s/rl": trainer.wall_s["rl"], "wall_s/eval": eval_s, "steps": trainer.step, "config": cfg}
    write_json(run_dir / "summary.json", summary)
    Console().print(metrics_table(f"listener-sub train ({trainer.step} steps)", {"before": result["before"], "after": result["after"]}, oracle))
    print(
        f"wall: {summary['wall_s']:.0f} s (pretrain {pretrain_s:.0f} s, RL {trainer.wall_s['rl']:.0f} s, eval {eval_s:.0f} s); "
        f"wrote {run_dir / 'summary.json'}"
    )

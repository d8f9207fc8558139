"""`listener-sub pretrain [stage=listeners|lm|speaker|all]`: builds missing artifacts, writes pretrain_summary.json."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from listener_sub.cache import write_json
from listener_sub.cli import hydra_command
from listener_sub.errors import UserError
from listener_sub.game import Game
from listener_sub.metrics import evaluate_speaker
from listener_sub.models.lm import load_lm
from listener_sub.pretrain.listeners import evaluate_listener
from listener_sub.pretrain.lm import build_corpus, corpus_mention_rates, evaluate_lm
from listener_sub.pretrain.stages import STAGES, Pretrainer, needed_listeners


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def pretrain_summary(cfg: DictConfig, stage: str) -> dict[str, float]:
    """Build (or find) the artifacts of `stage` and measure them on held-out boards."""
    pre = Pretrainer(cfg)
    if stage in ("listeners", "speaker", "all"):
        pre.build_clips()
    names = needed_listeners(cfg)
    ev = cfg.eval
    summary: dict[str, float] = {}
    if stage in ("listeners", "all"):
        for name in names:
            listener = pre.listener(name)
            metrics = evaluate_listener(
                listener.clip, listener.tokenizer, listener.perception, pre.world, ev.boards, ev.board_size, ev.seed
            )
            summary |= _prefixed(f"listener/{name}/", metrics)
    if stage in ("lm", "all"):
        lm_dir = pre.lm_dir()
        if not cfg.lm.name:  # the local LM: its corpus, and how well it reads a scene description
            lm_train, prefix_len = cfg.lm.train, cfg.lm.model.prefix_len
            corpus = build_corpus(pre.world, pre.captions, lm_train.n_scenes, lm_train.per_scene, prefix_len, lm_train.seed)
            summary |= _prefixed("corpus/mention/", corpus_mention_rates(corpus))
            lm, tokenizer = load_lm(lm_dir, pre.device)
            summary |= _prefixed("lm/", evaluate_lm(lm, tokenizer, pre.world, pre.captions, prefix_len, seed=ev.seed))
    if stage in ("speaker", "all"):  # the captioning speaker on held-out game boards (it is its own reference: kl 0)
        game = Game.from_config(cfg, pre)
        boards = game.sample(ev.boards, np.random.default_rng(ev.seed), "test")
        summary |= _prefixed("speaker/", evaluate_speaker(pre.speaker(), game, boards, seed=ev.seed))
    summary |= _prefixed("wall_s/", pre.wall_s)
    return summary


@hydra_command("pretrain")
def main(cfg: DictConfig) -> None:
    """Pretrain what the experiment needs; report per-stage metrics and wall time."""
    if cfg.stage not in STAGES:
        raise UserError(f"unknown stage {cfg.stage!r}; choose one of: {', '.join(STAGES)}")
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    start = time.perf_counter()
    summary = pretrain_summary(cfg, cfg.stage)
    summary["wall_s/total"] = time.perf_counter() - start
    write_json(run_dir / "pretrain_summary.json", summary)
    table = Table(title=f"pretrain ({cfg.stage})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.3f}")
    Console().print(table)
    print(f"wrote {run_dir / 'pretrain_summary.json'}")

"""`listener-sub pretrain [stage=listeners|lm|speaker|all]`: builds missing artifacts, writes pretrain_summary.json."""

from __future__ import annotations

import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from listener_sub.assembly import Assembly
from listener_sub.cache import ArtifactCache
from listener_sub.cli import hydra_command
from listener_sub.commands.common import eval_config, run_spec
from listener_sub.errors import UserError
from listener_sub.evaluation import evaluate_listener, evaluate_speaker, held_out_boards
from listener_sub.files import write_json
from listener_sub.game import Pool
from listener_sub.models.lm import load_lm
from listener_sub.pretrain.lm import build_corpus, corpus_mention_rates, evaluate_lm
from listener_sub.world import WORLD_VOCAB

STAGES = ("listeners", "lm", "speaker", "all")


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def pretrain_summary(cfg: DictConfig, stage: str) -> dict[str, float]:
    """Build (or find) the artifacts of `stage` and measure them on the run's evaluation boards."""
    spec, ev = run_spec(cfg), eval_config(cfg)
    cache = ArtifactCache(cfg.get("cache_dir"))
    models = Assembly(spec, cache)
    if stage in ("listeners", "speaker", "all"):
        models.load_data([(ev.data, ev.split)])
        models.build_clips()
    summary: dict[str, float] = {}
    if stage in ("listeners", "all"):
        n_images = spec.game["n_images"]
        source = models.source(ev.data)
        pool = Pool(
            source.load(ev.split, ev.boards * n_images if source.kind == "synthetic" else spec.game["pool_size"])
        )
        for name in spec.players:
            metrics = evaluate_listener(models.listener(name), pool, ev.boards, n_images, ev.seed)
            summary |= _prefixed(f"listener/{name}/", metrics)
    if stage in ("lm", "all"):
        lm_dir = models.lm_dir()
        if (
            not spec.lm.name
        ):  # the local LM: its corpus, and (on the embedded world) how well it reads a scene description
            recipe, prefix_len = spec.lm.recipe, spec.lm.model.prefix_len
            data = models.pretrain_images(recipe.n_scenes)
            corpus = build_corpus(
                spec.world, spec.captions, recipe.n_scenes, recipe.per_scene, prefix_len, recipe.seed, data
            )
            if data is None or data.scenes is not None:
                summary |= _prefixed(
                    "corpus/mention/", corpus_mention_rates(corpus, WORLD_VOCAB if data is None else data.scenes.vocab)
                )
            if data is None:
                lm, tokenizer = load_lm(lm_dir, models.device)
                summary |= _prefixed(
                    "lm/", evaluate_lm(lm, tokenizer, spec.world, spec.captions, prefix_len, seed=ev.seed)
                )
    if stage in ("speaker", "all"):  # the captioning speaker on held-out game boards (it is its own reference: kl 0)
        game = models.game()
        summary |= _prefixed(
            "speaker/", evaluate_speaker(models.speaker(), game, held_out_boards(game, ev), seed=ev.seed)
        )
    summary |= _prefixed("wall_s/", cache.wall_s)
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

"""`listener-sub pretrain [stage=listeners|lm|speaker|all]`: builds missing artifacts, writes pretrain_summary.json."""

from __future__ import annotations

import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.table import Table

from listener_sub.assembly import Assembly
from listener_sub.cli import hydra_command
from listener_sub.commands.common import eval_config, run_spec
from listener_sub.errors import UserError
from listener_sub.evaluation import EvalConfig, evaluate_listener, evaluate_speaker, held_out_boards
from listener_sub.files import write_json
from listener_sub.game import Pool
from listener_sub.loading import assembly
from listener_sub.models.lm import load_lm
from listener_sub.pretrain.lm import build_corpus, corpus_mention_rates, evaluate_lm
from listener_sub.report.tables import show
from listener_sub.world import WORLD_VOCAB

STAGES = ("listeners", "lm", "speaker", "all")


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def pretrain_summary(cfg: DictConfig, stage: str) -> tuple[dict[str, float], dict[str, str]]:
    """Build (or find) the artifacts of `stage`, measure them on the run's evaluation boards; returns (the metrics,
    where each of the run's models is, by role: `Assembly.files`)."""
    spec, ev = run_spec(cfg), eval_config(cfg)
    if spec.lm is None and stage == "lm":
        raise UserError("stage=lm pretrains the adapter speaker's LM; a VLM speaker (speaker=vlm) brings its own")
    models = assembly(cfg, spec)
    if stage in ("listeners", "speaker", "all"):
        models.load_data([(ev.data, ev.split)])
        models.build_clips()
    summary: dict[str, float] = {}
    if stage in ("listeners", "all"):
        summary |= listener_metrics(models, ev)
    if stage in ("lm", "all") and spec.lm is not None:
        summary |= lm_metrics(models, ev.seed)
    if stage in ("speaker", "all"):  # the captioning speaker on held-out game boards (it is its own reference: kl 0)
        game = models.game()
        metrics = evaluate_speaker(models.speaker(), game, held_out_boards(game, ev), seed=ev.seed)
        summary |= _prefixed("speaker/", metrics)
    return summary | _prefixed("wall_s/", models.cache.wall_s), models.files()


def listener_metrics(models: Assembly, ev: EvalConfig) -> dict[str, float]:
    """Each listener's accuracy per attribute against the tie-aware ceiling, on held-out boards of the run's data."""
    n_images, source = models.spec.game.n_images, models.source(ev.data)
    pool = Pool(
        source.load(ev.split, ev.boards * n_images if source.kind == "synthetic" else models.spec.game.pool_size)
    )
    summary: dict[str, float] = {}
    for name in models.spec.players:
        summary |= _prefixed(
            f"listener/{name}/", evaluate_listener(models.listener(name), pool, ev.boards, n_images, ev.seed)
        )
    return summary


def lm_metrics(models: Assembly, seed: int) -> dict[str, float]:
    """The locally trained LM: its corpus's mention rates and (on the embedded world) how well it reads a scene
    description; nothing for a given LM."""
    spec, lm_dir = models.spec, models.lm_dir()
    if spec.lm.name:
        return {}
    recipe, prefix_len = spec.lm.train, spec.lm.model.prefix_len
    data = models.pretrain_images(recipe.n_scenes)
    corpus = build_corpus(spec.world, spec.caption, recipe.n_scenes, recipe.per_scene, prefix_len, recipe.seed, data)
    summary: dict[str, float] = {}
    if data is None or data.scenes is not None:
        vocab = WORLD_VOCAB if data is None else data.scenes.vocab
        summary |= _prefixed("corpus/mention/", corpus_mention_rates(corpus, vocab))
    if data is None:
        lm, tokenizer = load_lm(lm_dir, models.device)
        summary |= _prefixed("lm/", evaluate_lm(lm, tokenizer, spec.world, spec.caption, prefix_len, seed=seed))
    return summary


def files_table(files: dict[str, str]) -> Table:
    """Where each model of the run is: a name to pass to `create_listener` / `create_speaker`."""
    table = Table(title="models (listener_sub.Assembly.files)")
    table.add_column("role")
    table.add_column("file", overflow="fold")
    for role, path in files.items():
        table.add_row(role, path)
    return table


@hydra_command("pretrain")
def main(cfg: DictConfig) -> None:
    """Pretrain what the experiment needs; report per-stage metrics and wall time."""
    if cfg.stage not in STAGES:
        raise UserError(f"unknown stage {cfg.stage!r}; choose one of: {', '.join(STAGES)}")
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    start = time.perf_counter()
    summary, files = pretrain_summary(cfg, cfg.stage)
    summary["wall_s/total"] = time.perf_counter() - start
    write_json(run_dir / "pretrain_summary.json", {**summary, "files": files})
    table = Table(title=f"pretrain ({cfg.stage})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.3f}")
    show(table, files_table(files), f"wrote {run_dir / 'pretrain_summary.json'}")

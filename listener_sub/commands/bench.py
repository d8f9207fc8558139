"""`listener-sub bench [preset=tiny|real|vlm] [parts=[render,rl,clip,env]]`: optimized paths against naive ones in
one run; prints a table and writes bench.json.

preset=tiny: the embedded default's models (from the cache, built when missing) and its RL settings; the CLIP step of
the default listener model and recipe. preset=real: random-init real-size players (ViT-B-32 CLIPs, GPT-2 124M) over
the embedded world, `real.boards` x `real.k` a step; the CLIP step of ViT-B-32 on `real.clip_batch` images.
preset=vlm (parts=[rl]): the tiny game's listeners and a random-init Idefics3 speaker of `vlm.size` (tiny, or
smolvlm-256m: SmolVLM-256M's sizes) with LoRA, `vlm.boards` x `vlm.k` a step, against its naive twin (no KV cache).
parts=[env] (preset=tiny): the vector env, `env.num_envs` boards a step, against the AEC env on the same boards.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.table import Table

from listener_sub.assembly import RunSpec, pick_device
from listener_sub.bench import bench_clip, bench_env, bench_render, bench_rl, byte_level_tokenizer, real_size_players
from listener_sub.cli import hydra_command
from listener_sub.commands.common import eval_config, run_spec, trainer_config, typed
from listener_sub.errors import UserError
from listener_sub.evaluation import EvalConfig
from listener_sub.files import write_json
from listener_sub.loading import assembly, players
from listener_sub.models.random_vlm import VLM_SIZES, save_random_vlm
from listener_sub.models.vlm import create_vlm_speaker
from listener_sub.report.tables import show
from listener_sub.rl import Trainer
from listener_sub.world import PRETRAIN_SPLIT, WorldConfig

PRESETS = ("tiny", "real", "vlm")
PARTS = ("render", "rl", "clip", "env")


def rl_trainer(cfg: DictConfig, spec: RunSpec, run_dir: Path) -> Trainer:
    """The trainer whose step is measured: the default experiment's (tiny) or random real-size players (real)."""
    rl_cfg = dataclasses.replace(trainer_config(cfg), progress=False)
    if cfg.preset == "tiny":
        played = players(cfg, spec)
        return Trainer(rl_cfg, played.speaker, played.game, run_dir, eval_config(cfg))
    if cfg.preset == "vlm":
        models = assembly(cfg, spec)
        models.build_clips()
        texts = models.source().load(PRETRAIN_SPLIT, 256).caption_texts(spec.caption, 2, spec.seed)
        folder = save_random_vlm(run_dir / "vlm", byte_level_tokenizer(texts), VLM_SIZES[cfg.vlm.size], spec.seed)
        speaker = create_vlm_speaker(folder, device=models.device, seed=spec.seed)
        rl_cfg = dataclasses.replace(rl_cfg, boards=int(cfg.vlm.boards), k=int(cfg.vlm.k))
        return Trainer(rl_cfg, speaker, models.game(), run_dir, EvalConfig(boards=1, split=rl_cfg.split))
    game, speaker = real_size_players(
        spec.world, spec.reward, int(cfg.real.pool_size), pick_device(spec.device), spec.seed
    )
    rl_cfg = dataclasses.replace(rl_cfg, boards=int(cfg.real.boards), k=int(cfg.real.k))
    return Trainer(rl_cfg, speaker, game, run_dir, EvalConfig(boards=1, split=rl_cfg.split))


def check(cfg: DictConfig) -> list[str]:
    """The benchmarks to run (`parts`); a UserError on settings that cannot work, before anything is built."""
    if cfg.preset not in PRESETS:
        raise UserError(f"unknown preset={cfg.preset}; choose one of: {', '.join(PRESETS)}")
    if cfg.preset == "vlm" and cfg.vlm.size not in VLM_SIZES:
        raise UserError(f"unknown vlm.size={cfg.vlm.size}; choose one of: {', '.join(VLM_SIZES)}")
    if cfg.preset != "tiny" and "env" in cfg.parts:
        raise UserError(
            f"parts=[env] measures the envs in the embedded default's game; use preset=tiny, not {cfg.preset}"
        )
    if cfg.preset == "vlm" and "clip" in cfg.parts:
        raise UserError("preset=vlm measures a VLM speaker's RL step; run it with parts=[rl] (or parts=[render,rl])")
    parts = list(cfg.parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise UserError(f"parts={parts}: choose from {', '.join(PARTS)}, e.g. parts=[render,rl]")
    for part in ("rl", "clip"):  # naive_steps=0: the optimized step alone
        if cfg[part].steps < 1 or cfg[part].naive_steps < 0:
            raise UserError(
                f"{part}.steps={cfg[part].steps}, {part}.naive_steps={cfg[part].naive_steps}; time at least one "
                "optimized step and zero or more naive ones"
            )
    return parts


def clip_bench(cfg: DictConfig, spec: RunSpec) -> dict[str, float]:
    """The listener CLIP's pretraining step of the preset: the default listener model and recipe, or ViT-B-32."""
    recipe = dataclasses.replace(spec.listener_train, pool_size=int(cfg.clip.pool_size))
    model = spec.listeners["full"].model if cfg.preset == "tiny" else "ViT-B-32"
    if cfg.preset == "real":
        recipe = dataclasses.replace(recipe, batch_size=int(cfg.real.clip_batch))
    steps, naive = int(cfg.clip.steps), int(cfg.clip.naive_steps)
    return bench_clip(model, spec.world, recipe, steps, naive, pick_device(spec.device))


@hydra_command("bench")
def main(cfg: DictConfig) -> None:
    """Run the chosen benchmarks and report rates, per-phase times, FLOP utilisation and memory."""
    parts = check(cfg)
    spec = run_spec(cfg, [trainer_config(cfg).split])  # the whole config checked before anything runs
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    results: dict[str, float] = {}
    if "render" in parts:
        results |= bench_render(typed(WorldConfig, cfg.world, "world"), cfg.render.images, cfg.repeats)
    if "rl" in parts:
        results |= bench_rl(rl_trainer(cfg, spec, run_dir / "rl"), int(cfg.rl.steps), int(cfg.rl.naive_steps))
    if "clip" in parts:
        results |= clip_bench(cfg, spec)
    if "env" in parts:
        played = players(cfg, spec)
        e = cfg.env
        results |= bench_env(played.game, played.speaker.tokenizer, int(e.num_envs), int(e.steps), int(e.aec_boards))
    table = Table(title=f"listener-sub bench (preset={cfg.preset}, {torch.get_num_threads()} threads)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        table.add_row(key, f"{value:,.4g}" if abs(value) < 1 else f"{value:,.1f}")
    write_json(run_dir / "bench.json", {"results": results, "config": cfg})
    show(table, json.dumps(results))

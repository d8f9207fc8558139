"""`listener-sub train [experiment=NAME] [trainer.steps=N] [resume=true hydra.run.dir=DIR]`: RL with listener
subtraction. Data-parallel on several GPUs or nodes: `torchrun --nproc_per_node=P -m listener_sub train ...`
(trainer.boards per rank).

Checks the whole config, builds (or finds) the pretrained listeners and captioning speaker, trains the speaker's
adapter with REINFORCE (`listener_sub.rl`), and writes summary.json (before / after metrics, oracle gaps where the data
has scenes, the data, wall times, the environment, config), metrics.jsonl, TensorBoard events and checkpoints/ into
the run directory; prints a before/after table and returns the gap after training (for Hydra's optimizing sweepers).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from listener_sub.assembly import pick_device
from listener_sub.cli import hydra_command
from listener_sub.commands.common import decode_config, eval_config, run_spec, trainer_config
from listener_sub.distributed import join, leave
from listener_sub.errors import UserError
from listener_sub.files import to_plain, write_json
from listener_sub.loading import assembly, current_spelling
from listener_sub.oracle import has_oracle, oracle_gaps
from listener_sub.report.tables import metrics_table, show
from listener_sub.rl import Trainer, check_constraint
from listener_sub.runs import START_SETTINGS, SUMMARY, environment, start_from

RESUME_FREE = (  # settings a resumed run may change: how long, how often, where and how fast -- not what it learns
    "resume",
    "resume_force",
    "threads",
    "device",
    "cache_dir",
    "clip_workers",
    "trainer.steps",
    "trainer.progress",
    "trainer.eval_every",
    "trainer.save_every",
    "trainer.keep_last",
    "trainer.log_every",
    "trainer.max_bad_steps",
    "trainer.compile",
)


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of every leaf of a plain config."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {key: value for name, child in node.items() for key, value in leaves(child, f"{prefix}{name}.").items()}


def check_resume(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse to resume a run with settings that change it (unless resume_force=true), naming each differing key."""
    saved = run_dir / START_SETTINGS
    if not saved.exists():
        print(
            f"train: {saved} is missing (the run recorded no settings to compare): this run's settings are not "
            "compared",
            flush=True,
        )
        return
    started = current_spelling(OmegaConf.create(json.loads(saved.read_text())))
    before, now = leaves(OmegaConf.to_container(started)), leaves(to_plain(cfg))
    # every setting the run started with (one it started without, which this version adds, plays its current value)
    differ = sorted(k for k in before if before[k] != now.get(k, "(unset)") and k not in RESUME_FREE)
    if differ and not cfg.resume_force:
        changes = ", ".join(f"{k} ({before[k]} -> {now.get(k, '(unset)')})" for k in differ)
        raise UserError(
            f"resume=true with settings that change the run: {changes}; drop those overrides, or add "
            "resume_force=true to continue with them"
        )


@hydra_command("train")
def main(cfg: DictConfig) -> float:
    """Pretrain what is missing, train the speaker by RL, evaluate before and after, write summary.json."""
    start = time.perf_counter()
    rl_cfg = trainer_config(cfg)
    eval_cfg, spec = eval_config(cfg), run_spec(cfg, [rl_cfg.split])  # every setting checked first
    if decode_config(spec) is not None:
        raise UserError(
            "speaker.decode=rerank chooses evaluation captions; train with speaker.decode=greedy, then rerank with "
            "`listener-sub eval checkpoint=RUN speaker.decode=rerank`"
        )
    try:
        check_constraint(rl_cfg.constraint, spec.reward)
    except ValueError as error:
        raise UserError(f"{error} (fix trainer.constraint.* or reward.*)") from None
    ranks = join(pick_device(spec.device))  # under torchrun: this process's rank, the process group joined
    run_dir = Path(ranks.broadcast(HydraConfig.get().runtime.output_dir))  # rank 0's run directory
    start_from(run_dir, cfg.resume)  # a resume without a checkpoint fails here, before any pretraining
    if cfg.resume:
        check_resume(run_dir, cfg)
    elif ranks.main:
        write_json(run_dir / START_SETTINGS, cfg)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    models = assembly(cfg, spec)
    with ranks.main_first():  # rank 0 builds what the cache lacks, the other ranks then read it
        played = models.players(boards=[(None, rl_cfg.split), (eval_cfg.data, eval_cfg.split)])
    pretrain_s = time.perf_counter() - start
    trainer = Trainer(rl_cfg, played.speaker, played.game, run_dir, eval_cfg, ranks)
    result = trainer.fit(resume=cfg.resume)
    leave()
    if ranks.main:  # rank 0 reports the run
        write_summary(run_dir, cfg, trainer, result, models.cache.wall_s, time.perf_counter() - start, pretrain_s)
    return float(result["after"]["gap"])


def write_summary(
    run_dir: Path,
    cfg: DictConfig,
    trainer: Trainer,
    result: dict,
    built_s: dict[str, float],
    wall_s: float,
    pretrain_s: float,
) -> None:
    """summary.json (metrics before / after, oracle gaps where the data has scenes, the data, wall times, the
    environment, config) and the table."""
    game, boards, eval_cfg = trainer.game, trainer.eval_boards, trainer.eval_cfg
    oracle_start = time.perf_counter()
    oracle = (
        oracle_gaps(game, boards, torch.Generator(device="cpu").manual_seed(eval_cfg.seed))
        if has_oracle(boards)
        else {}
    )
    eval_s = trainer.wall_s["eval"] + time.perf_counter() - oracle_start
    data = {"train": game.pool(trainer.cfg.split).data.name, "evaluation": boards.checked_pool().data.name}
    summary: dict[str, Any] = {
        **result,
        **oracle,
        "data": data,
        "wall_s": wall_s + time.perf_counter() - oracle_start,
        "wall_s/pretrain": pretrain_s,
    }
    summary |= {f"wall_s/pretrain/{kind}": s for kind, s in built_s.items()}  # artifacts built by this run
    summary |= {
        "multipliers": trainer.multipliers.state_dict()
    }  # the final lam and beta (learnt under trainer.constraint)
    summary |= {"wall_s/rl": trainer.wall_s["rl"], "wall_s/eval": eval_s, "steps": trainer.step}
    summary |= {"environment": environment(trainer.ranks.world), "config": cfg}
    write_json(run_dir / SUMMARY, summary)
    title = f"listener-sub train ({trainer.step} steps)"
    show(
        metrics_table(title, {"before": result["before"], "after": result["after"]}, oracle),
        f"wall: {summary['wall_s']:.0f} s (pretrain {pretrain_s:.0f} s, RL {trainer.wall_s['rl']:.0f} s, "
        f"eval {eval_s:.0f} s); wrote {run_dir / SUMMARY}",
    )

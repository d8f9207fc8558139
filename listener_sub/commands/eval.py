"""`listener-sub eval checkpoint=PATH`: the full metric set of a trained speaker on the trainer's held-out boards.

PATH: a checkpoint directory (RUN/checkpoints/step_N), a train run directory (its latest checkpoint) or an
adapter .safetensors file. Writes summary.json ("after", the oracle gaps, wall_s, config) to the run directory.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console

from listener_sub.cache import write_json
from listener_sub.cli import hydra_command
from listener_sub.commands.train import metrics_table, reference_gaps, setup
from listener_sub.errors import UserError
from listener_sub.metrics import evaluate_speaker
from listener_sub.rl import ADAPTER, held_out_boards, latest_checkpoint


def adapter_file(checkpoint: str) -> Path:
    """The adapter weights a checkpoint= value points at."""
    path = Path(checkpoint).expanduser()
    if path.is_file():
        return path
    if (path / ADAPTER).is_file():
        return path / ADAPTER
    latest = latest_checkpoint(path)
    if latest is None:
        raise UserError(
            f"checkpoint={checkpoint} holds no adapter; pass a checkpoint dir (RUN/checkpoints/step_N), "
            f"a train run dir or an adapter {ADAPTER} file"
        )
    return latest / ADAPTER


@hydra_command("eval")
def main(cfg: DictConfig) -> None:
    """Evaluate the checkpoint's speaker (KL against the captioning adapter) and the oracle speakers on the same boards."""
    start = time.perf_counter()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = adapter_file(cfg.checkpoint)
    rl_cfg, pretrainer, game = setup(cfg)
    speaker = pretrainer.speaker()
    reference = speaker.adapter  # the captioning adapter
    speaker.load_adapter(path)
    boards = held_out_boards(game, rl_cfg)
    after = evaluate_speaker(speaker, game, boards, reference, rl_cfg.eval_seed, rl_cfg.max_new_tokens)
    oracle = reference_gaps(game, boards, rl_cfg.eval_seed)
    summary: dict[str, Any] = {"after": after, **oracle, "checkpoint": str(path), "wall_s": time.perf_counter() - start, "config": cfg}
    write_json(run_dir / "summary.json", summary)
    Console().print(metrics_table(f"listener-sub eval {path}", {"after": after}, oracle))
    print(f"wrote {run_dir / 'summary.json'}")

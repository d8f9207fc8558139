"""`listener-sub bench`: measures throughput, prints a table and writes bench.json."""
from __future__ import annotations

import json
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from listener_sub.bench import bench_render
from listener_sub.files import write_json
from listener_sub.world import WorldConfig
from listener_sub.cli import hydra_command
from listener_sub.commands.common import typed


@hydra_command("bench")
def main(cfg: DictConfig) -> None:
    """Run every benchmark and report images (or steps) per second."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    world = typed(WorldConfig, cfg.world, "world")
    results = bench_render(world, cfg.render.images, cfg.repeats)
    table = Table(title="listener-sub bench")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        table.add_row(key, f"{value:,.1f}")
    Console().print(table)
    write_json(run_dir / "bench.json", {"results": results, "config": cfg})
    print(json.dumps(results))

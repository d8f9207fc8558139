"""`listener-sub export out=DIR [split=test] [scenes=4096]`: the embedded world as a CLEVR-format folder.

Writes out/scenes/CLEVR_<split>_scenes.json and out/images/<split>/*.png (split may be a list: split=[train,test]) --
the same scenes and pixels, read back by `data=clevr data.root=DIR data.image_size=null` as the same game.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig

from listener_sub.cli import hydra_command
from listener_sub.commands.common import data_config, typed
from listener_sub.data.export import export_world
from listener_sub.errors import UserError
from listener_sub.report.tables import show
from listener_sub.world import SPLITS, WorldConfig


@hydra_command("export")
def main(cfg: DictConfig) -> None:
    """Write each split's first cfg.scenes scenes under cfg.out."""
    if data_config(cfg.data, "data").kind != "synthetic":
        raise UserError(f"export writes the embedded world; got data={cfg.data.kind} (use data=synthetic)")
    splits = list(cfg.split) if isinstance(cfg.split, ListConfig) else [cfg.split]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise UserError(
            f"split={cfg.split}: export splits of the embedded world, one or a list of: {', '.join(SPLITS)}"
        )
    if cfg.scenes < 1:
        raise UserError(f"scenes={cfg.scenes}; export at least one scene")
    world = typed(WorldConfig, cfg.world, "world")
    out = Path(cfg.out).expanduser()
    for split in splits:
        path = export_world(world, split, int(cfg.scenes), out)
        show(f"wrote {cfg.scenes} {split} scenes: {path} and {out / 'images' / split}/")

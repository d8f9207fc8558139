"""`listener-sub preview [data=NAME data.root=DIR] [split=train scenes=8]`: writes preview.png, a grid of images under
every perception, each with a caption (a grammar caption of its scene, its first reference caption, or its file name),
and prints the captions as a table."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.table import Table
from rich.text import Text

from listener_sub.cli import hydra_command
from listener_sub.commands.common import data_config, typed
from listener_sub.data import DataSource
from listener_sub.errors import UserError
from listener_sub.preview import write_preview
from listener_sub.report.tables import show
from listener_sub.world import CaptionConfig, WorldConfig


@hydra_command("preview")
def main(cfg: DictConfig) -> None:
    """Show the first cfg.scenes images of cfg.split of cfg.data under cfg.perceptions, in the run directory."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.scenes < 1:
        raise UserError(f"scenes={cfg.scenes}; show at least one image (scenes=8)")
    world = typed(WorldConfig, cfg.world, "world")
    source = DataSource(data_config(cfg.data, "data"), world, cfg.cache_dir)
    source.check_split(cfg.split)
    images = source.load(cfg.split, int(cfg.scenes))
    if images.scenes is not None:
        captions = [
            caps[0] for caps in images.caption_texts(typed(CaptionConfig, cfg.caption, "caption"), 1, int(cfg.seed))
        ]
    else:
        captions = [images.describe(i) for i in range(len(images))]
    try:
        path = write_preview(run_dir / "preview.png", images, captions, cfg.perceptions, cfg.scenes, cfg.scale)
    except ValueError as error:  # a bad perception
        raise UserError(f"{error} (fix the perceptions.* override)") from None
    table = Table(title=f"split {cfg.split}, data={source.kind}")
    table.add_column("row", justify="right")
    table.add_column("caption")
    for row, caption in enumerate(captions, start=1):
        table.add_row(str(row), Text(caption))  # captions are data, never rich markup
    show(table, f"wrote {path}")

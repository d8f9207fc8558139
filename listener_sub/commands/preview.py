"""`listener-sub preview`: writes preview.png, a grid of scenes under every perception."""
from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from listener_sub.cli import hydra_command
from listener_sub.commands.common import typed
from listener_sub.data import make_dataset
from listener_sub.errors import UserError
from listener_sub.preview import write_preview
from listener_sub.world import CaptionConfig, WorldConfig


@hydra_command("preview")
def main(cfg: DictConfig) -> None:
    """Show the first cfg.scenes items of cfg.data under cfg.perceptions, in the run directory."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        world = typed(WorldConfig, cfg.world, "world")
        captions = typed(CaptionConfig, cfg.caption, "caption")
        dataset = make_dataset(cfg.data, world, captions, cfg.cache_dir)
        path = write_preview(run_dir / "preview.png", dataset, cfg.perceptions, cfg.scenes, cfg.scale)
    except ValueError as error:  # bad split, perception or world settings
        raise UserError(f"{error} (fix the override)") from None
    print(f"wrote {path}")

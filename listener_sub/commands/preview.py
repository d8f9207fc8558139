"""`listener-sub preview`: writes preview.png, a grid of scenes under every perception."""
from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from listener_sub.cli import hydra_command
from listener_sub.errors import UserError
from listener_sub.preview import write_preview


@hydra_command("preview")
def main(cfg: DictConfig) -> None:
    """Render cfg.scenes scenes of cfg.split under cfg.perceptions into the run directory."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        world = hydra.utils.instantiate(cfg.world)
        captions = hydra.utils.instantiate(cfg.caption)
        path = write_preview(
            run_dir / "preview.png", world, captions, cfg.perceptions, cfg.split, cfg.scenes, cfg.scale
        )
    except ValueError as error:  # bad split, perception or world settings
        raise UserError(f"{error} (fix the override)") from None
    print(f"wrote {path}")

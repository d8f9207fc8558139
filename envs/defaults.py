"""The embedded default experiment's game and speaker, for envs made outside the command line.

    game, speaker = load_default_players()
    env = listener_sub.envs.make_env(game, speaker.tokenizer)

Composes the `rollout` config (with overrides, e.g. ["experiment=control"]) and finds its models in the artifact
cache, building what is missing (as `listener-sub train` does). The envs themselves never do this.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra import compose, initialize_config_module

from listener_sub.assembly import Assembly
from listener_sub.cache import ArtifactCache
from listener_sub.commands.common import run_spec
from listener_sub.game import Game


def load_default_players(overrides: Sequence[str] = ()) -> tuple[Game, Any]:
    """(game, captioning speaker) of the default experiment."""
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose("rollout", overrides=list(overrides))
    models = Assembly(run_spec(cfg), ArtifactCache(cfg.get("cache_dir")))
    models.build_clips()
    return models.game(), models.speaker()

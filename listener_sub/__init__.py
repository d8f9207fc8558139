"""listener-sub: speaker training by listener subtraction in a Dixit-style reference game.

The public API, open_clip style (plain arguments, `create_*` factories); names load on first use, so
`import listener_sub` stays cheap:

    listener = listener_sub.create_listener("gray", "ls-rn-tiny-64", "gray.pt", perception="grayscale")
    speaker = listener_sub.create_speaker("ls-rn-tiny-64", "vision.pt", "path/to/lm", adapter="perceiver")
    game = listener_sub.create_game(listener_sub.WorldConfig(), {"full": full, "gray": gray}, reward)
    coco = listener_sub.DataSource(listener_sub.DataConfig(kind="coco", root="/data/coco", image_size=224))
    game = listener_sub.create_game(coco, {"full": full, "gray": gray}, reward, pool_size=None)
    env = listener_sub.make_env(game, speaker.tokenizer)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ArtifactCache": "listener_sub.cache",
    "Assembly": "listener_sub.assembly",
    "Boards": "listener_sub.game",
    "CaptionConfig": "listener_sub.world",
    "DataConfig": "listener_sub.data",
    "DataSource": "listener_sub.data",
    "DataError": "listener_sub.errors",
    "EvalConfig": "listener_sub.evaluation",
    "Game": "listener_sub.game",
    "ImageSet": "listener_sub.data",
    "Listener": "listener_sub.models.listener",
    "Outcome": "listener_sub.game",
    "PERCEPTIONS": "listener_sub.perception",
    "Perception": "listener_sub.perception",
    "Pool": "listener_sub.game",
    "RLConfig": "listener_sub.rl",
    "RerankConfig": "listener_sub.rerank",
    "Reward": "listener_sub.rewards",
    "RunSpec": "listener_sub.assembly",
    "Speaker": "listener_sub.models.speaker",
    "Trainer": "listener_sub.rl",
    "UserError": "listener_sub.errors",
    "WorldConfig": "listener_sub.world",
    "create_adapter": "listener_sub.adapters",
    "create_game": "listener_sub.game",
    "create_listener": "listener_sub.models.listener",
    "create_speaker": "listener_sub.models.speaker",
    "evaluate_listener": "listener_sub.evaluation",
    "evaluate_speaker": "listener_sub.evaluation",
    "listen": "listener_sub.game",
    "make_env": "listener_sub.envs",
    "make_perception": "listener_sub.perception",
    "oracle_gaps": "listener_sub.oracle",
    "rerank": "listener_sub.rerank",
    "sample_scenes": "listener_sub.world",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'listener_sub' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__

"""PettingZoo front-ends (AEC and Parallel) over the batched game core, registered as `listener_sub/Dixit-v0`.

PettingZoo has no registry of its own; `make(ENV_ID)` / `make(ENV_ID, parallel=True)` look the id up here.
"""

from __future__ import annotations

import importlib
from typing import Any

from listener_sub.envs.dixit_v0 import ENV_ID

REGISTRY: dict[str, str] = {
    ENV_ID: "listener_sub.envs.dixit_v0"
}  # env id -> module with env(), raw_env(), parallel_env()


def make_env(game: Any, tokenizer: Any, parallel: bool = False, **kwargs: Any) -> Any:
    """The Dixit env over `game` (the speaker acts with token ids of `tokenizer`): wrapped AEC, or Parallel."""
    return make(ENV_ID, parallel, game=game, tokenizer=tokenizer, **kwargs)


def make(env_id: str = ENV_ID, parallel: bool = False, **kwargs: Any) -> Any:
    """The registered env `env_id`: the wrapped AEC env, or with parallel=True the Parallel env."""
    if env_id not in REGISTRY:
        raise ValueError(f"unknown env id {env_id!r}; registered: {', '.join(REGISTRY)}")
    module = importlib.import_module(REGISTRY[env_id])
    return module.parallel_env(**kwargs) if parallel else module.env(**kwargs)


__all__ = ["ENV_ID", "REGISTRY", "make", "make_env"]

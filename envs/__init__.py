"""The envs over the batched game core: PettingZoo front-ends (AEC and Parallel) registered here as
`listener_sub/Dixit-v0`, and the batched fronts (`dixit_vector`): the Gymnasium vector env
`listener_sub/DixitSpeaker-v0` (registered with Gymnasium on import: `gymnasium.make_vec(SPEAKER_ENV_ID, num_envs=N)`)
and `BatchedDixitEnv`.

PettingZoo has no registry of its own; `make(ENV_ID)` / `make(ENV_ID, parallel=True)` look the id up here.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium

from listener_sub.envs.dixit_v0 import ENV_ID
from listener_sub.envs.dixit_vector import SPEAKER_ENV_ID, BatchedDixitEnv, DixitSpeakerVectorEnv
from listener_sub.envs.round import caption_action

if SPEAKER_ENV_ID not in gymnasium.registry:
    gymnasium.register(SPEAKER_ENV_ID, vector_entry_point="listener_sub.envs.dixit_vector:DixitSpeakerVectorEnv")

REGISTRY: dict[str, str] = {
    ENV_ID: "listener_sub.envs.dixit_v0"
}  # env id -> module with env(), raw_env(), parallel_env()


def make_env(game: Any, tokenizer: Any, parallel: bool = False, **kwargs: Any) -> Any:
    """The Dixit env over `game` (the speaker acts with token ids of `tokenizer`): wrapped AEC, or Parallel.

    game: a `Game` (its listeners are the listener agents, its reward the speaker's); tokenizer: the speaker's
    (`speaker.tokenizer`); parallel: the Parallel env (two phases: the speaker, then every listener) instead of AEC.
    kwargs: split (default `train`; `test` for held-out boards), max_tokens, render_mode (`ansi`, `rgb_array`,
    `human`), data (`dixit_v0`). Positions count from 0; infos say each agent's phase.

        players = listener_sub.default_players()
        env = make_env(players.game, players.speaker.tokenizer, split="test")
        env.reset(seed=0)
        env.step(caption_action(players.speaker.tokenizer, "a red circle .", 16))  # the speaker's turn
    """
    return make(ENV_ID, parallel, game=game, tokenizer=tokenizer, **kwargs)


def make(env_id: str = ENV_ID, parallel: bool = False, **kwargs: Any) -> Any:
    """The registered env `env_id`: the wrapped AEC env, or with parallel=True the Parallel env."""
    if env_id not in REGISTRY:
        raise ValueError(f"unknown env id {env_id!r}; registered: {', '.join(REGISTRY)}")
    module = importlib.import_module(REGISTRY[env_id])
    return module.parallel_env(**kwargs) if parallel else module.env(**kwargs)


__all__ = [
    "ENV_ID",
    "REGISTRY",
    "SPEAKER_ENV_ID",
    "BatchedDixitEnv",
    "DixitSpeakerVectorEnv",
    "caption_action",
    "make",
    "make_env",
]

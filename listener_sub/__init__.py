"""listener-sub: speaker training by listener subtraction in a Dixit-style reference game.

The public API, open_clip style (plain arguments, `create_*` factories); names load on first use, so
`import listener_sub` stays cheap:

    import listener_sub as ls
    players = ls.default_players()  # the default experiment's game and captioning speaker, from the cache
    boards = players.game.sample(32, numpy.random.default_rng(0), "test")
    outcome = players.game.play(players.speaker.generate(boards.target_images, greedy=True).texts, boards)
    run = ls.load_run("outputs/train/2026-12-03_10-00-00")  # a trained run: its game and trained speaker
    gray = ls.create_listener("gray", "ViT-B-32", "openai", perception="grayscale")  # your own players
    env = ls.make_env(players.game, players.speaker.tokenizer)  # PettingZoo AEC (parallel=True: Parallel)
    store = ls.StudyStore("studies/pilot/study.db")  # a human study's answers (ls.study_stats: its statistics)
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
    "Condition": "listener_sub.study.protocol",
    "DataConfig": "listener_sub.data",
    "DataError": "listener_sub.errors",
    "DataSource": "listener_sub.data",
    "EvalConfig": "listener_sub.evaluation",
    "Game": "listener_sub.game",
    "GameConfig": "listener_sub.game",
    "ImageSet": "listener_sub.data",
    "LanguageModelConfig": "listener_sub.spec",
    "Listener": "listener_sub.models.listener",
    "ListenerConfig": "listener_sub.spec",
    "MissingArtifact": "listener_sub.cache",
    "Outcome": "listener_sub.game",
    "PERCEPTIONS": "listener_sub.perception",
    "Perception": "listener_sub.perception",
    "Players": "listener_sub.assembly",
    "Pool": "listener_sub.game",
    "RLConfig": "listener_sub.rl",
    "RerankConfig": "listener_sub.rerank",
    "Reward": "listener_sub.rewards",
    "Run": "listener_sub.loading",
    "RunSpec": "listener_sub.spec",
    "Schedule": "listener_sub.optim",
    "Speaker": "listener_sub.models.speaker",
    "SpeakerConfig": "listener_sub.spec",
    "StudyConfig": "listener_sub.study.protocol",
    "StudyStore": "listener_sub.study.store",
    "Trainer": "listener_sub.rl",
    "UserError": "listener_sub.errors",
    "VisionConfig": "listener_sub.spec",
    "WorldConfig": "listener_sub.world",
    "caption_action": "listener_sub.envs",
    "create_adapter": "listener_sub.adapters",
    "create_game": "listener_sub.game",
    "create_listener": "listener_sub.models.listener",
    "create_play_app": "listener_sub.web.play_app",
    "create_speaker": "listener_sub.models.speaker",
    "create_study_app": "listener_sub.web.study_app",
    "default_players": "listener_sub.loading",
    "evaluate_listener": "listener_sub.evaluation",
    "evaluate_speaker": "listener_sub.evaluation",
    "find_adapter": "listener_sub.adapters.io",
    "listen": "listener_sub.game",
    "load_run": "listener_sub.loading",
    "make_env": "listener_sub.envs",
    "make_perception": "listener_sub.perception",
    "oracle_gaps": "listener_sub.oracle",
    "prepare_study": "listener_sub.study.materials",
    "rerank": "listener_sub.rerank",
    "sample_scenes": "listener_sub.world",
    "study_stats": "listener_sub.study.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'listener_sub' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__

"""listener-sub: speaker training by listener subtraction in a Dixit-style reference game."""
from listener_sub.cache import cache_root, config_key
from listener_sub.data import CaptionDataset, ClevrCaptions, CocoCaptions, Example, SyntheticCaptions, make_dataset
from listener_sub.errors import DataError, UserError
from listener_sub.game import DISTRACTORS, Boards, Game, Outcome, Pool, sample_boards
from listener_sub.perception import PERCEPTIONS, make_perception
from listener_sub.rewards import SCORES, Reward
from listener_sub.world import CaptionConfig, SceneBatch, WorldConfig, caption_scenes, parse, render, sample_scenes, truthful

__version__ = "0.1.0"

__all__ = [
    "DISTRACTORS",
    "PERCEPTIONS",
    "SCORES",
    "Boards",
    "CaptionConfig",
    "CaptionDataset",
    "ClevrCaptions",
    "CocoCaptions",
    "DataError",
    "Example",
    "Game",
    "Outcome",
    "Pool",
    "Reward",
    "SceneBatch",
    "SyntheticCaptions",
    "UserError",
    "WorldConfig",
    "cache_root",
    "caption_scenes",
    "config_key",
    "make_dataset",
    "make_perception",
    "parse",
    "render",
    "sample_boards",
    "sample_scenes",
    "truthful",
]

"""Tiny players for game, oracle and env tests: random CLIP listeners (sharpened), a word-level tokenizer, a speaker."""

from __future__ import annotations

import math

import open_clip
import torch
from test_speaker import SPECIALS, caption_words, make_speaker, one_thread  # noqa: F401 (one_thread: an autouse fixture to import)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from listener_sub.game import Game, create_game
from listener_sub.models.listener import Listener, register_model_configs
from listener_sub.models.speaker import Speaker
from listener_sub.perception import make_perception
from listener_sub.rewards import Reward
from listener_sub.world import WorldConfig

COLORBLIND = Reward(intended={"full": 1.0}, subtracted={"gray": 1.0}, lam=1.0, score="prob")

# captions the game tests score: colour-only, shape-only and fuller ones
CAPTIONS = [
    "a red object.",
    "a small square.",
    "a striped circle on the left.",
    "a blue object.",
    "a large green diamond.",
    "a cross.",
]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the world's caption words, with [PAD] and [EOS] (the speaker LM's vocabulary)."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(SPECIALS + caption_words())}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")


def tiny_listener(name: str, perception: str, seed: int) -> Listener:
    """A random ViT CLIP with logit scale 100, so that its picks are not near-ties."""
    register_model_configs()
    torch.manual_seed(seed)
    clip = open_clip.create_model("ls-vit-tiny-64")
    clip.logit_scale.data.fill_(math.log(100.0))
    return Listener(
        name, clip, open_clip.get_tokenizer("ls-vit-tiny-64"), make_perception(perception), "ls-vit-tiny-64"
    )


def tiny_listeners() -> dict[str, Listener]:
    """full (full colour), gray (grayscale) and a full-colour control full_b."""
    return {
        "full": tiny_listener("full", "full", 1),
        "gray": tiny_listener("gray", "grayscale", 2),
        "full_b": tiny_listener("full_b", "full", 3),
    }


def tiny_game(listeners: dict[str, Listener], reward: Reward = COLORBLIND, pool_size: int = 96, **kwargs) -> Game:
    return create_game(WorldConfig(), listeners, reward, pool_size=pool_size, **kwargs)


def tiny_speaker(tokenizer: PreTrainedTokenizerFast) -> Speaker:
    return make_speaker(tokenizer, seed=0)

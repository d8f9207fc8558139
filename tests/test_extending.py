"""The recipes of docs/design.md ("Extending"), each run as written there: a listener, an adapter, an LM of your own.

(A perception and a reward of your own:
tests/test_config.py::test_a_perception_and_a_reward_of_your_own_plug_in_by_target.)
Also: factories and evaluation leave every global RNG as it was, and the speaker's tower leaves the caller's CLIP as it
was.
"""

import random

import numpy as np
import open_clip
import pytest
import torch
from hydra import compose, initialize_config_module
from test_speaker import make_speaker, tiny_lm
from tiny_game import one_thread, tiny_game, tiny_listeners, word_tokenizer  # noqa: F401 (one_thread: an autouse fixture)

from listener_sub.adapters import ADAPTERS
from listener_sub.adapters.io import read_adapter
from listener_sub.assembly import Assembly
from listener_sub.cache import ArtifactCache
from listener_sub.cli import group_overrides
from listener_sub.commands.common import run_spec
from listener_sub.evaluation import EvalConfig, evaluate_listener, evaluate_speaker, held_out_boards
from listener_sub.game import Pool
from listener_sub.models.listener import register_model_configs
from listener_sub.models.speaker import Speaker
from listener_sub.models.vision import VisionTower
from listener_sub.pretrain.listeners import ListenerRecipe, train_listener
from listener_sub.world import WorldConfig


def compose_train(*overrides):
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        return compose("train", overrides=group_overrides(list(overrides)))


def test_a_listener_of_your_own():
    """A low-resolution subtracted listener, defined on the command line and named by the reward."""
    spec = run_spec(compose_train(
        "+listeners.lowres={model: ls-vit-tiny-64, perception: {name: lowres, factor: 4}, seed: 7}",
        "~reward.subtracted",
        "+reward.subtracted={lowres: 1.0}",
    ))  # fmt: skip
    assert spec.players == ["full", "lowres"]
    lowres = spec.listeners["lowres"]
    assert (lowres.model, lowres.seed, spec.perceptions["lowres"].factor, lowres.pretrained) == (
        "ls-vit-tiny-64",
        7,
        4,
        None,
    )
    from_group = run_spec(
        compose_train("+listener@listeners.gray2=gray", "listeners.gray2.seed=9", "game.listeners=[full,gray,gray2]")
    )
    assert from_group.perceptions["gray2"].name == "grayscale" and from_group.listeners["gray2"].seed == 9


ADAPTER_MODULE = '''
from dataclasses import dataclass
from torch import nn


@dataclass
class LinearPrefixConfig:
    d_vision: int | None = None
    d_lm: int | None = None
    n_latents: int = 8


class LinearPrefix(nn.Module):
    """The pooled embedding -> one linear map -> a soft prefix (B, M, d_lm)."""

    kind = "linear_prefix"
    uses_tokens = False
    config_class = LinearPrefixConfig

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.proj = nn.Linear(cfg.d_vision, cfg.n_latents * cfg.d_lm)

    def forward(self, pooled):
        return self.proj(pooled).view(len(pooled), self.config.n_latents, self.config.d_lm)
'''


def test_an_adapter_of_your_own(tmp_path, monkeypatch):
    (tmp_path / "my_adapter.py").write_text(ADAPTER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    # `--config-dir my_configs` on the command line
    option = tmp_path / "my_configs" / "speaker" / "adapter" / "linear_prefix.yaml"
    option.parent.mkdir(parents=True)
    option.write_text("kind: my_adapter.LinearPrefix  # your adapter class, by its import path\nn_latents: 6\n")
    try:
        spec = run_spec(
            compose_train(f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]", "speaker.adapter=linear_prefix")
        )
        assert spec.speaker.adapter == {"kind": "linear_prefix", "n_latents": 6}
        settings = dict(spec.speaker.adapter)
        register_model_configs()
        tokenizer = word_tokenizer()
        speaker = Speaker.build(
            open_clip.create_model("ls-vit-tiny-64").visual,
            tiny_lm(tokenizer),
            tokenizer,
            settings.pop("kind"),
            **settings,
        )
        assert speaker.prefix(np.zeros((2, 64, 64, 3), np.uint8)).shape == (
            2,
            6,
            speaker.lm.get_input_embeddings().embedding_dim,
        )
        speaker.save_adapter(tmp_path / "adapter.safetensors")
        assert type(read_adapter(tmp_path / "adapter.safetensors")).__name__ == "LinearPrefix"
    finally:
        ADAPTERS.pop("linear_prefix", None)  # registered for this test only


def test_an_lm_of_your_own(tmp_path):
    """Any save_pretrained directory (model + tokenizer) is the speaker's LM; without a tokenizer it is refused."""
    tokenizer = word_tokenizer()
    lm = tiny_lm(tokenizer)
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    spec = run_spec(compose_train(f"lm.name={tmp_path / 'lm'}"))
    assert Assembly(spec, ArtifactCache(tmp_path / "cache")).lm_dir() == str(tmp_path / "lm")
    lm.save_pretrained(tmp_path / "bare")
    with pytest.raises(Exception, match="no tokenizer files"):
        run_spec(compose_train(f"lm.name={tmp_path / 'bare'}"))


def rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def assert_untouched(before):
    after = rng_states()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]


def test_factories_recipes_and_evaluation_leave_the_global_rng_alone(tmp_path):
    listeners = tiny_listeners()
    speaker = make_speaker(word_tokenizer())
    before = rng_states()
    game = tiny_game(listeners)
    boards = held_out_boards(game, EvalConfig(boards=8))
    metrics = evaluate_speaker(speaker, game, boards, speaker.adapter, seed=1, boards_file=tmp_path / "boards.npz")
    with np.load(tmp_path / "boards.npz") as per_board:
        for key in (
            "gap",
            "prob_gap",
            "acc/gray",
            "sample/gap",
            "sample/kl",
        ):  # every board's own value, greedy and sampled
            assert len(per_board[key]) == len(boards) and per_board[key].mean() == pytest.approx(metrics[key])
    assert evaluate_speaker(speaker, game, boards, speaker.adapter, seed=1) == metrics
    evaluate_listener(listeners["gray"], Pool.build(WorldConfig(), "test", 16), n_boards=4)
    train_listener(
        "ls-vit-tiny-64",
        "grayscale",
        WorldConfig(),
        ListenerRecipe(steps=2, batch_size=16, pool_size=64),
        seed=3,
        progress=False,
    )
    assert_untouched(before)


def test_the_speaker_tower_leaves_the_callers_clip_as_it_was():
    register_model_configs()
    clip = open_clip.create_model("ls-vit-tiny-64")
    tower = VisionTower(clip)
    pixels = torch.rand(2, 3, 64, 64)
    pooled, tokens = tower(pixels)
    assert clip.visual.output_tokens is False  # not switched on
    torch.testing.assert_close(pooled, clip.visual(pixels))  # the tower's own forward, pooled embedding unchanged
    clip.visual.output_tokens = True
    reference_pooled, reference_tokens = clip.visual(pixels)
    torch.testing.assert_close(tokens, reference_tokens)
    torch.testing.assert_close(pooled, reference_pooled)

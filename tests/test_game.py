"""The batched game core: boards and distractor policies, perception, choices, rewards."""

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from tiny_game import CAPTIONS, COLORBLIND, one_thread, tiny_game, tiny_listeners, word_tokenizer  # noqa: F401 (one_thread: an autouse fixture)

from listener_sub.commands.common import run_spec
from listener_sub.errors import UserError
from listener_sub.evaluation import colour_confusable
from listener_sub.game import Boards, GameConfig, Pool, choose, decode_tokens, listen, sample_boards
from listener_sub.models.listener import Listener
from listener_sub.perception import make_perception
from listener_sub.rewards import MISLED_COST, Reward
from listener_sub.world import ATTRIBUTES, WORLD_VOCAB, WorldConfig


@pytest.fixture(scope="module")
def listeners():
    return tiny_listeners()


@pytest.fixture(scope="module")
def pool() -> Pool:
    return Pool.build(WorldConfig(), "test", 300)


def shared_attributes(boards: Boards) -> np.ndarray:
    """(B, N) attributes each board image's referent shares with the target's."""
    attrs = boards.pool.attrs[boards.items]  # (B, N, A)
    return (attrs == boards.target_attrs[:, None, :]).sum(-1)


def distractor_mask(boards: Boards) -> np.ndarray:
    mask = np.ones(boards.items.shape, dtype=bool)
    mask[np.arange(len(boards)), boards.target] = False
    return mask


def test_random_boards_keep_the_old_signature_and_are_seeded():
    boards = sample_boards(50, 4000, 4, np.random.default_rng(0))
    assert boards.items.shape == (4000, 4) and boards.pool is None
    assert all(len(set(row)) == 4 for row in boards.items.tolist())
    assert np.all(np.bincount(boards.target, minlength=4) > 850)  # target position uniform (1000 expected each)
    again = sample_boards(50, 4000, 4, np.random.default_rng(0))
    assert np.array_equal(boards.items, again.items) and np.array_equal(boards.target, again.target)
    assert not np.array_equal(boards.items, sample_boards(50, 4000, 4, np.random.default_rng(1)).items)


@pytest.mark.parametrize("distractors, lo, hi", [("hard", 1, 4), ("differ_one", 4, 4)])
def test_related_distractors(pool, distractors, lo, hi):
    boards = sample_boards(len(pool), 500, 4, np.random.default_rng(3), distractors, pool)
    assert all(len(set(row)) == 4 for row in boards.items.tolist())
    shared = shared_attributes(boards)[distractor_mask(boards)]  # (B * 3,)
    assert shared.min() >= lo and shared.max() <= hi
    assert len(np.unique(boards.items[distractor_mask(boards)])) > 100  # drawn from many scenes
    assert np.all(np.bincount(boards.target, minlength=4) > 80)
    again = sample_boards(len(pool), 500, 4, np.random.default_rng(3), distractors, pool)
    assert np.array_equal(boards.items, again.items) and np.array_equal(boards.target, again.target)


def test_random_distractors_include_unrelated_scenes(pool):
    boards = sample_boards(len(pool), 500, 4, np.random.default_rng(3), "random", pool)
    assert (shared_attributes(boards)[distractor_mask(boards)] == 0).mean() > 0.05  # which `hard` never draws


def test_board_sampling_errors(pool):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="too few scenes"):
        sample_boards(6, 10, 4, rng, "differ_one", Pool.build(WorldConfig(), "test", 6))
    with pytest.raises(ValueError, match="need the pool"):
        sample_boards(len(pool), 2, 4, rng, "hard")
    with pytest.raises(ValueError, match="unknown distractors 'easy'"):
        sample_boards(len(pool), 2, 4, rng, "easy", pool)
    with pytest.raises(ValueError, match="n_images"):
        sample_boards(3, 2, 4, rng)


def test_boards_slice_and_repeat(pool):
    boards = sample_boards(len(pool), 5, 3, np.random.default_rng(0), "random", pool)
    assert boards.images.shape == (5, 3, 64, 64, 3) and boards.target_images.shape == (5, 64, 64, 3)
    assert np.array_equal(boards.target_images[2], pool.images[boards.items[2, boards.target[2]]])
    twice = boards.repeat(2)
    assert np.array_equal(twice.items[[2, 3]], boards.items[[1, 1]]) and twice.target[3] == boards.target[1]
    part = boards[1:3]
    assert np.array_equal(part.items, boards.items[1:3]) and part.pool is pool
    with pytest.raises(ValueError, match="carry no pool"):
        _ = sample_boards(10, 1, 4, np.random.default_rng(0)).images


def test_play_scores_boards_through_each_listeners_perception(listeners):
    game = tiny_game(listeners)
    boards = game.sample(len(CAPTIONS), np.random.default_rng(7), "test")
    out = game.play(CAPTIONS, boards)

    def by_hand(
        listener,
    ):  # softmax over the board of scale x cosine, each image seen through the listener's perception
        images = listener.encode_images(boards.images.reshape(-1, *boards.images.shape[2:])).view(
            *boards.items.shape, -1
        )  # (B, N, D)
        texts = listener.encode_texts(CAPTIONS)
        return (listener.clip.logit_scale.exp() * torch.einsum("bd,bnd->bn", texts, images)).softmax(-1)

    for name, listener in listeners.items():
        assert torch.allclose(out.probs[name], by_hand(listener), atol=1e-5)
        assert torch.equal(out.choices[name], out.probs[name].argmax(-1))
        assert torch.equal(out.correct[name], out.choices[name] == torch.as_tensor(boards.target))
    rows = torch.arange(len(boards))
    target = torch.as_tensor(boards.target)
    full, gray = out.probs["full"][rows, target], out.probs["gray"][rows, target]  # (B,) each
    chance = 1 / boards.items.shape[1]  # the game tells the reward its boards' chance level
    floored = full - MISLED_COST * (chance - full).clamp_min(0) - (gray - chance).clamp_min(0)
    assert torch.allclose(out.reward, floored) and not torch.allclose(out.reward, full - gray)
    assert torch.equal(out.gap, out.correct["full"].float() - out.correct["gray"].float())
    assert torch.equal(out.listener_rewards["full_b"], out.correct["full_b"].float())
    gray = listeners["gray"]
    seeing_colour = Listener("gray", gray.clip, gray.tokenizer, make_perception("full"))
    assert not torch.allclose(out.probs["gray"], by_hand(seeing_colour), atol=1e-3)
    assert torch.allclose(listen({"gray": seeing_colour}, CAPTIONS, boards)["gray"], by_hand(seeing_colour), atol=1e-5)


def test_rl_batches_of_k_captions_per_board(listeners):
    paper = Reward(intended={"full": 1.0}, subtracted={"gray": 1.0}, score="acc", chance_floor=False, misled_cost=0.0)
    game = tiny_game(listeners, reward=paper)
    boards = game.sample(3, np.random.default_rng(1))  # train split
    assert game.pool("train") is boards.pool and game.pool("test") is not boards.pool
    out = game.play(CAPTIONS, boards.repeat(2))  # row b * 2 + j: caption j of board b
    assert out.reward.shape == (6,) and set(out.reward.tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(out.reward, out.gap)  # acc with one listener on each side: the reward is the gap


def test_sampled_choices_are_seeded_draws():
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0]]).repeat(2000, 1)
    picks = choose(probs, "sample", torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {0, 1} and abs(picks.float().mean().item() - 0.5) < 0.05
    assert torch.equal(picks, choose(probs, "sample", torch.Generator().manual_seed(0)))
    assert choose(probs, "argmax").eq(0).all()


def test_sample_choice_game_is_reproducible(listeners):
    game = tiny_game(listeners, choice="sample")
    boards = game.sample(len(CAPTIONS), np.random.default_rng(2), "test")
    a = game.play(CAPTIONS, boards, torch.Generator().manual_seed(4))
    b = game.play(CAPTIONS, boards, torch.Generator().manual_seed(4))
    assert all(torch.equal(a.choices[n], b.choices[n]) for n in listeners) and torch.equal(a.reward, b.reward)


def test_pool_encodes_each_image_once_per_listener(listeners, monkeypatch):
    game = tiny_game(listeners)
    boards = game.sample(4, np.random.default_rng(0), "val")
    calls = []
    full = listeners["full"]
    original = full.encode_images
    monkeypatch.setattr(full, "encode_images", lambda images: calls.append(len(images)) or original(images))
    first = game.play(CAPTIONS[:4], boards)
    assert sum(calls) == len(np.unique(boards.items))
    second = game.play(CAPTIONS[:4], boards)
    assert sum(calls) == len(np.unique(boards.items)) and torch.equal(first.probs["full"], second.probs["full"])


def test_game_validation(listeners):
    with pytest.raises(ValueError, match="reads listener"):
        tiny_game({"full": listeners["full"]}, COLORBLIND)
    with pytest.raises(ValueError, match="unknown choice"):
        tiny_game(listeners, choice="vote")
    with pytest.raises(ValueError, match="unknown distractors"):
        tiny_game(listeners, distractors="easy")
    game = tiny_game(listeners)
    with pytest.raises(ValueError, match="2 captions for 1 boards"):
        game.play(CAPTIONS[:2], game.sample(1, np.random.default_rng(0)))


def test_decode_tokens_cuts_at_eos():
    tok = word_tokenizer()
    ids = tok("a red object .", add_special_tokens=False)["input_ids"]
    rows = np.array(
        [
            ids + [tok.eos_token_id, tok.pad_token_id],
            [tok.eos_token_id, *ids, tok.pad_token_id],
            ids + [tok.pad_token_id] * 2,
        ]
    )
    assert decode_tokens(tok, rows) == ["a red object .", "", "a red object ."]


def compose_rollout(*overrides):
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        return compose("rollout", overrides=list(overrides))


def test_the_game_of_a_config_is_checked_before_anything_is_built():
    spec = run_spec(compose_rollout("game.distractors=hard", "reward.score=acc"))
    assert spec.players == ["full", "gray"] and spec.reward == Reward({"full": 1.0}, {"gray": 1.0}, 1.0, "acc")
    assert spec.game == GameConfig(n_images=4, distractors="hard", choice="argmax", pool_size=4096)
    assert run_spec(compose_rollout("game.listeners=[full,gray,full_b]")).players == ["full", "gray", "full_b"]
    for override, message in [
        ("game.distractors=easy", "unknown distractors"),
        ("game.listeners=[full]", "reads listener"),
        ("game.listeners=[nobody]", "nobody"),
    ]:
        with pytest.raises(UserError, match=message):
            run_spec(compose_rollout(override))


def test_colour_confusable_boards_through_a_listeners_eyes(pool):
    boards = sample_boards(len(pool), 200, 4, np.random.default_rng(3), pool=pool)
    colours = pool.attrs[boards.items][..., ATTRIBUTES.index("color")]  # (B, N) each image's referent colour
    target = colours[np.arange(len(boards)), boards.target]  # (B,)
    names = WORLD_VOCAB.values["color"]
    blue, purple = names.index("blue"), names.index("purple")
    brown, green = names.index("brown"), names.index("green")

    def has(a: int, b: int) -> np.ndarray:  # the target is a, a distractor is b
        return (target == a) & ((colours == b) & distractor_mask(boards)).any(1)

    by_hand = has(blue, purple) | has(purple, blue) | has(brown, green) | has(green, brown)
    deutan = colour_confusable(boards, make_perception({"name": "cvd", "kind": "deutan"}))
    assert by_hand.any() and (deutan == by_hand).all()
    assert not colour_confusable(boards, make_perception("full")).any()
    gray = colour_confusable(boards, make_perception("grayscale"))  # every other colour is a match for it
    assert (gray == ((colours != target[:, None]) & distractor_mask(boards)).any(1)).all()

"""Oracle speakers: batched scoring of the 31 canonical captions agrees with playing each one through the game."""

import numpy as np
import pytest
import torch
from tiny_game import one_thread, tiny_game, tiny_listeners  # noqa: F401 (one_thread: an autouse fixture)

import listener_sub.oracle as oracle
from listener_sub.oracle import SUBSETS, oracle_captions, oracle_gaps, oracle_speaker
from listener_sub.rewards import Reward
from listener_sub.world.combos import WORLD_COMBOS
from listener_sub.world.grammar import POSITION_PHRASES


@pytest.fixture(scope="module")
def listeners():
    return tiny_listeners()


def brute_force(game, boards):
    """(S, B) reward and gap, one game.play per subset."""
    combos = WORLD_COMBOS.ids(boards.target_attrs)
    outcomes = [
        game.play([WORLD_COMBOS.caption(int(c), WORLD_COMBOS.mask_of(s)) for c in combos], boards) for s in SUBSETS
    ]
    return torch.stack([o.reward for o in outcomes]), torch.stack([o.gap for o in outcomes])


def test_subsets_and_captions(listeners):
    assert len(SUBSETS) == 31 and len(set(SUBSETS)) == 31 and SUBSETS[0] == ("color",)
    boards = tiny_game(listeners).sample(20, np.random.default_rng(0), "test")
    texts, index = oracle_captions(boards)
    assert index.shape == (31, 20) and len(texts) == len(set(texts))
    for b in range(20):
        target = boards.pool.scenes.objects(int(boards.target_items[b]))[0]
        assert texts[index[0, b]] == f"a {target['color']} object."
        where = POSITION_PHRASES[target["position"]]
        assert (
            texts[index[-1, b]] == f"a {target['size']} {target['color']} {target['fill']} {target['shape']} {where}."
        )


@pytest.mark.parametrize("score", ["prob", "acc"])
def test_batched_oracle_equals_playing_every_subset(listeners, monkeypatch, score):
    monkeypatch.setattr(oracle, "BOARD_CHUNK", 16)  # 40 boards in three chunks
    paper = Reward(intended={"full": 1.0}, subtracted={"gray": 1.0}, score=score, chance_floor=False, misled_cost=0.0)
    game = tiny_game(listeners, reward=paper)
    boards = game.sample(40, np.random.default_rng(123), "test")
    rewards, gaps = brute_force(game, boards)
    result = oracle_gaps(game, boards)
    mean_gap = gaps.mean(1)
    best = int(mean_gap.argmax())
    assert result["fixed_oracle_subset"] == list(SUBSETS[best])
    assert result["fixed_oracle_gap"] == pytest.approx(float(mean_gap[best]), abs=1e-6)
    assert [result["subset_gap"]["+".join(s)] for s in SUBSETS] == pytest.approx(mean_gap.tolist(), abs=1e-6)
    per_board = []
    for b in range(len(boards)):
        top = rewards[:, b] >= rewards[:, b].max() - 1e-6
        per_board.append(gaps[top, b].max().item())
    assert result["oracle_gap"] == pytest.approx(float(np.mean(per_board)), abs=1e-6)
    assert result["oracle_reward"] == pytest.approx(float(rewards.max(0).values.mean()), abs=1e-6)
    if score == "acc":  # the paper's reward is the gap: the per-board oracle can only do better than one fixed subset
        assert result["oracle_gap"] == pytest.approx(result["oracle_reward"])
        assert result["oracle_gap"] >= result["fixed_oracle_gap"] and result["oracle_gap"] > 0


def test_per_board_oracle_speaker_says_the_best_subset(listeners):
    game = tiny_game(listeners)
    boards = game.sample(24, np.random.default_rng(7), "test")
    rewards, gaps = brute_force(game, boards)
    captions, subsets = oracle_speaker(game, boards)
    combos = WORLD_COMBOS.ids(boards.target_attrs)
    assert captions == [WORLD_COMBOS.caption(int(c), WORLD_COMBOS.mask_of(s)) for c, s in zip(combos, subsets)]
    played = game.play(captions, boards)
    assert played.reward.tolist() == pytest.approx(rewards.max(0).values.tolist(), abs=1e-5)
    assert played.gap.mean().item() == pytest.approx(oracle_gaps(game, boards)["oracle_gap"], abs=1e-6)

"""Inference-time listener subtraction: best-of-n reranking by the game's reward, inside the evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_game import one_thread, tiny_game, tiny_listeners, tiny_speaker, word_tokenizer  # noqa: F401 (one_thread: an autouse fixture)

import listener_sub.rerank as rerank_module
from listener_sub.evaluation import EvalConfig, evaluate_speaker, held_out_boards
from listener_sub.rerank import RerankConfig, best_of_n_kl, draws_per_board, rerank

N, T = 6, 16  # samples per board, max new tokens


@pytest.fixture(scope="module")
def played():
    listeners = tiny_listeners()
    game = tiny_game({name: listeners[name] for name in ("full", "gray")})
    speaker = tiny_speaker(word_tokenizer())
    boards = held_out_boards(game, EvalConfig(boards=10))
    draws = torch.rand(
        len(boards), draws_per_board(N, T, len(game.listeners)), generator=torch.Generator().manual_seed(5)
    )
    return game, speaker, boards, draws


def test_rerank_keeps_the_sample_the_game_rewards_most(played):
    game, speaker, boards, draws = played
    features = speaker.encode(boards.target_images)
    chosen = rerank(speaker, game, boards, features, draws, N, T)
    # the same n samples by hand: board b's sample j drew its tokens with draws[b, j*T:(j+1)*T], its picks after all
    # tokens
    samples = speaker.sample(speaker.adapt(features), k=N, max_new_tokens=T, draws=draws[:, : N * T].reshape(-1, T))
    rewards = game.play(
        samples.texts, boards.repeat(N), draws=draws[:, N * T :].reshape(len(boards) * N, -1)
    ).reward.view(len(boards), N)
    best = rewards.argmax(1)
    assert chosen.texts == [samples.texts[b * N + int(j)] for b, j in enumerate(best)]
    assert len(set(samples.texts)) > len(boards)  # the samples differ, so the choice is a real one
    played_again = game.play(chosen.texts, boards, draws=draws[:, N * T : N * T + len(game.listeners)]).reward
    torch.testing.assert_close(
        played_again, rewards.max(1).values
    )  # the kept caption's reward is the best of its board's
    assert rewards.max(1).values.mean() > rewards.mean()
    width = chosen.token_log_probs.shape[1]
    torch.testing.assert_close(
        chosen.token_log_probs.sum(1), samples.token_log_probs[best + torch.arange(len(boards)) * N, :width].sum(1)
    )


def test_a_large_beta_keeps_the_sample_the_speaker_finds_most_likely(played):
    game, speaker, boards, draws = played
    features = speaker.encode(boards.target_images)
    chosen = rerank(speaker, game, boards, features, draws, N, T, beta=1e6)
    samples = speaker.sample(speaker.adapt(features), k=N, max_new_tokens=T, draws=draws[:, : N * T].reshape(-1, T))
    likeliest = samples.token_log_probs.sum(1).view(len(boards), N).argmax(1)
    assert chosen.texts == [samples.texts[b * N + int(j)] for b, j in enumerate(likeliest)]
    assert (
        chosen.texts != rerank(speaker, game, boards, features, draws, N, T).texts
    )  # the reward alone chooses otherwise


def test_rerank_does_not_depend_on_how_boards_share_a_pass(played, monkeypatch):
    game, speaker, boards, draws = played
    features = speaker.encode(boards.target_images)
    whole = rerank(speaker, game, boards, features, draws, N, T)
    monkeypatch.setattr(rerank_module, "RERANK_CAPTIONS", 2 * N)  # two boards a pass
    split = rerank(speaker, game, boards, features, draws, N, T)
    assert split.texts == whole.texts
    torch.testing.assert_close(split.lengths, whole.lengths)


def test_evaluation_reranks_the_plain_keys_and_bounds_their_kl(played, tmp_path):
    game, speaker, boards, _ = played
    greedy = evaluate_speaker(speaker, game, boards, speaker.adapter, seed=1)
    best = evaluate_speaker(
        speaker, game, boards, speaker.adapter, seed=1, boards_file=tmp_path / "b.npz", decode=RerankConfig(n=N, seed=3)
    )
    assert {k: v for k, v in best.items() if k.startswith("sample/")} == {
        k: v for k, v in greedy.items() if k.startswith("sample/")
    }
    # the reference is the sampling speaker itself: the kl is the best-of-n bound exactly, on every board
    assert best["kl"] == pytest.approx(math.log(N) - (N - 1) / N) == pytest.approx(best_of_n_kl(N))
    with np.load(tmp_path / "b.npz") as per_board:
        # per board up to float32 rounding of the log-probs it is computed from
        assert np.allclose(per_board["kl"], best_of_n_kl(N), rtol=0, atol=1e-4) and per_board[
            "reward"
        ].mean() == pytest.approx(best["reward"])
    assert best["reward"] > best["sample/reward"]  # the best of six samples beats one sample
    assert evaluate_speaker(speaker, game, boards, speaker.adapter, seed=1, decode=RerankConfig(n=N, seed=3)) == best
    assert evaluate_speaker(speaker, game, boards, speaker.adapter, seed=1, decode=RerankConfig(n=N, seed=4)) != best


def test_best_of_one_is_a_sample_and_its_kl_bound_zero():
    assert best_of_n_kl(1) == 0.0 and best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)
    with pytest.raises(ValueError, match="at least one caption"):
        RerankConfig(n=0)
    with pytest.raises(ValueError, match="beta=-1"):
        RerankConfig(beta=-1.0)

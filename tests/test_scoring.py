"""One scoring path: the same captions on the same boards get the same probabilities and picks everywhere.

The game core (`Game.listen` / `Game.play`, both on `listener_sub.game.listen`) against the oracle speakers, the
listeners' evaluation, the env's listener policies and round, and the report's plays.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_game import CAPTIONS, one_thread, tiny_game, tiny_listeners, word_tokenizer  # noqa: F401 (one_thread: an autouse fixture)

import listener_sub.evaluation as evaluation
from listener_sub.envs import dixit_v0
from listener_sub.envs.policies import ListenerPolicy
from listener_sub.game import Pool
from listener_sub.oracle import SUBSETS, oracle_captions, subset_scores
from listener_sub.report.gather import plays
from listener_sub.world import ATTRIBUTES, WorldConfig
from listener_sub.world.combos import WORLD_COMBOS

PACKAGE = Path(__file__).resolve().parent.parent / "listener_sub"


@pytest.fixture(scope="module")
def game():
    return tiny_game(tiny_listeners())


@pytest.fixture(scope="module")
def boards(game):
    return game.sample(len(CAPTIONS), np.random.default_rng(3), "test")


def assert_same(probs, reference):
    assert probs.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(
            probs[name], reference[name], rtol=0, atol=1e-5
        )  # batch composition moves the last bits
        assert torch.equal(probs[name].argmax(-1), reference[name].argmax(-1)), name


def test_oracle_scores_its_captions_through_the_game(game):
    boards = game.sample(12, np.random.default_rng(5), "test")
    texts, index = oracle_captions(boards)
    rewards, gaps = subset_scores(game, boards)
    for s in (0, 7, len(SUBSETS) - 1):
        captions = [texts[i] for i in index[s]]
        assert captions == [
            WORLD_COMBOS.caption(int(c), WORLD_COMBOS.mask_of(SUBSETS[s]))
            for c in WORLD_COMBOS.ids(boards.target_attrs)
        ]
        played = game.play(captions, boards)
        torch.testing.assert_close(rewards[s], played.reward, rtol=0, atol=1e-6)
        assert torch.equal(gaps[s], played.gap)


def test_listener_evaluation_scores_through_the_game(game, monkeypatch):
    calls = []

    def spy(listeners, captions, boards):
        probs = game_listen(listeners, captions, boards)
        calls.append((dict(listeners), list(captions), boards, probs))
        return probs

    game_listen = evaluation.listen
    monkeypatch.setattr(evaluation, "listen", spy)
    listener = game.listeners["gray"]
    metrics = evaluation.evaluate_listener(
        listener, Pool.build(WorldConfig(), "test", 40), n_boards=10, board_size=4, seed=1
    )
    conditions = evaluation.listener_conditions(ATTRIBUTES)
    assert len(calls) == len(conditions)
    for (listeners, captions, boards, probs), (cond, _) in zip(calls, conditions.items()):
        assert listeners == {"gray": listener}
        assert_same(probs, {"gray": game.listen(captions, boards)["gray"]})  # the game's own scoring, same numbers
        accuracy = float((probs["gray"].argmax(1).numpy() == boards.target).mean())
        assert metrics[f"acc_{cond}"] == pytest.approx(accuracy)


def test_env_policies_round_and_report_score_through_the_game(game):
    tokenizer = word_tokenizer()
    env = dixit_v0.raw_env(game=game, tokenizer=tokenizer, split="test")
    round_ = env.round
    for seed, caption in enumerate(CAPTIONS):
        env.reset(seed=seed)
        ids = tokenizer(caption, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        tokens = np.full(round_.max_tokens, round_.pad_id, dtype=np.int64)
        tokens[: len(ids)] = ids
        round_.speak(tokens)
        reference = game.listen([round_.caption], round_.boards)
        for agent, name in round_.listeners.items():
            policy = ListenerPolicy(round_, agent)
            probs = policy.probs(round_.observe(agent))
            assert_same({name: probs[None]}, {name: reference[name]})
            round_.pick({agent: policy(round_.observe(agent))})
        outcome = round_.finish()
        assert_same(outcome.probs, reference)
        assert {round_.listeners[a]: p for a, p in round_.picks.items()} == {
            n: int(p.argmax()) for n, p in reference.items()
        }
        played = game.play([round_.caption], round_.boards)
        row = plays([round_.caption], played, game, round_.boards)[0]
        assert row.probs == {n: p[0].tolist() for n, p in reference.items()} and row.picks == {
            n: int(p.argmax()) for n, p in reference.items()
        }


def test_batched_play_equals_one_board_at_a_time(game, boards):
    together = game.listen(CAPTIONS, boards)
    for b, caption in enumerate(CAPTIONS):
        alone = game.listen([caption], boards[b : b + 1])
        assert_same(alone, {n: p[b : b + 1] for n, p in together.items()})


def test_no_second_copy_of_the_scoring_rule():
    """Only the game core turns features into P(image | caption); training recipes have their own losses."""
    users = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "logit_scale" in path.read_text() and "pretrain" not in path.parts
    )
    assert users == ["game.py", "models/listener.py"]


def test_the_probability_gap_is_the_target_probabilities_apart(game, boards):
    played = game.play(CAPTIONS, boards)
    target = torch.as_tensor(boards.target)[:, None]  # (B, 1)
    target_probs = {name: p.gather(1, target)[:, 0] for name, p in played.probs.items()}  # (B,) each
    intended, subtracted = game.reward.intended, game.reward.subtracted
    expected = sum(target_probs[n] for n in intended) / len(intended) - sum(target_probs[n] for n in subtracted) / len(
        subtracted
    )
    torch.testing.assert_close(played.prob_gap, expected)
    assert played.prob_gap.std() > 0.01 and (played.prob_gap.abs() <= 1).all()

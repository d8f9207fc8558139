"""Listener-subtraction rewards, checked against values computed by hand."""

import math

import pytest
import torch

from listener_sub.rewards import MISLED_COST, PROB_FLOOR, Reward, listener_rewards

# four boards; intended `full` (weight 1), subtracted `gray` (weight 0.5), lam 2 -> the penalty weighs 1
TARGET_PROBS = {"full": torch.tensor([0.8, 0.1, 0.6, 0.3]), "gray": torch.tensor([0.5, 0.2, 0.4, 0.25])}
CORRECT = {"full": torch.tensor([True, False, True, False]), "gray": torch.tensor([False, True, True, False])}


def reward(score: str) -> Reward:
    """The paper's reward (no floors at chance)."""
    return Reward(
        intended={"full": 1.0}, subtracted={"gray": 0.5}, lam=2.0, score=score, chance_floor=False, misled_cost=0.0
    )


@pytest.mark.parametrize(
    "score, expected",
    [
        ("prob", [0.8 - 0.5, 0.1 - 0.2, 0.6 - 0.4, 0.3 - 0.25]),
        ("acc", [1.0, -1.0, 0.0, 0.0]),
        ("logprob", [math.log(0.8 / 0.5), math.log(0.1 / 0.2), math.log(0.6 / 0.4), math.log(0.3 / 0.25)]),
        ("dixit", [1.0, 1.0, 0.0, 0.0]),  # exactly one of the two right / both right / neither
    ],
)
def test_every_score_by_hand(score, expected):
    assert torch.allclose(reward(score)(TARGET_PROBS, CORRECT), torch.tensor(expected), atol=1e-6)


def test_weights_and_lambda():
    r = Reward({"full": 2.0, "full_b": 1.0}, {"gray": 3.0}, lam=0.5, score="prob", chance_floor=False, misled_cost=0)
    probs = {"full": torch.tensor([0.5]), "full_b": torch.tensor([0.2]), "gray": torch.tensor([0.4])}
    correct = {k: torch.tensor([True]) for k in probs}
    assert r(probs, correct).item() == pytest.approx(2 * 0.5 + 0.2 - 0.5 * 3 * 0.4)
    no_subtraction = Reward(intended={"full": 1.0}, score="acc", misled_cost=0)
    assert no_subtraction(probs, correct).item() == 1.0


@pytest.mark.parametrize("score, floor", [("prob", 0.25), ("acc", 0.25), ("logprob", math.log(0.25))])
def test_chance_floor_counts_a_subtracted_listener_only_above_chance(score, floor):
    # gray's target probabilities 0.5, 0.2, 0.4, 0.25 on boards of four images: the 0.2 board misleads it (below
    # chance), which with chance_floor earns no more than the 0.25 board, where it guesses
    plain, floored = reward(score), Reward(**{**reward(score).__dict__, "chance_floor": True})
    full = plain._listener_score(TARGET_PROBS["full"], CORRECT["full"])
    gray = plain._listener_score(TARGET_PROBS["gray"], CORRECT["gray"])
    expected = full - 2.0 * 0.5 * (gray - floor).clamp_min(0.0)
    assert torch.allclose(floored(TARGET_PROBS, CORRECT, chance=0.25), expected, atol=1e-6)
    if score != "acc":  # acc: gray picked the target on the 0.2 board
        assert floored(TARGET_PROBS, CORRECT, chance=0.25)[1] == full[1]  # the misled board: no bonus for misleading
    assert torch.allclose(plain(TARGET_PROBS, CORRECT, chance=0.25), plain(TARGET_PROBS, CORRECT))  # off: unchanged
    with pytest.raises(ValueError, match="chance level"):
        floored(TARGET_PROBS, CORRECT)


def test_misled_cost_charges_an_intended_listener_below_chance_more():
    # full's target probabilities 0.8, 0.1, 0.6, 0.3: only the 0.1 board has it below chance (0.25)
    costly = Reward(**{**reward("prob").__dict__, "misled_cost": 7.0})
    paper = reward("prob")(TARGET_PROBS, CORRECT)
    expected = paper - torch.tensor([0.0, 7.0 * 0.15, 0.0, 0.0])
    assert torch.allclose(costly(TARGET_PROBS, CORRECT, chance=0.25), expected, atol=1e-6)
    logprob = Reward(**{**reward("logprob").__dict__, "misled_cost": 2.0})(TARGET_PROBS, CORRECT, chance=0.25)
    assert logprob[1].item() == pytest.approx(math.log(0.1 / 0.2) - 2.0 * math.log(0.25 / 0.1))
    defaults = Reward(intended={"full": 1.0}, subtracted={"gray": 0.5}, lam=2.0)
    assert defaults.chance_floor and defaults.misled_cost == MISLED_COST  # the library's default is the floored reward
    with pytest.raises(ValueError, match="misled_cost=-1.0 < 0"):
        Reward(intended={"full": 1.0}, misled_cost=-1)
    with pytest.raises(ValueError, match="chance level"):
        costly(TARGET_PROBS, CORRECT)


def test_logprob_floor_keeps_a_sure_miss_finite():
    r = Reward(intended={"full": 1.0}, subtracted={"gray": 1.0}, score="logprob", chance_floor=False, misled_cost=0)
    value = r(
        {"full": torch.tensor([1.0]), "gray": torch.tensor([0.0])},
        {"full": torch.tensor([True]), "gray": torch.tensor([False])},
    )
    assert value.item() == pytest.approx(-math.log(PROB_FLOOR))


def test_dixit_over_three_listeners_any_batch_shape():
    r = Reward(intended={"a": 1.0, "b": 1.0}, subtracted={"c": 1.0}, score="dixit")
    correct = {
        "a": torch.tensor([[True, True], [False, False]]),
        "b": torch.tensor([[True, False], [False, False]]),
        "c": torch.tensor([[True, False], [True, False]]),
    }  # (2, 2): all right, some right / some right, none right
    probs = {k: torch.zeros(2, 2) for k in correct}
    assert r(probs, correct).tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_gap_is_mean_intended_minus_mean_subtracted_accuracy():
    r = Reward(intended={"a": 5.0, "b": 1.0}, subtracted={"c": 1.0, "d": 1.0})  # weights do not enter the gap
    correct = {
        "a": torch.tensor([True, True]),
        "b": torch.tensor([False, True]),
        "c": torch.tensor([True, False]),
        "d": torch.tensor([False, False]),
    }
    assert r.gap(correct).tolist() == [0.5 - 0.5, 1.0 - 0.0]
    assert Reward(intended={"a": 1.0}).gap(correct).tolist() == [1.0, 1.0]
    probs = {
        "a": torch.tensor([0.9, 0.5]),
        "b": torch.tensor([0.7, 0.25]),
        "c": torch.tensor([0.5, 0.25]),
        "d": torch.tensor([0.1, 0.25]),
    }
    assert r.gap(probs).tolist() == pytest.approx([0.8 - 0.3, 0.375 - 0.25])  # the probability gap


def test_listener_rewards_pay_a_right_pick():
    assert listener_rewards(CORRECT)["gray"].tolist() == [0.0, 1.0, 1.0, 0.0]


def test_settings_and_validation():
    r = Reward(intended={"full": 1}, subtracted={"gray": 2}, lam=0.5, score="acc")
    assert r == Reward(intended={"full": 1.0}, subtracted={"gray": 2.0}, lam=0.5, score="acc")
    assert r.listeners == ("full", "gray")
    assert Reward(intended={"full": 1}).score == "prob"
    with pytest.raises(ValueError, match="unknown reward score 'accuracy'"):
        Reward(intended={"full": 1.0}, score="accuracy")
    with pytest.raises(ValueError, match="both intended and subtracted"):
        Reward(intended={"full": 1.0}, subtracted={"full": 1.0})
    with pytest.raises(ValueError, match="at least one intended"):
        Reward(intended={}, subtracted={"gray": 1.0})
    with pytest.raises(KeyError, match="gray"):
        reward("prob")({"full": torch.ones(1)}, {"full": torch.ones(1, dtype=torch.bool)})

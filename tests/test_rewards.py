"""Listener-subtraction rewards, checked against values computed by hand."""

import math

import pytest
import torch

from listener_sub.rewards import PROB_FLOOR, Reward, listener_rewards

# four boards; intended `full` (weight 1), subtracted `gray` (weight 0.5), lam 2 -> the penalty weighs 1
TARGET_PROBS = {"full": torch.tensor([0.8, 0.1, 0.6, 0.3]), "gray": torch.tensor([0.5, 0.2, 0.4, 0.25])}
CORRECT = {"full": torch.tensor([True, False, True, False]), "gray": torch.tensor([False, True, True, False])}


def reward(score: str) -> Reward:
    return Reward(intended={"full": 1.0}, subtracted={"gray": 0.5}, lam=2.0, score=score)


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
    r = Reward(intended={"full": 2.0, "full_b": 1.0}, subtracted={"gray": 3.0}, lam=0.5, score="prob")
    probs = {"full": torch.tensor([0.5]), "full_b": torch.tensor([0.2]), "gray": torch.tensor([0.4])}
    correct = {k: torch.tensor([True]) for k in probs}
    assert r(probs, correct).item() == pytest.approx(2 * 0.5 + 0.2 - 0.5 * 3 * 0.4)
    no_subtraction = Reward(intended={"full": 1.0}, score="acc")
    assert no_subtraction(probs, correct).item() == 1.0


def test_logprob_floor_keeps_a_sure_miss_finite():
    r = Reward(intended={"full": 1.0}, subtracted={"gray": 1.0}, score="logprob")
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

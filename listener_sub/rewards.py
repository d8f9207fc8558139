"""Listener-subtraction rewards: sum_i w_i s_i(target) - lam * sum_j w_j s_j(target), each score measured against
chance, and the dixit rule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

SCORES = ("acc", "prob", "logprob", "dixit")
# logprob scores use log(max(p, PROB_FLOOR)), so a listener sure of a distractor costs ~27.6, not inf
PROB_FLOOR = 1e-12
MISLED_COST = 7.0  # the default misled_cost (docs/design.md: how it was chosen, and on which listener pairs)


@dataclass(frozen=True)
class Reward:
    """The speaker's reward per board from each listener's target probability and whether it picked the target.

    score: `acc` (1 when the listener picked the target), `prob` (its probability of the target),
    `logprob` (the log of it), or `dixit` (1 when at least one but not all of the reward's listeners
    picked the target; weights and lam do not apply).

    intended / subtracted: listener name -> weight; lam: how much the subtracted listeners' scores count against
    (0: no subtraction). Called with each listener's (B,) P(target), (B,) picked-the-target and the chance level
    (1 / images on the board), it returns (B,) rewards; `gap` is the intended listeners' mean score minus the
    subtracted ones'.

    Both listeners' scores are read against chance, so that misleading a listener is never worth more than leaving it
    guessing. A subtracted listener counts only above chance (`chance_floor`): a lie that sends it to a distractor
    earns nothing that an uninformative caption does not. An intended listener below chance costs 1 + `misled_cost`
    per unit: a guess at an attribute the speaker cannot see well, or a code its intended listener reads right only
    some of the time, costs more than it earns. The paper's reward is chance_floor=False, misled_cost=0.

        reward = Reward(intended={"full": 1.0}, subtracted={"gray": 1.0})  # lam 1, prob scores
        probs, picked = {"full": torch.tensor([0.9]), "gray": torch.tensor([0.2])}, {"full": True, "gray": False}
        reward(probs, {name: torch.tensor([p]) for name, p in picked.items()}, chance=0.25)  # tensor([0.9000])
        game = create_game(WorldConfig(), {"full": full, "gray": gray}, reward)
    """

    intended: Mapping[str, float]  # listener name -> weight w_i
    subtracted: Mapping[str, float] = field(default_factory=dict)  # listener name -> weight w_j
    lam: float = 1.0  # weight of the subtracted listeners' scores against the intended ones' (0: no subtraction)
    score: str = "prob"  # acc | prob | logprob | dixit: what a listener's pick is worth
    # true: a subtracted listener's score counts only above chance (1 / images on the board; logprob: its log), so a
    # caption that misleads it earns no more than one that leaves it guessing (false: the paper's reward)
    chance_floor: bool = True
    # how much more an intended listener's score below chance costs, per unit below it (0: the paper's reward), so
    # that misleading the intended listener costs more than leaving it guessing
    misled_cost: float = MISLED_COST

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"unknown reward score {self.score!r}; choose one of: {', '.join(SCORES)}")
        object.__setattr__(self, "lam", float(self.lam))
        object.__setattr__(self, "misled_cost", float(self.misled_cost))
        if self.misled_cost < 0:
            raise ValueError(
                f"misled_cost={self.misled_cost} < 0 would reward misleading the intended listener; use >= 0"
            )
        if self.lam < 0:
            raise ValueError(
                f"lam={self.lam} < 0 would reward the subtracted listeners for picking the target; use lam >= 0 "
                "(0: no subtraction), and name a listener in reward.intended to reward it"
            )
        if not self.intended:
            raise ValueError("the reward needs at least one intended listener (reward.intended={name: weight})")
        both = set(self.intended) & set(self.subtracted)
        if both:
            raise ValueError(f"listener(s) {sorted(both)} are both intended and subtracted; name each in one set")
        object.__setattr__(self, "intended", {str(k): float(v) for k, v in self.intended.items()})
        object.__setattr__(self, "subtracted", {str(k): float(v) for k, v in self.subtracted.items()})

    @property
    def listeners(self) -> tuple[str, ...]:
        """Every listener the reward reads: intended first, then subtracted."""
        return (*self.intended, *self.subtracted)

    def _listener_score(self, target_prob: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        if self.score == "acc":
            return correct.float()
        if self.score == "prob":
            return target_prob.float()
        return target_prob.float().clamp_min(PROB_FLOOR).log()

    def _chance_score(self, chance: float | None, setting: str) -> float:
        """Chance (1 / images on the board) in the score's units; `setting` names what needs it."""
        if chance is None:
            raise ValueError(f"a reward with {setting} needs the chance level (1 / images on the board)")
        return math.log(chance) if self.score == "logprob" else chance

    def _intended_score(self, target_prob: torch.Tensor, correct: torch.Tensor, chance: float | None) -> torch.Tensor:
        """An intended listener's score, its shortfall below chance counted 1 + misled_cost times."""
        score = self._listener_score(target_prob, correct)
        if not self.misled_cost:
            return score
        return score - self.misled_cost * (self._chance_score(chance, "misled_cost") - score).clamp_min(0.0)

    def _subtracted_score(self, target_prob: torch.Tensor, correct: torch.Tensor, chance: float | None) -> torch.Tensor:
        """A subtracted listener's score, counted only above chance with chance_floor."""
        score = self._listener_score(target_prob, correct)
        if not self.chance_floor:
            return score
        return (score - self._chance_score(chance, "chance_floor")).clamp_min(0.0)

    def __call__(
        self, target_probs: Mapping[str, torch.Tensor], correct: Mapping[str, torch.Tensor], chance: float | None = None
    ) -> torch.Tensor:
        """Reward of each board, any batch shape (...): target_probs and correct map listener name -> (...); chance is
        1 / the board's images (needed with chance_floor or misled_cost)."""
        if self.score == "dixit":
            self._check_played(target_probs, correct)
            right = torch.stack([correct[name].bool() for name in self.listeners])  # (n_listeners, ...)
            return (right.any(0) & ~right.all(0)).float()
        intended, subtracted = self.terms(target_probs, correct, chance)
        return intended - self.lam * subtracted

    def terms(
        self, target_probs: Mapping[str, torch.Tensor], correct: Mapping[str, torch.Tensor], chance: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward's two sums, each (...): sum_i w_i s_i over the intended listeners and sum_j w_j s_j over the
        subtracted ones (0 when there are none), so that the reward is intended - lam * subtracted. ValueError for the
        dixit score, which is no such sum."""
        if self.score == "dixit":
            raise ValueError("the dixit reward is not a sum over listeners; it has no intended and subtracted terms")
        self._check_played(target_probs, correct)
        intended = sum(w * self._intended_score(target_probs[n], correct[n], chance) for n, w in self.intended.items())
        subtracted = sum(
            w * self._subtracted_score(target_probs[n], correct[n], chance) for n, w in self.subtracted.items()
        )
        return intended, torch.zeros_like(intended) + subtracted

    def _check_played(self, target_probs: Mapping[str, torch.Tensor], correct: Mapping[str, torch.Tensor]) -> None:
        missing = [name for name in self.listeners if name not in target_probs or name not in correct]
        if missing:
            raise KeyError(f"the reward needs listener(s) {missing}, which did not play")

    def gap(self, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(...) mean score of the intended listeners minus that of the subtracted ones (the intended mean alone when
        there are none): with `correct`, the accuracy gap; with target probabilities, the probability gap."""
        intended = torch.stack([scores[name].float() for name in self.intended]).mean(0)
        if not self.subtracted:
            return intended
        return intended - torch.stack([scores[name].float() for name in self.subtracted]).mean(0)


def listener_rewards(correct: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each listener's own reward: 1 for picking the target, else 0 (listeners cooperate with the speaker)."""
    return {name: right.float() for name, right in correct.items()}

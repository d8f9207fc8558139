"""The REINFORCE objective of listener subtraction: baselines, the multipliers of constrained subtraction, and the loss.

baseline = Baseline("rloo", k=4, decay=0.9)
objective = reinforce(game_reward, logp, ref_logp, baseline, beta=0.15)  # (B*k,) terms and the scalar loss
objective.loss.backward()
"""

from __future__ import annotations

from dataclasses import dataclass, is_dataclass

import torch

from listener_sub.distributed import Ranks
from listener_sub.rl.config import ConstraintConfig


class Baseline:
    """What each sampled caption's reward is compared with: rloo, the batch mean, a running mean (ema), or 0."""

    def __init__(self, kind: str, k: int, decay: float, ranks: Ranks = Ranks()) -> None:
        self.kind, self.k, self.decay, self.ranks = kind, k, decay, ranks
        self.ema: float | None = None  # the ema baseline's running value (checkpointed)

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        """(B*k,) rewards, rows b*k+j -> (B*k,) baselines."""
        if self.kind == "rloo":
            grouped = rewards.view(-1, self.k)  # (B, k)
            return ((grouped.sum(1, keepdim=True) - grouped) / (self.k - 1)).view(-1)
        if self.kind == "none":
            return torch.zeros_like(rewards)
        mean = float(self.ranks.mean(rewards.mean()))  # the mean over every rank's captions
        if self.kind == "mean":
            return torch.full_like(rewards, mean)
        value = mean if self.ema is None else self.ema  # ema: the running mean of earlier batches
        self.ema = self.decay * value + (1 - self.decay) * mean
        return torch.full_like(rewards, value)


class Multipliers:
    """The reward's lam and the KL coefficient beta: fixed, or -- for each bound `constraint` sets -- a Lagrange
    multiplier moved by projected dual ascent after every step: up while the step's sampled captions break the bound,
    down (to 0 at least) while they keep it."""

    def __init__(self, constraint: ConstraintConfig, lam: float, beta: float) -> None:
        self.constraint, self.lam, self.beta = constraint, float(lam), float(beta)

    def update(self, subtracted_acc: float, kl: float) -> None:
        """One dual step from the step's measured subtracted accuracy and KL (means over every rank's captions)."""
        c = self.constraint
        if c.subtracted_acc is not None:
            self.lam = max(0.0, self.lam + c.lam_lr * (subtracted_acc - c.subtracted_acc))
        if c.kl is not None:
            self.beta = max(0.0, self.beta + c.beta_lr * (kl - c.kl))

    def state_dict(self) -> dict[str, float]:
        return {"lam": self.lam, "beta": self.beta}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lam, self.beta = float(state["lam"]), float(state["beta"])


def check_constraint(constraint: ConstraintConfig, reward: object) -> None:
    """Raise ValueError when a subtracted-accuracy bound cannot apply to the reward: it needs subtracted listeners, a
    `lam` to learn (a dataclass reward such as listener_sub.rewards.Reward) and a score that lam weighs (not dixit)."""
    if constraint.subtracted_acc is None:
        return
    if not getattr(reward, "subtracted", None):
        raise ValueError(
            "trainer.constraint.subtracted_acc bounds the subtracted listeners' accuracy, but the reward subtracts none"
        )
    if not (is_dataclass(reward) and hasattr(reward, "lam")):
        raise ValueError(
            f"trainer.constraint.subtracted_acc learns the reward's lam, which {type(reward).__name__} does not have "
            "as a dataclass field"
        )
    if getattr(reward, "score", None) == "dixit":
        raise ValueError(
            "trainer.constraint.subtracted_acc with reward.score=dixit: the dixit rule has no lam to learn; "
            "choose acc, prob or logprob"
        )


@dataclass
class Objective:
    """The REINFORCE objective of B*k sampled captions and its terms (each (B*k,), but the scalar loss)."""

    loss: torch.Tensor  # -mean(advantage * log pi(caption)), the only term with grad
    reward: torch.Tensor  # the game's reward
    kl: torch.Tensor  # k1 estimate of KL(pi || ref), summed over the caption's tokens
    entropy: torch.Tensor  # sampled estimate of the caption entropy (-log pi)
    total: torch.Tensor  # reward - beta * kl + entropy bonus
    advantage: torch.Tensor  # total - baseline


def reinforce(
    game_reward: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    baseline: Baseline,
    beta: float,
    entropy_bonus: float = 0.0,
) -> Objective:
    """KL-regularised REINFORCE: the per-token KL to the reference (k1, weight beta) and the entropy bonus folded into
    each caption's reward, a baseline subtracted; logp (B*k, L) with grad, ref_logp (B*k, L) without, both 0 after
    EOS."""
    seq_logp = logp.sum(1)  # (B*k,) log pi(caption), EOS included
    kl = (logp.detach() - ref_logp).sum(1)  # (B*k,) k1 estimate of KL(pi || ref), summed over tokens
    entropy = -seq_logp.detach()  # (B*k,) sampled estimate of the caption entropy
    reward = game_reward.to(kl.device).float()  # (B*k,) the game's reward
    total = reward - beta * kl + entropy_bonus * entropy  # (B*k,)
    advantage = total - baseline(total)  # (B*k,)
    return Objective(-(advantage * seq_logp).mean(), reward, kl, entropy, total, advantage)

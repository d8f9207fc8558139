"""Inference-time listener subtraction: best-of-n reranking of a speaker's sampled captions by the game's reward.

No training: for each board the speaker samples n captions at temperature 1, the game plays every one of them, and the
caption with the highest listener-subtraction reward is kept (ties: the first sampled); with beta > 0 the score adds
beta * log pi(caption), the decode-time counterpart of RL's KL penalty. With the captioning adapter as
the speaker this is listener subtraction at decode time, the alternative to RL that costs n scored captions per board.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from listener_sub.game import Boards, Game
from listener_sub.models.speaker import Generation, Speaker, VisionFeatures

DECODES = ("greedy", "rerank")  # speaker.decode: how the evaluation's plain-key captions are chosen
RERANK_CAPTIONS = 4096  # sampled captions played at once (boards per pass: this // n)


@dataclass
class RerankConfig:
    """Best-of-n decoding (speaker.decode=rerank): n temperature-1 samples per board, the best by the game's reward
    kept."""

    n: int = 16  # captions sampled and scored per board
    # the score is reward + beta * log pi(caption): > 0 favours captions the speaker itself finds likely
    beta: float = 0.0
    seed: int = 0  # draws the samples and the listeners' sampled picks (apart from the evaluation's own draws)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"rerank.n={self.n}: sample at least one caption per board")
        if self.beta < 0:
            raise ValueError(f"rerank.beta={self.beta}: give a weight >= 0 (0: the reward alone)")


def best_of_n_kl(n: int) -> float:
    """log n - (n - 1) / n: the bound on KL(best-of-n || sampling policy) in nats (Beirami et al., 2024)."""
    return math.log(n) - (n - 1) / n


def draws_per_board(n: int, max_new_tokens: int, n_listeners: int) -> int:
    """Uniform numbers one board's reranking uses: every sample's tokens and every listener's pick of it."""
    return n * (max_new_tokens + n_listeners)


@torch.no_grad()
def rerank(
    speaker: Speaker,
    game: Game,
    boards: Boards,
    features: VisionFeatures,
    draws: torch.Tensor,
    n: int,
    max_new_tokens: int,
    beta: float = 0.0,
) -> Generation:
    """(b,) captions, one per board: of n sampled from the speaker's prefix of the target features, the one with the
    best score, the game's reward + beta * log pi(caption). draws: (b, `draws_per_board`) uniform numbers, a board's
    own, so its caption does not depend on which boards share a pass."""
    chosen: list[Generation] = []
    step = max(1, RERANK_CAPTIONS // n)
    n_tokens = n * max_new_tokens
    for start in range(0, len(boards), step):
        rows = slice(start, min(start + step, len(boards)))
        part, part_draws = boards[rows], draws[rows]  # (b', ...)
        b = len(part)
        token_draws = part_draws[:, :n_tokens].reshape(
            b * n, max_new_tokens
        )  # (b'*n, T): row i * n + j is sample j of board i
        pick_draws = part_draws[:, n_tokens:].reshape(b * n, -1)  # (b'*n, listeners)
        gen = speaker.sample(speaker.adapt(features[rows]), k=n, max_new_tokens=max_new_tokens, draws=token_draws)
        reward = game.play(gen.texts, part.repeat(n), draws=pick_draws).reward  # (b'*n,)
        score = (reward + beta * gen.token_log_probs.sum(1).to(reward.device)).view(b, n)  # (b', n)
        best = score.argmax(1) + torch.arange(b, device=score.device) * n  # (b',) rows of the best samples
        chosen.append(gen[best])
    return Generation(
        tokens=torch.cat([pad(g.tokens, max_new_tokens, speaker.pad_id) for g in chosen]),  # (b, T)
        lengths=torch.cat([g.lengths for g in chosen]),
        texts=[text for g in chosen for text in g.texts],
        token_log_probs=torch.cat([pad(g.token_log_probs, max_new_tokens, 0.0) for g in chosen]),  # (b, T)
    )


def pad(rows: torch.Tensor, width: int, value: float) -> torch.Tensor:
    """(N, L) rows right-padded with `value` to (N, width)."""
    return torch.nn.functional.pad(rows, (0, width - rows.shape[1]), value=value)

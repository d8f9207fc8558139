"""Oracle speakers from ground truth: the canonical caption naming a subset of the target's attributes.

They need images with scenes (the embedded world, CLEVR); `has_oracle` says whether boards have them.
Every non-empty subset of the scenes' attributes (31) is scored by the same listeners on the same boards:
`fixed_oracle_gap` is the best mean gap of one subset said on every board (the hand-designed policy RL
must match), `oracle_gap` the mean gap when each board gets the subset best for the reward (the ceiling).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from listener_sub.game import Boards, Game
from listener_sub.world import ATTRIBUTES
from listener_sub.world.combos import Combos

SUBSETS: tuple[tuple[str, ...], ...] = tuple(
    subset for size in range(1, len(ATTRIBUTES) + 1) for subset in itertools.combinations(ATTRIBUTES, size)
)  # the 31 non-empty attribute subsets, smallest first (every scene vocabulary has these five attributes)
BOARD_CHUNK = 256  # boards scored at once (x 31 subsets)


def has_oracle(boards: Boards) -> bool:
    """Whether the boards' images come with scenes, which the oracle speakers describe."""
    return boards.checked_pool().scenes is not None


def oracle_captions(boards: Boards) -> tuple[list[str], np.ndarray]:
    """Distinct canonical captions and (S, B) the index of the one naming subset s of board b's target."""
    combos = Combos(boards.checked_pool().scenes.vocab)
    ids = combos.ids(boards.target_attrs)  # (B,)
    keys, where = np.unique(ids, return_inverse=True)  # the distinct target combos
    text_ids: dict[str, int] = {}
    index = np.empty((len(SUBSETS), len(boards)), dtype=np.int64)
    for s, subset in enumerate(SUBSETS):
        mask = combos.mask_of(subset)
        per_key = np.array([text_ids.setdefault(combos.caption(int(c), mask), len(text_ids)) for c in keys])
        index[s] = per_key[where]
    return list(text_ids), index


@torch.no_grad()
def subset_scores(
    game: Game, boards: Boards, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, B) reward and (S, B) gap of each subset's canonical caption on each board (S = len(SUBSETS)), played by
    the game."""
    texts, index = oracle_captions(boards)
    rewards, gaps = [], []
    for start in range(0, len(boards), BOARD_CHUNK):
        chunk = boards[start : start + BOARD_CHUNK]
        n_subsets, n_boards = len(SUBSETS), len(chunk)
        tiled = Boards(
            np.tile(chunk.items, (n_subsets, 1)), np.tile(chunk.target, n_subsets), chunk.pool
        )  # (S * b) subset-major
        captions = [texts[i] for i in index[:, start : start + BOARD_CHUNK].reshape(-1)]
        outcome = game.play(captions, tiled, generator)
        rewards.append(outcome.reward.cpu().view(n_subsets, n_boards))
        gaps.append(outcome.gap.cpu().view(n_subsets, n_boards))
    return torch.cat(rewards, 1), torch.cat(gaps, 1)


def best_subsets(rewards: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
    """(B,) per board the index into SUBSETS with the highest reward, ties broken by the higher gap (then the smaller
    subset)."""
    best_reward = rewards.max(0).values  # (B,)
    return gaps.double().masked_fill(rewards < best_reward, float("-inf")).argmax(0)


def oracle_speaker(
    game: Game, boards: Boards, generator: torch.Generator | None = None
) -> tuple[list[str], list[tuple[str, ...]]]:
    """The per-board oracle: each board's canonical caption of its best subset (`best_subsets`), and that subset."""
    texts, index = oracle_captions(boards)
    best = best_subsets(*subset_scores(game, boards, generator)).numpy()  # (B,)
    return [texts[index[s, b]] for b, s in enumerate(best)], [SUBSETS[s] for s in best]


def oracle_gaps(game: Game, boards: Boards, generator: torch.Generator | None = None) -> dict[str, Any]:
    """The two reference speakers on these boards.

    Keys: fixed_oracle_gap, fixed_oracle_subset (its attribute names), oracle_gap (per board the subset
    with the highest reward, ties broken by the higher gap), oracle_reward (mean of that best reward),
    subset_gap ({"color+shape": mean gap, ...} for every subset).
    """
    rewards, gaps = (x.double() for x in subset_scores(game, boards, generator))  # (S, B) each
    mean_gap = gaps.mean(1)  # (S,)
    best = int(mean_gap.argmax())
    per_board = best_subsets(rewards, gaps)[None]  # (1, B)
    return {
        "fixed_oracle_gap": float(mean_gap[best]),
        "fixed_oracle_subset": list(SUBSETS[best]),
        "oracle_gap": float(gaps.gather(0, per_board).mean()),
        "oracle_reward": float(rewards.gather(0, per_board).mean()),
        "subset_gap": {"+".join(subset): float(g) for subset, g in zip(SUBSETS, mean_gap)},
    }

"""Evaluation through the game core: a speaker's full metric set on boards, and a listener's accuracy per attribute.

Both score captions with `listener_sub.game.listen` (the one scoring path) and leave every global RNG as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from listener_sub.data import DataConfig
from listener_sub.distributed import Ranks
from listener_sub.draws import uniforms
from listener_sub.files import atomic_path
from listener_sub.game import Boards, Game, Pool, listen
from listener_sub.metrics import caption_values, summarise
from listener_sub.models.listener import Listener
from listener_sub.models.speaker import Speaker
from listener_sub.perception import Perception, confusable_colours
from listener_sub.rerank import RerankConfig, best_of_n_kl, draws_per_board, rerank
from listener_sub.world import PALETTE, WORLD_VOCAB
from listener_sub.world.combos import Combos

EVAL_CHUNK = 250  # boards captioned and judged at once in evaluation


@dataclass
class EvalConfig:
    """The held-out boards every evaluation of a run uses (train, eval, pretrain summaries, rollout oracles,
    inspect)."""

    boards: int = 1000  # boards per evaluation (the same boards each time)
    seed: int = 123  # draws the boards, the sampled evaluation captions and sampled picks
    split: str = "test"  # split of the data the boards come from
    data: Any = None  # a DataConfig: other data to evaluate on (zero-shot transfer); null: the game's data


def held_out_boards(game: Game, cfg: EvalConfig) -> Boards:
    """cfg.boards boards of cfg.split (of cfg.data, else the game's data) drawn with cfg.seed, every listener's features
    of the pool computed in a fixed order.

    Features then never depend on which boards happened to be drawn first (a resumed run sees the same numbers).
    """
    warm_pool(game, cfg.split, cfg.data)
    return game.sample(cfg.boards, np.random.default_rng(cfg.seed), cfg.split, cfg.data)


def warm_pool(game: Game, split: str, data: DataConfig | None = None) -> None:
    """Compute (or read from the disk cache) every listener's features of the split's whole pool, in a fixed order."""
    pool = game.pool(split, data)
    for listener in game.listeners.values():
        pool.warm(listener)


@torch.no_grad()
def lm_nll(speaker: Speaker, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N,) mean NLL per token (EOS included) of captions (N, L) under the speaker's frozen language model reading text
    alone (`text_log_probs`): the fluency of the caption as text."""
    per_token, mask = speaker.text_log_probs(tokens, lengths)  # (N, L) each
    return -per_token.sum(1) / mask.sum(1).clamp_min(1)


@torch.no_grad()
def evaluate_speaker(
    speaker: Speaker,
    game: Game,
    boards: Boards,
    reference: nn.Module | None = None,
    seed: int = 0,
    max_new_tokens: int = 16,
    chunk: int = EVAL_CHUNK,
    ranks: Ranks = Ranks(),
    boards_file: Path | None = None,
    decode: RerankConfig | None = None,
) -> dict[str, float]:
    """The full metric set of the speaker on the boards, the one evaluation of train, eval and pretrain; with
    `boards_file`, each board's own value of the per-board metrics ((B,) arrays under the same keys: acc/<listener>,
    gap, prob_gap, reward, kl, lm_nll, and the captions' mention/<attribute>, truthful, grammatical, length; greedy and
    `sample/`; and, for the embedded world, confusable/<listener>: `colour_confusable` through the eyes of each listener
    with a perception) is also saved there as .npz (rank 0), for intervals over boards and splits of them.

    Plain keys come from greedy captions, `sample/` keys from one temperature-1 sample per board:
    acc/<listener> (every listener of the game), gap, prob_gap (the same difference of the listeners' probabilities of
    the target: continuous, so less noisy over boards), reward (the game's), mention/<attribute>, truthful and
    grammatical (data with scenes), length (words), distinct_1, distinct_2 (`caption_metrics`), kl (mean over
    captions of sum_t log pi - log pi_ref, the k1 estimate of KL(pi || reference) for samples; 0 without
    a reference adapter) and lm_nll (`lm_nll`). With `decode` (speaker.decode=rerank) the plain keys come from best-of-n
    captions instead (`listener_sub.rerank`; their own draws from decode.seed), and their kl adds the best-of-n bound
    log n - (n - 1) / n to the estimate for the sampling policy: an upper bound. Deterministic given `seed`; no
    training state is touched. Under
    torchrun each rank plays its share of the boards (with the random numbers the whole set draws) and every rank
    returns the metrics of all of them.
    """
    pool = boards.checked_pool()
    generator = torch.Generator(device=speaker.device).manual_seed(seed)
    mine = ranks.shard(len(boards))
    rerank_draws = None
    if decode is not None:  # every board's reranking numbers, drawn for the whole set like the evaluation's own
        rerank_generator = torch.Generator(device=speaker.device).manual_seed(decode.seed)
        width = draws_per_board(decode.n, max_new_tokens, len(game.listeners))
        rerank_draws = uniforms(len(boards), width, rerank_generator, speaker.device)  # (B, width)
    metrics: dict[str, float] = {}
    per_board: dict[str, np.ndarray] = {}  # each board's values, for boards_file
    for prefix, greedy in (("", True), ("sample/", False)):
        # (B, tokens + listeners) every board's random numbers, this rank's share played below
        draws = uniforms(len(boards), max_new_tokens + len(game.listeners), generator, speaker.device)
        texts: list[str] = []
        rows: dict[str, list[torch.Tensor]] = {}
        for start in range(mine.start, mine.stop, chunk):
            part = slice(start, min(start + chunk, mine.stop))
            reranking = (decode, rerank_draws[part]) if greedy and decode is not None else None
            part_texts, values = _play(
                speaker, game, boards[part], draws[part], reference, greedy, max_new_tokens, reranking
            )
            texts += part_texts
            for key, value in values.items():
                rows.setdefault(key, []).append(value.double().cpu())
        shares = [
            share for share in ranks.gather({"texts": texts, "rows": rows}) if share["texts"]
        ]  # ranks with boards
        texts = [text for share in shares for text in share["texts"]]
        every = {key: torch.cat([part for share in shares for part in share["rows"][key]]) for key in shares[0]["rows"]}
        metrics |= {f"{prefix}{key}": float(values.mean()) for key, values in every.items()}  # every (B,)
        captions = caption_values(texts, pool.scenes, boards.target_items, pool.data.lexicon)
        metrics |= summarise(captions, texts, prefix)
        per_board |= {f"{prefix}{key}": values.numpy() for key, values in every.items()}
        per_board |= {f"{prefix}{key}": values for key, values in captions.items()}
    for name, listener in game.listeners.items():
        perception = getattr(listener, "perception", None)  # a listener of your own may see without one
        confusable = None if perception is None else colour_confusable(boards, perception)
        if confusable is not None:
            per_board[f"confusable/{name}"] = confusable.astype(float)
    if boards_file is not None and ranks.main:
        with atomic_path(boards_file) as tmp, open(tmp, "wb") as out:
            np.savez(out, **per_board)
    return metrics


def colour_confusable(boards: Boards, perception: Perception) -> np.ndarray | None:
    """(B,) whether `perception` shows some colour of the target's objects confusable with another colour of a
    distractor's (`confusable_colours` of the embedded world's palette); None for data without the world's colours."""
    scenes = boards.checked_pool().scenes
    if scenes is None or tuple(scenes.vocab.values.get("color", ())) != tuple(WORLD_VOCAB.values["color"]):
        return None
    close = np.zeros((len(PALETTE) + 1,) * 2, bool)  # the last row and column: no object there
    close[:-1, :-1] = confusable_colours(perception, PALETTE)
    colours = scenes.attrs[..., scenes.vocab.attributes.index("color")]  # (P, K) colour index, -1 where no object
    board = np.where(colours[boards.items] < 0, len(PALETTE), colours[boards.items])  # (B, N, K)
    target = board[np.arange(len(boards)), boards.target]  # (B, K)
    pairs = close[target[:, None, :, None], board[:, :, None, :]]  # (B, N, K, K): target object x board object
    distractor = np.arange(board.shape[1])[None, :] != boards.target[:, None]  # (B, N)
    return (pairs.any((2, 3)) & distractor).any(1)


def _play(
    speaker: Speaker,
    game: Game,
    boards: Boards,
    draws: torch.Tensor,
    reference: nn.Module | None,
    greedy: bool,
    max_new_tokens: int,
    reranking: tuple[RerankConfig, torch.Tensor] | None,
) -> tuple[list[str], dict[str, torch.Tensor]]:
    """One chunk of boards played by the speaker's captions (greedy, sampled with `draws` (b, tokens + listeners), or
    reranked best-of-n with the reranking settings and their draws): the captions and each board's values ((b,)
    each)."""
    features = speaker.encode(boards.target_images)  # the targets (b, H, W, 3) through the frozen tower, once
    if reranking is not None:
        decode, rerank_draws = reranking
        gen = rerank(speaker, game, boards, features, rerank_draws, decode.n, max_new_tokens, decode.beta)
    else:
        prefix = speaker.adapt(features)  # (b, M, d_lm)
        gen = speaker.sample(prefix, greedy=greedy, max_new_tokens=max_new_tokens, draws=draws[:, :max_new_tokens])
    outcome = game.play(gen.texts, boards, draws=draws[:, max_new_tokens:])
    kl = torch.zeros(len(boards), device=speaker.device)
    if reference is not None:
        ref_logp, _ = speaker.log_probs(speaker.adapt(features, reference), gen.tokens, gen.lengths)  # (b, L)
        kl = (gen.token_log_probs - ref_logp).sum(1)
    if reranking is not None:
        kl = kl + best_of_n_kl(reranking[0].n)
    values = {f"acc/{name}": right.float() for name, right in outcome.correct.items()}
    values |= {"gap": outcome.gap.float(), "prob_gap": outcome.prob_gap.float(), "reward": outcome.reward.float()}
    return gen.texts, values | {"kl": kl, "lm_nll": lm_nll(speaker, gen.tokens, gen.lengths)}


def listener_conditions(attributes: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Caption conditions of `evaluate_listener`: the full caption, no colour, and each attribute alone."""
    return {
        "full_caption": attributes,
        "no_color": tuple(a for a in attributes if a != "color"),
        **{f"only/{a}": (a,) for a in attributes},
    }


def evaluate_listener(
    listener: Listener, pool: Pool, n_boards: int = 1000, board_size: int = 4, seed: int = 0
) -> dict[str, float]:
    """Accuracy on boards of distinct random pool images for captions naming given attributes, and tie-aware ceilings.

    Data with scenes, keys acc_<cond> and ceiling_<cond> for cond in full_caption, no_color, only/<attribute>, and
    acc_color_only; the captions are the oracle speakers' canonical ones. Data with reference captions (COCO):
    acc_caption, each target's first caption. Scored by `listen`; min(n_boards, len(pool) // board_size) boards.
    """
    rng = np.random.default_rng(seed)
    n = min(n_boards, len(pool) // board_size)
    items = rng.permutation(len(pool))[: n * board_size].reshape(n, board_size)  # (n, N) pool indices
    slot = rng.integers(0, board_size, n)  # (n,) target position
    boards = Boards(items, slot, pool)
    target = boards.target_items  # (n,)

    def accuracy(captions: list[str]) -> float:
        choice = listen({listener.name: listener}, captions, boards)[listener.name].argmax(1).cpu().numpy()  # (n,)
        return float((choice == slot).mean())

    if pool.scenes is None:
        return (
            {}
            if pool.data.captions is None
            else {"acc_caption": accuracy([pool.data.captions[int(t)][0] for t in target])}
        )
    combos = Combos(pool.scenes.vocab)
    attrs = pool.attrs  # (S, A)
    same = attrs[items] == attrs[target][:, None, :]  # (n, N, A)
    ids = combos.ids(attrs[target])  # (n,)
    metrics: dict[str, float] = {}
    for cond, names in listener_conditions(combos.attributes).items():
        mask = combos.mask_of(names)
        used = np.array([a in names for a in combos.attributes])
        ties = same[..., used].all(-1).sum(1)  # (n,) board images the caption is true of
        metrics[f"acc_{cond}"] = accuracy([combos.caption(int(c), mask) for c in ids])
        metrics[f"ceiling_{cond}"] = float((1.0 / ties).mean())
    metrics["acc_color_only"] = metrics["acc_only/color"]
    return metrics

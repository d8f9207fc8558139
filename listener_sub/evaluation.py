"""Evaluation through the game core: a speaker's full metric set on boards, and a listener's accuracy per attribute.

Both score captions with `listener_sub.game.listen` (the one scoring path) and leave every global RNG as it was.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from listener_sub.game import Boards, Game, Pool, listen
from listener_sub.metrics import caption_metrics
from listener_sub.models.listener import Listener
from listener_sub.models.speaker import Speaker
from listener_sub.world import ATTRIBUTES, WorldConfig
from listener_sub.world.combos import caption_text, combo_ids, mask_of

EVAL_CHUNK = 250  # boards captioned and judged at once in evaluation


@dataclass
class EvalConfig:
    """The held-out boards every evaluation of a run uses (train, eval, pretrain summaries, rollout oracles, inspect)."""

    boards: int = 1000  # boards per evaluation (the same boards each time)
    seed: int = 123  # draws the boards, the sampled evaluation captions and sampled picks
    split: str = "test"  # scene split the boards come from


def held_out_boards(game: Game, cfg: EvalConfig) -> Boards:
    """cfg.boards boards of cfg.split drawn with cfg.seed, every listener's features of the pool computed in a fixed order.

    Features then never depend on which boards happened to be drawn first (a resumed run sees the same numbers).
    """
    warm_pool(game, cfg.split)
    return game.sample(cfg.boards, np.random.default_rng(cfg.seed), cfg.split)


def warm_pool(game: Game, split: str) -> None:
    """Compute every listener's features of the split's whole pool, in a fixed order."""
    pool = game.pool(split)
    for listener in game.listeners.values():
        pool.features(listener, np.arange(len(pool)))


@torch.no_grad()
def lm_nll(speaker: Speaker, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N,) mean NLL per token (EOS included) of captions (N, L) under the frozen LM alone.

    The LM's only context is its BOS token (EOS where it has none): no image prefix, so this is the
    fluency of the caption as text, the same for every speaker that shares the LM.
    """
    bos = speaker.tokenizer.bos_token_id
    bos = speaker.eos_id if bos is None else int(bos)
    context = speaker.lm.get_input_embeddings()(torch.full((len(tokens), 1), bos, device=speaker.device))  # (N, 1, d_lm)
    per_token, mask = speaker.log_probs(context, tokens, lengths)  # (N, L) each
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
) -> dict[str, float]:
    """The full metric set of the speaker on the boards, the one evaluation of train, eval and pretrain.

    Plain keys come from greedy captions, `sample/` keys from one temperature-1 sample per board:
    acc/<listener> (every listener of the game), gap, reward (the game's), mention/<attribute>,
    truthful, grammatical, length (words), distinct_1, distinct_2 (`caption_metrics`), kl (mean over
    captions of sum_t log pi - log pi_ref, the k1 estimate of KL(pi || reference) for samples; 0 without
    a reference adapter) and lm_nll (`lm_nll`). Deterministic given `seed`; no training state is touched.
    """
    pool = boards.checked_pool()
    targets = boards.target_items  # (B,)
    objects = [pool.scenes.objects(int(i)) for i in targets]
    x = [pool.scenes.x(int(i)) for i in targets]
    generator = torch.Generator(device=speaker.device).manual_seed(seed)
    metrics: dict[str, float] = {}
    for prefix, greedy in (("", True), ("sample/", False)):
        texts: list[str] = []
        rows: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(boards), chunk):
            part = boards[start : start + chunk]
            images = part.target_images  # (b, H, W, 3)
            gen = speaker.generate(images, greedy=greedy, max_new_tokens=max_new_tokens, generator=generator)
            outcome = game.play(gen.texts, part, generator)
            kl = torch.zeros(len(part), device=speaker.device)
            if reference is not None:
                ref_logp, _ = speaker.log_probs(speaker.prefix(images, reference), gen.tokens, gen.lengths)  # (b, L)
                kl = (gen.token_log_probs - ref_logp).sum(1)
            texts += gen.texts
            per_board = {f"acc/{name}": right.float() for name, right in outcome.correct.items()}
            per_board |= {"gap": outcome.gap.float(), "reward": outcome.reward.float(), "kl": kl, "lm_nll": lm_nll(speaker, gen.tokens, gen.lengths)}
            for key, value in per_board.items():
                rows.setdefault(key, []).append(value.double().cpu())
        metrics |= {f"{prefix}{key}": float(torch.cat(values).mean()) for key, values in rows.items()}
        metrics |= caption_metrics(texts, objects, x, prefix)
    return metrics


LISTENER_CONDITIONS: dict[str, tuple[str, ...]] = {
    "full_caption": ATTRIBUTES,
    "no_color": tuple(a for a in ATTRIBUTES if a != "color"),
    **{f"only/{a}": (a,) for a in ATTRIBUTES},
}


def evaluate_listener(
    listener: Listener, world: WorldConfig, n_boards: int = 1000, board_size: int = 4, seed: int = 0, split: str = "test"
) -> dict[str, float]:
    """Accuracy on boards (target + random distractors of the split) for captions naming given attributes, and tie-aware ceilings.

    Keys: acc_<cond> and ceiling_<cond> for cond in full_caption, no_color, only/<attribute>; acc_color_only.
    The captions are the canonical ones of the oracle speakers, scored by `listen`.
    """
    rng = np.random.default_rng(seed)
    pool = Pool.build(world, split, n_boards * board_size)
    items = rng.permutation(n_boards * board_size).reshape(n_boards, board_size)  # (n, N) scene indices
    slot = rng.integers(0, board_size, n_boards)  # (n,) target position
    boards = Boards(items, slot, pool)
    attrs = pool.attrs  # (S, A)
    target = boards.target_items  # (n,)
    same = attrs[items] == attrs[target][:, None, :]  # (n, N, A)
    combos = combo_ids(attrs[target])  # (n,)
    metrics: dict[str, float] = {}
    for cond, names in LISTENER_CONDITIONS.items():
        mask = mask_of(names)
        captions = [caption_text(int(c), mask) for c in combos]
        choice = listen({listener.name: listener}, captions, boards)[listener.name].argmax(1).cpu().numpy()  # (n,)
        used = np.array([a in names for a in ATTRIBUTES])
        ties = same[..., used].all(-1).sum(1)  # (n,) board images the caption is true of
        metrics[f"acc_{cond}"] = float((choice == slot).mean())
        metrics[f"ceiling_{cond}"] = float((1.0 / ties).mean())
    metrics["acc_color_only"] = metrics["acc_only/color"]
    return metrics

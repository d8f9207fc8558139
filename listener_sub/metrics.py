"""Metric definitions shared by pretrain, train, eval, inspect and bench (one definition each)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from listener_sub.world import ATTRIBUTES, parse, truthful
from listener_sub.world.parser import tokenize

if TYPE_CHECKING:  # annotations only: importing the models costs seconds
    from listener_sub.game import Boards, Game
    from listener_sub.models.speaker import Speaker

EVAL_CHUNK = 250  # boards captioned and judged at once in evaluation


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the captions (0 when there are none)."""
    grams = [tuple(words[i : i + n]) for t in texts for words in [tokenize(t)] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def caption_metrics(
    texts: Sequence[str],
    objects: Sequence[list[dict[str, str]]],
    x: Sequence[list[float]] | None = None,
    prefix: str = "",
) -> dict[str, float]:
    """Language metrics of captions about scenes: mention/<a>, truthful, grammatical, length, distinct_1/2."""
    parsed = [parse(t) for t in texts]
    x = x if x is not None else [None] * len(texts)
    metrics = {f"mention/{a}": float(np.mean([a in p.mentioned() for p in parsed])) for a in ATTRIBUTES}
    metrics["truthful"] = float(np.mean([truthful(t, o, xs) for t, o, xs in zip(texts, objects, x)]))
    metrics["grammatical"] = float(np.mean([p.grammatical for p in parsed]))
    metrics["length"] = float(np.mean([len(tokenize(t)) for t in texts]))
    metrics["distinct_1"] = distinct_n(texts, 1)
    metrics["distinct_2"] = distinct_n(texts, 2)
    return {f"{prefix}{k}": v for k, v in metrics.items()}


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

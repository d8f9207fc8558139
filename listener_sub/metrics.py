"""Metric definitions shared by pretrain, train, eval, inspect and bench (one definition each)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from listener_sub.game import sample_boards
from listener_sub.models.listener import Listener
from listener_sub.models.speaker import Speaker
from listener_sub.world import ATTRIBUTES, WorldConfig, parse, render, sample_scenes, truthful
from listener_sub.world.parser import tokenize


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
def speaker_metrics(
    speaker: Speaker,
    listeners: Mapping[str, Listener],
    world: WorldConfig,
    n_boards: int,
    board_size: int,
    seed: int,
    split: str = "test",
    chunk: int = 256,
) -> dict[str, float]:
    """Greedy (plain keys) and temperature-1 (`sample/` keys) captions of held-out targets: language + acc/<listener>."""
    scenes = sample_scenes(world, split, 0, max(4 * n_boards, 1000))
    images = render(scenes, world.image_size)  # (P, H, W, 3)
    boards = sample_boards(len(scenes), n_boards, board_size, np.random.default_rng(seed))
    targets = boards.target_items
    objects = [scenes.objects(int(i)) for i in targets]
    x = [scenes.x(int(i)) for i in targets]
    generator = torch.Generator(device=speaker.device).manual_seed(seed)
    metrics: dict[str, float] = {}
    for prefix, greedy in (("", True), ("sample/", False)):
        texts = [
            t
            for s in range(0, n_boards, chunk)
            for t in speaker.generate(images[targets[s : s + chunk]], greedy=greedy, generator=generator).texts
        ]
        metrics |= caption_metrics(texts, objects, x, prefix)
        for name, listener in listeners.items():
            picks = torch.cat(
                [listener.choose(texts[s : s + chunk], images[boards.items[s : s + chunk]]).argmax(-1).cpu() for s in range(0, n_boards, chunk)]
            )
            metrics[f"{prefix}acc/{name}"] = float((picks.numpy() == boards.target).mean())
    return metrics

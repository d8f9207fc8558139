"""What a study shows, made once before the first participant joins: its boards, each speaker's caption of every
board and the model listeners' picks on it, the attention checks, and every board image as each condition's
perception shows it (PNG). A study's store holds all of it, so serving and reporting a study need no model."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from listener_sub.data import DataConfig
from listener_sub.game import Boards, Game
from listener_sub.images import perceived
from listener_sub.oracle import SUBSETS, has_oracle, oracle_captions
from listener_sub.perception import Full, Perception
from listener_sub.study.protocol import BOARD, CHECK, StudyConfig, perception_label

CHECK_SPEAKER = "check"  # whose caption an attention check shows: the target with every attribute named
CHECK_SEED = 1_000_003  # added to the study's seed to draw its check boards apart from its boards
CaptionFn = Callable[[Boards], list[str]]  # a speaker: boards -> one caption per board


@dataclass
class BoardMaterial:
    """One board of a study: its images (pool indices), the target, and every speaker's play on it."""

    items: list[int]  # (N,) pool indices
    target: int  # the target's position
    captions: dict[str, str]  # speaker -> its caption of the target
    model_picks: dict[str, dict[str, int]]  # speaker -> model listener -> the position it picked on that caption


@dataclass
class StudyMaterials:
    """Everything a study shows and compares, independent of any model."""

    config: StudyConfig
    n_images: int  # images on a board
    data: str  # where the boards' images come from, in words
    listeners: dict[str, str]  # model listener -> its perception and role, in words
    boards: list[BoardMaterial]
    checks: list[BoardMaterial]
    images: dict[tuple[str, int, int, str], bytes]  # (BOARD | CHECK, board, position, perception label) -> PNG


def png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def played(game: Game, boards: Boards, captions: Mapping[str, list[str]], seed: int) -> list[BoardMaterial]:
    """Each board with every speaker's caption and the model listeners' picks on it (the game's choice rule; a
    sampled choice drawn from `seed`)."""
    picks = {}
    for speaker, texts in captions.items():
        outcome = game.play(texts, boards, torch.Generator().manual_seed(seed))
        picks[speaker] = {name: c.cpu().tolist() for name, c in outcome.choices.items()}  # listener -> (B,)
    return [
        BoardMaterial(
            items=[int(i) for i in boards.items[b]],
            target=int(boards.target[b]),
            captions={speaker: texts[b] for speaker, texts in captions.items()},
            model_picks={s: {name: int(p[b]) for name, p in by_listener.items()} for s, by_listener in picks.items()},
        )
        for b in range(len(boards))
    ]


def check_captions(boards: Boards) -> list[str]:
    """Per board the caption naming every attribute of the target (data with scenes): an attention check's caption."""
    texts, index = oracle_captions(boards)
    return [texts[i] for i in index[SUBSETS.index(SUBSETS[-1])]]


def prepare_study(
    config: StudyConfig,
    game: Game,
    speakers: Mapping[str, CaptionFn],
    perceptions: Mapping[str, Perception],
    listeners: Mapping[str, str],
    split: str,
    data: DataConfig | None = None,
) -> StudyMaterials:
    """Draw the study's boards (and check boards) from a split of the game's data (or `data`), caption them with every
    speaker the conditions name, play each caption to the model listeners, and render every board image through each
    condition's perception.

    speakers: name -> caption function for every speaker of the conditions; perceptions: perception_label(spec) ->
    the Perception for every condition's perception; listeners: model listener -> a description for the report.
    """
    needed = {c.speaker for c in config.conditions}
    missing = sorted(needed - set(speakers))
    if missing:
        raise ValueError(f"the study's conditions name speaker(s) {missing} that were not given")
    labels = {perception_label(c.perception) for c in config.conditions}
    if labels - set(perceptions):
        raise ValueError(f"no perception given for {sorted(labels - set(perceptions))}")
    boards = game.sample(config.boards, np.random.default_rng(config.seed), split, data)
    if config.attention_checks and not has_oracle(boards):
        raise ValueError(
            f"attention checks name every attribute of the target, but {boards.checked_pool().data.name} has no "
            "scene attributes; set study.attention_checks=0"
        )
    checks = game.sample(config.attention_checks, np.random.default_rng(config.seed + CHECK_SEED), split, data)
    images: dict[tuple[str, int, int, str], bytes] = {}
    for label in sorted(labels):
        views = perceived(perceptions[label], boards.images)  # (B, N, H, W, 3)
        images |= {(BOARD, b, n, label): png(views[b, n]) for b in range(len(boards)) for n in range(views.shape[1])}
    if len(checks):
        full = perception_label(Full.name)
        views = perceived(Full(), checks.images)  # (C, N, H, W, 3)
        images |= {(CHECK, b, n, full): png(views[b, n]) for b in range(len(checks)) for n in range(views.shape[1])}
    return StudyMaterials(
        config=config,
        n_images=game.n_images,
        data=boards.checked_pool().data.name,
        listeners=dict(listeners),
        boards=played(game, boards, {s: speakers[s](boards) for s in sorted(needed)}, config.seed),
        checks=played(game, checks, {CHECK_SPEAKER: check_captions(checks)}, config.seed) if len(checks) else [],
        images=images,
    )

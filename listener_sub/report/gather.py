"""What `listener-sub inspect` shows of a train run: per board each listener's view, the captions, picks and rewards.

Up to three speakers caption every board: `base` (the captioning adapter, the RL reference), `trained` (the run's
latest checkpoint), both greedy, and, for data with scenes, `oracle` (per board the canonical caption of the attribute
subset with the best reward, `listener_sub.oracle.oracle_speaker`). The game's listeners judge all of them on the same
boards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from listener_sub.adapters.io import LORA_DIR, find_adapter
from listener_sub.commands.common import eval_config, run_spec, trainer_config
from listener_sub.errors import DataError, UserError
from listener_sub.evaluation import held_out_boards
from listener_sub.game import Boards, Game, Outcome
from listener_sub.images import perceived
from listener_sub.loading import from_run, model_speakers, players
from listener_sub.metrics import caption_metrics
from listener_sub.oracle import has_oracle, oracle_speaker
from listener_sub.perception import Perception
from listener_sub.runs import ADAPTER, CHECKPOINTS, CONFIG, STATE, adapter_file, latest_checkpoint
from listener_sub.world import truthful

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"


@dataclass
class Play:
    """One caption on one board: each listener's P(image | caption) and pick, and the speaker's reward."""

    caption: str
    truthful: bool | None  # every value the caption names is true of the target (None: data without scenes)
    probs: dict[str, list[float]]  # listener -> P(image | caption) of each board position
    picks: dict[str, int]  # listener -> the position it picked
    correct: dict[str, bool]  # listener -> picked the target
    reward: float
    won: bool  # every intended listener right and every subtracted one wrong


@dataclass
class BoardReport:
    """One held-out board: what each listener sees, and the three speakers' plays on it."""

    target: int  # the target's position
    description: str  # the target in words: its referent with every attribute named, its first caption, or its file
    views: dict[str, np.ndarray]  # listener -> (N, H, W, 3) uint8, the board through its perception
    plays: dict[str, Play]  # speaker (Report.speakers) -> its play
    oracle_subset: tuple[str, ...]  # the attributes the oracle's caption names (empty without an oracle)

    @property
    def won(self) -> bool:
        """The trained speaker won the board."""
        return self.plays["trained"].won


@dataclass
class Report:
    """Everything the HTML page and the text table show."""

    run: Path
    checkpoint: Path  # the trained speaker's checkpoint directory (a VLM's: the folder of its LoRA adapter's folder)
    data: str  # the boards' images, e.g. "synthetic test", "coco val2017 (/data/coco)"
    speakers: tuple[str, ...]  # who captions each board: base, trained and (data with scenes) oracle
    split: str  # split of the boards
    seed: int  # drew the boards
    roles: dict[str, str]  # listener -> intended | subtracted | player (read by no reward term)
    perceptions: dict[str, str]  # listener -> its perception, e.g. "grayscale", "blur(sigma=1.5)"
    reward: str  # the reward in words
    summary: dict[str, Any]  # the run's summary.json
    curves: list[dict[str, float]]  # the run's metrics.jsonl, one object per logged step
    attributes: tuple[str, ...]  # the attributes whose mention rates the summary holds
    mention: dict[str, dict[str, float]]  # speaker -> attribute -> mention rate on the run's evaluation boards
    mention_boards: int  # how many evaluation boards `mention` is measured on
    boards: list[BoardReport]


def _read(path: Path, parse: Callable[[str], Any]) -> Any:
    """A run file parsed; an unreadable one is a user error naming it."""
    try:
        return parse(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(
            f"{path} is unreadable ({str(error).splitlines()[0]}); pass the directory of an intact train run"
        ) from None


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, float]], Path]:
    """A train run's summary, metrics lines and latest checkpoint; UserError naming every missing file."""
    if not run_dir.is_dir():
        raise UserError(f"run={run_dir} is not a directory; pass the directory of a listener-sub train run")
    missing = [str(name) for name in (CONFIG, SUMMARY, METRICS) if not (run_dir / name).is_file()]
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None or not has_adapter(checkpoint):
        missing.append(f"{CHECKPOINTS}/step_N/{ADAPTER} (or {LORA_DIR}/) + {STATE}")
    if missing:
        raise UserError(
            f"run={run_dir} is missing {', '.join(missing)}; pass the directory of a finished listener-sub train run"
        )
    summary = _read(run_dir / SUMMARY, json.loads)
    curves = _read(run_dir / METRICS, lambda text: [json.loads(line) for line in text.splitlines() if line.strip()])
    if not {"before", "after"} <= set(summary):
        raise UserError(
            f"{run_dir / SUMMARY} has no before/after metrics; pass the directory of a finished listener-sub train run"
        )
    return summary, curves, checkpoint


def has_adapter(checkpoint: Path) -> bool:
    """Whether a checkpoint directory holds trained weights (`find_adapter`: an adapter file or a LoRA folder)."""
    try:
        find_adapter(checkpoint)
    except DataError:
        return False
    return True


def perception_name(perception: Perception) -> str:
    """A perception in words: its name and parameters."""
    params = perception.extra_repr()
    return f"{perception.name}({params})" if params else perception.name


def plays(captions: list[str], outcome: Outcome, game: Game, boards: Boards) -> list[Play]:
    """Per board the Play of its caption, from the outcome of `game.play(captions, boards)`."""
    scenes = boards.checked_pool().scenes
    probs = {name: p.cpu().tolist() for name, p in outcome.probs.items()}
    picks = {name: c.cpu().tolist() for name, c in outcome.choices.items()}
    correct = {name: c.cpu().tolist() for name, c in outcome.correct.items()}
    rows = []
    for b, (caption, item) in enumerate(zip(captions, boards.target_items)):
        right = {name: bool(c[b]) for name, c in correct.items()}
        rows.append(
            Play(
                caption=caption,
                truthful=None
                if scenes is None
                else truthful(caption, scenes.objects(int(item)), scenes.x(int(item)), scenes.vocab),
                probs={name: p[b] for name, p in probs.items()},
                picks={name: int(c[b]) for name, c in picks.items()},
                correct=right,
                reward=float(outcome.reward[b]),
                won=game.won(right),
            )
        )
    return rows


def oracle_mention(game: Game, boards: Boards, generator: torch.Generator) -> dict[str, float]:
    """Mention rate per attribute of the per-board oracle's captions on the boards (data with scenes)."""
    captions, _ = oracle_speaker(game, boards, generator)
    scenes = boards.checked_pool().scenes
    metrics = caption_metrics(captions, scenes, boards.target_items)
    return {a: metrics[f"mention/{a}"] for a in scenes.vocab.attributes}


def reward_words(game: Game) -> str:
    """The game's reward in words, e.g. 'prob of full - 1.0 x prob of gray'."""
    reward = game.reward
    if reward.score == "dixit":
        return f"dixit: 1 when some but not all of {', '.join(reward.listeners)} pick the target"

    def terms(weights: Mapping[str, float]) -> str:
        return " + ".join(
            f"{reward.score}({n})" if w == 1 else f"{w:g} {reward.score}({n})" for n, w in weights.items()
        )

    if not reward.subtracted:
        return terms(reward.intended)
    subtracted = terms(reward.subtracted)
    return f"{terms(reward.intended)} - {reward.lam:g} x " + (
        f"({subtracted})" if len(reward.subtracted) > 1 else subtracted
    )


def gather(
    cfg: DictConfig,
    run_dir: Path,
    n_boards: int,
    own: tuple[str, ...],
    overrides: list[str] | None = None,
    checkpoint: str | None = None,
) -> Report:
    """Play the run's base, trained and oracle speakers on n_boards boards of its evaluation split, drawn with its seed.

    The game is the run's own: its saved config with `overrides` on top (default: the command line's; `own`: the
    command's keys, not the run's). The trained speaker is `checkpoint` (a checkpoint dir or adapter file), by default
    the run's latest checkpoint.
    """
    summary, curves, latest = read_run(run_dir)
    adapter = adapter_file(checkpoint if checkpoint else latest, "checkpoint")
    cfg = from_run(cfg, run_dir, own, overrides)
    rl_cfg, eval_cfg, spec = trainer_config(cfg), eval_config(cfg), run_spec(cfg)
    played = players(cfg, spec, [(eval_cfg.data, eval_cfg.split)], adapter)
    game = played.game
    generator = torch.Generator(device="cpu").manual_seed(eval_cfg.seed)  # listener picks when game.choice=sample
    boards = game.sample(n_boards, np.random.default_rng(eval_cfg.seed), eval_cfg.split, eval_cfg.data)
    captions = {name: speak(boards) for name, speak in model_speakers(played, rl_cfg.max_new_tokens).items()}
    subsets: list[tuple[str, ...]] = [()] * len(boards)
    if has_oracle(boards):
        captions["oracle"], subsets = oracle_speaker(game, boards, generator)
    eval_boards = held_out_boards(game, eval_cfg)  # the boards summary.json's before / after were measured on
    attributes = tuple(key.split("/", 1)[1] for key in summary["before"] if key.startswith("mention/"))
    return Report(
        run=run_dir,
        checkpoint=adapter.parent,
        data=boards.checked_pool().data.name,
        speakers=tuple(captions),
        split=eval_cfg.split,
        seed=eval_cfg.seed,
        roles={name: game.role(name) for name in game.listeners},
        perceptions={name: perception_name(listener.perception) for name, listener in game.listeners.items()},
        reward=reward_words(game),
        summary=summary,
        curves=curves,
        attributes=attributes,
        mention=mention_rates(summary, attributes, game, eval_boards, eval_cfg.seed),
        mention_boards=len(eval_boards),
        boards=board_reports(game, boards, captions, subsets, generator),
    )


def board_reports(
    game: Game,
    boards: Boards,
    captions: dict[str, list[str]],
    subsets: list[tuple[str, ...]],
    generator: torch.Generator,
) -> list[BoardReport]:
    """Each board as each listener perceives it, and what every speaker said on it and how it was played."""
    rows = {name: plays(texts, game.play(texts, boards, generator), game, boards) for name, texts in captions.items()}
    images = boards.images  # (B, N, H, W, 3)
    views = {name: perceived(listener.perception, images) for name, listener in game.listeners.items()}
    pool = boards.checked_pool()
    return [
        BoardReport(
            target=int(boards.target[b]),
            description=pool.describe(int(item)),
            views={name: view[b] for name, view in views.items()},
            plays={name: rows[name][b] for name in captions},
            oracle_subset=subsets[b],
        )
        for b, item in enumerate(boards.target_items)
    ]


def mention_rates(
    summary: dict[str, Any], attributes: tuple[str, ...], game: Game, eval_boards: Boards, seed: int
) -> dict[str, dict[str, float]]:
    """Each speaker's mention rate per attribute on the run's evaluation boards: base and trained from summary.json,
    the oracle's played here (data with scenes)."""
    mention = {
        "base": {a: summary["before"][f"mention/{a}"] for a in attributes},
        "trained": {a: summary["after"].get(f"mention/{a}", float("nan")) for a in attributes},
    }
    if has_oracle(eval_boards):
        oracle = oracle_mention(game, eval_boards, torch.Generator(device="cpu").manual_seed(seed))
        mention["oracle"] = {a: oracle.get(a, float("nan")) for a in attributes}
    return mention

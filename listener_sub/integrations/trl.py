"""Listener subtraction for TRL: the game's boards as a Hugging Face dataset, and reward functions that follow TRL's
reward-function contract (`GRPOTrainer`, `RLOOTrainer`; an optional extra: `pip install "listener-sub[trl]"`).

Each dataset row is one board: the prompt, the target image (the speaker sees it; the board's images too with
`board_images=True`) and the board's identity (`board_split`, `board_items`, `board_target`), from which the reward
rebuilds the exact board. The rewards play every completion of a batch as a caption on its row's board in one call of
`Game.play`, so they are the numbers the game gives; they log each listener's accuracy, the gap and the probability
gap through TRL's `log_metric`, and each listener's pick per completion through `log_extra`.

    game = listener_sub.default_players().game
    rewards = ListenerSubtractionRewards(game)
    trainer = GRPOTrainer(
        model="HuggingFaceTB/SmolVLM-256M-Instruct",
        reward_funcs=[rewards.intended_reward, rewards.subtracted_reward],  # or [rewards.listener_subtraction_reward]
        train_dataset=boards_dataset(game, 1024, split="train"),
        args=GRPOConfig(output_dir="grpo", num_generations=4, reward_weights=[1.0, 1.0]),  # weights 1, 1: the reward
        peft_config=LoraConfig(target_modules=["q_proj", "v_proj"]),
    )
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from listener_sub.evaluation import warm_pool
from listener_sub.game import Boards, Game, Outcome

if TYPE_CHECKING:
    from datasets import Dataset

PROMPT = "Describe the image in a few words."
BOARD_COLUMNS = ("board_split", "board_items", "board_target")  # what identifies a row's board


def boards_dataset(
    game: Game,
    n: int,
    split: str = "train",
    seed: int = 0,
    prompt: str = PROMPT,
    board_images: bool = False,
    conversational: bool = True,
) -> Dataset:
    """n boards of the game's `split` drawn with `seed` -- the boards `listener-sub eval` plays for
    `evaluation.boards=n evaluation.split=split evaluation.seed=seed` -- as a `datasets.Dataset`, one row a board:

    - `prompt`: the user's turn (conversational: an image part, then the text; else the text alone),
    - `image`: the target image (PIL), what the speaker describes; `images`: the board's images in board order, when
      `board_images` (a model that should see the distractors too),
    - `board_split`, `board_items` (pool indices of the board's images), `board_target` (the target's position),
      `board_index` (the board's row): what the reward rebuilds the board from.
    """
    from datasets import Dataset
    from PIL import Image

    if n < 1:
        raise ValueError(f"n={n}: ask for at least one board")
    warm_pool(game, split)
    boards = game.sample(n, np.random.default_rng(seed), split)
    if conversational:
        turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    columns: dict[str, list[Any]] = {
        "prompt": [turn if conversational else prompt] * n,
        "image": [Image.fromarray(image) for image in boards.target_images],
        "board_split": [split] * n,
        "board_items": boards.items.tolist(),
        "board_target": boards.target.tolist(),
        "board_index": list(range(n)),
    }
    if board_images:
        columns["images"] = [[Image.fromarray(image) for image in board] for board in boards.images]
    return Dataset.from_dict(columns)


# the chat template of a processor that has none: each turn's image token and text, nothing else -- the prompt the VLM
# speaker kind gives such a model (`listener_sub.models.vlm.prompt_text`)
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ image_token }}{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endfor %}"
)


def with_chat_template(processor: Any) -> Any:
    """The processor, given `PLAIN_CHAT_TEMPLATE` (its image token filled in) when it has no chat template: TRL trains
    a VLM on conversational prompts only, and this template renders them as the VLM speaker kind prompts the model."""
    if not getattr(processor, "chat_template", None):
        processor.chat_template = PLAIN_CHAT_TEMPLATE.replace("{{ image_token }}", processor.image_token)
    return processor


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """A TRL completion as a caption: plain text as it is; a conversational one ([{"role": "assistant", "content":
    ...}], the content a string or a list of parts), the text of its assistant turns."""
    if isinstance(completion, str):
        return completion.strip()
    texts = []
    for message in completion:
        content = message.get("content", "")
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(part.get("text", "") for part in content if part.get("type") == "text")
    return " ".join(" ".join(texts).split())


@dataclass
class Played:
    """One batch played: which rows had a board, their captions and boards, and what happened."""

    rows: np.ndarray  # (R,) positions in the batch of the rows with a board
    captions: list[str]  # (R,)
    boards: Boards  # (R,) boards
    outcome: Outcome | None  # on those R boards (None: no row had one)


class ListenerSubtractionRewards:
    """TRL reward functions of one game: `listener_subtraction_reward` (the game's reward), `intended_reward` (the
    intended listeners' term, sum_i w_i s_i) and `subtracted_reward` (minus lam times the subtracted listeners' term),
    so that with `reward_weights=[1, 1]` the last two sum to the first, and TRL's multi-objective aggregation can weigh
    them. Each takes TRL's keyword arguments (`prompts`, `completions`, `completion_ids`, every dataset column) and
    returns one float per completion, None for a row without a board. The three share one play of a batch."""

    def __init__(self, game: Game, log_prefix: str = "listener_sub") -> None:
        self.game, self.log_prefix = game, log_prefix
        self._last: tuple[tuple, Played] | None = None  # the latest batch's key and play

    def play(self, completions: Sequence[Any], **columns: Any) -> Played:
        """The batch's completions played as captions on their rows' boards (one `Game.play`), remembered for the other
        reward functions of the same batch."""
        missing = [c for c in BOARD_COLUMNS if c not in columns]
        if missing:
            raise KeyError(
                f"the reward needs the dataset columns {list(BOARD_COLUMNS)} (boards_dataset makes them); missing "
                f"{missing}"
            )
        splits, items, targets = (columns[c] for c in BOARD_COLUMNS)
        captions = [completion_text(c) for c in completions]
        key = (tuple(captions), tuple(map(str, splits)), tuple(map(str, items)), tuple(map(str, targets)))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        rows = np.array([i for i, split in enumerate(splits) if split is not None and items[i] is not None], dtype=int)
        if len(rows) and len({splits[i] for i in rows}) > 1:
            raise ValueError(f"one batch holds boards of several splits {sorted({splits[i] for i in rows})}")
        if len(rows):
            split = splits[rows[0]]
            warm_pool(self.game, split)  # the features evaluation reads, whatever boards come first
            boards = Boards(
                np.array([items[i] for i in rows], dtype=np.int64),
                np.array([targets[i] for i in rows], dtype=np.int64),
                self.game.pool(split),
            )
            played_captions = [captions[i] for i in rows]
            played = Played(rows, played_captions, boards, self.game.play(played_captions, boards))
        else:
            played = Played(rows, [], Boards(np.zeros((0, 1), np.int64), np.zeros(0, np.int64)), None)
        self._last = (key, played)
        self._log(played, len(captions), columns)
        return played

    def _log(self, played: Played, n: int, columns: dict[str, Any]) -> None:
        """Each listener's accuracy, the gap and the probability gap of the batch (TRL's `log_metric`), and per
        completion its board (`board_index`) and each listener's pick (its `log_extra`; None where a row had no
        board)."""
        log_metric, log_extra = columns.get("log_metric"), columns.get("log_extra")
        outcome = played.outcome
        if outcome is None:
            return
        if log_metric is not None:
            for name, right in outcome.correct.items():
                log_metric(f"{self.log_prefix}/acc/{name}", right.float().mean().item())
            log_metric(f"{self.log_prefix}/gap", outcome.gap.float().mean().item())
            log_metric(f"{self.log_prefix}/prob_gap", outcome.prob_gap.float().mean().item())
        if log_extra is not None:
            if "board_index" in columns:
                log_extra(f"{self.log_prefix}/board", list(columns["board_index"]))
            for name, picks in outcome.choices.items():
                values: list[int | None] = [None] * n
                for row, pick in zip(played.rows.tolist(), picks.tolist()):
                    values[row] = int(pick)
                log_extra(f"{self.log_prefix}/pick/{name}", values)

    def _per_completion(self, played: Played, values: torch.Tensor | None, n: int) -> list[float | None]:
        out: list[float | None] = [None] * n
        if values is not None:
            for row, value in zip(played.rows.tolist(), values.tolist()):
                out[row] = float(value)
        return out

    def _terms(self, played: Played) -> tuple[torch.Tensor, torch.Tensor] | None:
        outcome = played.outcome
        if outcome is None or self.game.reward.score == "dixit":
            return None
        chance = 1.0 / played.boards.items.shape[1]
        return self.game.reward.terms(outcome.target_probs, outcome.correct, chance)

    def listener_subtraction_reward(self, prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        """The game's reward of each completion on its row's board (`Game.play`'s `Outcome.reward`)."""
        played = self.play(completions, **kwargs)
        return self._per_completion(played, None if played.outcome is None else played.outcome.reward, len(completions))

    def intended_reward(self, prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        """The intended listeners' term, sum_i w_i s_i (None for every row under the dixit score, which has none)."""
        played = self.play(completions, **kwargs)
        terms = self._terms(played)
        return self._per_completion(played, None if terms is None else terms[0], len(completions))

    def subtracted_reward(self, prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        """Minus lam times the subtracted listeners' term, -lam * sum_j w_j s_j (0 with no subtracted listener)."""
        played = self.play(completions, **kwargs)
        terms = self._terms(played)
        return self._per_completion(
            played, None if terms is None else -self.game.reward.lam * terms[1], len(completions)
        )

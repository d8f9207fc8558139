"""One round of the game as the envs play it: the state both PettingZoo fronts (AEC, Parallel) share.

Boards, perception and rewards all come from the batched game core (`listener_sub.game.Game`) on a batch of
one board, so an env and the trainer cannot disagree about the rules.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from listener_sub.data import DataConfig
from listener_sub.game import Boards, Game, Outcome, decode_tokens
from listener_sub.images import perceived

SPEAKER = "speaker_0"


def listener_agent(i: int) -> str:
    return f"listener_{i}"


class Round:
    """A board, the speaker's token ids, the listeners' picks and the outcome; spaces of every agent.

    Agents: `speaker_0`, then `listener_<i>` for the game's listeners in order. The speaker observes the
    target image {"target": (H, W, 3) uint8} and acts with `max_tokens` token ids of its LM's vocabulary
    (the caption ends at the first EOS; pad after it). Listener i observes {"board": (N, H, W, 3) uint8
    through its perception, "caption": (max_tokens,) int64 token ids, all pad until the speaker has spoken}
    and acts with the position it picks.
    """

    boards: Boards  # (1 board) set by reset
    tokens: np.ndarray  # (max_tokens,) int64 the speaker's action, pad until it has spoken
    caption: str | None  # the decoded caption, None until the speaker has spoken
    picks: dict[str, int]  # listener agent -> picked position
    outcome: Outcome | None  # the game core's verdict once every listener has picked

    def __init__(
        self, game: Game, tokenizer: Any, split: str = "train", max_tokens: int = 16, data: DataConfig | None = None
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the speaker's tokenizer needs an eos token")
        self.game, self.tokenizer, self.split, self.max_tokens, self.data = game, tokenizer, split, max_tokens, data
        self.listeners = {listener_agent(i): name for i, name in enumerate(game.listeners)}  # agent -> listener name
        self.agents = [SPEAKER, *self.listeners]
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        image = game.pool(split, data).images.shape[1:]  # (H, W, 3)
        caption = spaces.MultiDiscrete([len(tokenizer)] * max_tokens)
        self.action_spaces: dict[str, spaces.Space] = {SPEAKER: caption}
        self.observation_spaces: dict[str, spaces.Space] = {
            SPEAKER: spaces.Dict({"target": spaces.Box(0, 255, image, np.uint8)})
        }
        for agent in self.listeners:
            self.action_spaces[agent] = spaces.Discrete(game.n_images)
            board = spaces.Box(0, 255, (game.n_images, *image), np.uint8)
            self.observation_spaces[agent] = spaces.Dict(
                {"board": board, "caption": spaces.MultiDiscrete([len(tokenizer)] * max_tokens)}
            )
        self.rng = np.random.default_rng()

    def reset(self, seed: int | None = None) -> None:
        """A new board; `seed` restarts the board stream (None: continue it)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.boards = self.game.sample(1, self.rng, self.split, self.data)
        self.tokens = np.full(self.max_tokens, self.pad_id, dtype=np.int64)
        self.caption, self.picks, self.outcome = None, {}, None
        self._views: dict[str, np.ndarray] = {}  # listener agent -> its perceived board

    def view(self, agent: str) -> np.ndarray:
        """(N, H, W, 3) uint8 board as listener `agent` perceives it."""
        if agent not in self._views:
            self._views[agent] = perceived(self.game.listeners[self.listeners[agent]].perception, self.boards.images[0])
        return self._views[agent]

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        if agent == SPEAKER:
            return {"target": self.boards.target_images[0]}
        return {"board": self.view(agent), "caption": self.tokens.copy()}

    def speak(self, action: Any) -> None:
        """The speaker's (max_tokens,) integer token ids; anything else (floats, another shape, ids out of the vocabulary,
        a second caption) is a ValueError, never truncated or wrapped."""
        self.check_open()
        if self.caption is not None:
            raise ValueError("the speaker has spoken this round; call reset() for a new board")
        tokens = np.asarray(action)
        if (
            tokens.dtype.kind not in "iu"
            or tokens.shape != (self.max_tokens,)
            or tokens.min() < 0
            or tokens.max() >= len(self.tokenizer)
        ):
            raise ValueError(
                f"the speaker acts with {self.max_tokens} integer token ids in [0, {len(self.tokenizer)}), got {action!r}"
            )
        self.tokens = tokens.astype(np.int64)
        self.caption = decode_tokens(self.tokenizer, self.tokens[None])[0]

    def pick(self, agent: str, action: Any) -> None:
        """A listener's picked position: one integer in [0, N); a float, an array of another shape or a bool is a ValueError."""
        self.check_open()
        if self.caption is None:
            raise ValueError(f"{agent} picks before the speaker has spoken; the speaker acts first")
        position = np.asarray(action)
        if position.dtype.kind not in "iu" or position.shape != () or not 0 <= int(position) < self.game.n_images:
            raise ValueError(f"{agent} picks one integer position in [0, {self.game.n_images}), got {action!r}")
        self.picks[agent] = int(position)

    def check_open(self) -> None:
        """A round takes actions only between reset() and its outcome."""
        if not hasattr(self, "boards"):
            raise ValueError("the round has no board yet; call reset() first")
        if self.outcome is not None:
            raise ValueError("this round is over (scored); call reset() for a new board")

    def listen(self, caption: str) -> dict[str, torch.Tensor]:
        """Listener name -> (1, N) P(image | caption) on this round's board, through the game core."""
        return self.game.listen([caption], self.boards)

    def finish(self) -> Outcome:
        """Score the round through the game core: listeners' probabilities of the caption, their picks, rewards."""
        probs = self.listen(self.caption)
        choices = {self.listeners[agent]: torch.tensor([position]) for agent, position in self.picks.items()}
        self.outcome = self.game.judge(probs, choices, self.boards)
        return self.outcome

    def rewards(self) -> dict[str, float]:
        """Agent -> reward of the finished round (0 for everyone before it is finished)."""
        if self.outcome is None:
            return dict.fromkeys(self.agents, 0.0)
        mine = self.outcome.listener_rewards
        return {
            SPEAKER: float(self.outcome.reward[0]),
            **{a: float(mine[name][0]) for a, name in self.listeners.items()},
        }

    def infos(self) -> dict[str, dict[str, Any]]:
        """Agent -> info: the caption for the speaker; each listener's probabilities once the round is scored."""
        infos: dict[str, dict[str, Any]] = {SPEAKER: {} if self.caption is None else {"caption": self.caption}}
        for agent, name in self.listeners.items():
            infos[agent] = {} if self.outcome is None else {"probs": self.outcome.probs[name][0].tolist()}
        return infos

    def record(self) -> dict[str, Any]:
        """The finished round as plain JSON: board scene ids, target, caption, each listener's pick and probs, rewards."""
        outcome = self.outcome
        return {
            "split": self.split,
            "board": self.boards.items[0].tolist(),
            "target": int(self.boards.target[0]),
            "caption": self.caption,
            "tokens": self.tokens.tolist(),
            "listeners": {
                agent: {
                    "name": name,
                    "choice": self.picks[agent],
                    "correct": bool(outcome.correct[name][0]),
                    "probs": [round(p, 6) for p in outcome.probs[name][0].tolist()],
                }
                for agent, name in self.listeners.items()
            },
            "rewards": self.rewards(),
        }

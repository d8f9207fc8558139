"""One round of the game as the envs play it: the state both PettingZoo fronts (AEC, Parallel) share.

Boards, perception and rewards all come from the batched game core (`listener_sub.game.Game`) on a batch of
one board, so an env and the trainer cannot disagree about the rules.

A round goes through three phases: `speak` (the speaker's action is read), `pick` (each listener's pick is read)
and `done` (scored; no action is read). `caption_action` turns a caption into the speaker's action.
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
SPEAK, PICK, DONE = "speak", "pick", "done"  # the round's phases, in order


def listener_agent(i: int) -> str:
    return f"listener_{i}"


def pad_id(tokenizer: Any) -> int:
    """The token id that fills a speaker action after the caption's EOS: the tokenizer's pad token, else its EOS."""
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)


def caption_action(tokenizer: Any, text: str, max_tokens: int = 16) -> np.ndarray:
    """The speaker's action for `text`: (max_tokens,) int64 -- its token ids, EOS, then pad (no EOS when the ids fill
    the action). The round reads it back (`decode_tokens`: cut at the first EOS) to the text as the tokenizer spells
    it; a caption longer than max_tokens ids is a ValueError, never truncated.

        action = caption_action(speaker.tokenizer, "a red circle .", max_tokens=16)
        env.step(action)  # AEC, the speaker's turn; Parallel: env.step({"speaker_0": action})
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > max_tokens:
        raise ValueError(f"{text!r} is {len(ids)} token ids, more than the action's max_tokens={max_tokens}")
    tokens = np.full(max_tokens, pad_id(tokenizer), dtype=np.int64)
    tokens[: len(ids)] = ids
    if len(ids) < max_tokens:
        tokens[len(ids)] = tokenizer.eos_token_id
    return tokens


def checked_tokens(action: Any, shape: tuple[int, ...], vocab: int) -> np.ndarray:
    """The speaker's token ids as int64: an integer array of `shape` ((max_tokens,), or (num_envs, max_tokens)) with
    ids in [0, vocab); anything else (floats, another shape, ids out of the vocabulary) is a ValueError, never
    truncated or wrapped."""
    tokens = np.asarray(action)
    if tokens.dtype.kind not in "iu" or tokens.shape != shape or tokens.min() < 0 or tokens.max() >= vocab:
        count = shape[0] if len(shape) == 1 else "x".join(map(str, shape))
        raise ValueError(f"the speaker acts with {count} integer token ids in [0, {vocab}), got {action!r}")
    return tokens.astype(np.int64)


def checked_picks(action: Any, shape: tuple[int, ...], n_images: int, agent: str) -> np.ndarray:
    """A listener's picked positions as int64: an integer array of `shape` (() for one board, (num_envs,) for a batch)
    in [0, n_images); anything else (a float, a bool, another shape) is a ValueError."""
    positions = np.asarray(action)
    if (
        positions.dtype.kind not in "iu"
        or positions.shape != shape
        or positions.min() < 0
        or positions.max() >= n_images
    ):
        what = "one integer position" if shape == () else f"{shape[0]} integer positions"
        raise ValueError(f"{agent} picks {what} in [0, {n_images}), got {action!r}")
    return positions.astype(np.int64)


def default_game() -> tuple[Game, Any]:
    """(game, tokenizer) of the default experiment (its game and captioning speaker's tokenizer), found in the artifact
    cache -- never trained here: what the cache lacks is one MissingArtifact naming `listener-sub pretrain`."""
    from listener_sub.cache import MissingArtifact
    from listener_sub.loading import default_players

    try:
        players = default_players(build=False)
    except MissingArtifact as error:
        raise MissingArtifact(
            f"{error}: an env with no game= plays the default experiment's models; build them once with "
            "`listener-sub pretrain`, or pass game= and tokenizer="
        ) from None
    return players.game, players.speaker.tokenizer


def env_players(game: Game | None, tokenizer: Any) -> tuple[Game, Any]:
    """The game and the speaker's tokenizer an env plays: both as given, or neither (the default experiment's, from the
    cache); ValueError for one without the other, or a tokenizer without an EOS token."""
    if (game is None) != (tokenizer is None):
        raise ValueError("pass both game= and tokenizer= (the speaker's), or neither for the default experiment's")
    if game is None:
        game, tokenizer = default_game()
    if tokenizer.eos_token_id is None:
        raise ValueError("the speaker's tokenizer needs an eos token")
    return game, tokenizer


class Round:
    """A board, the speaker's token ids, the listeners' picks and the outcome; spaces of every agent.

    Agents: `speaker_0`, then `listener_<i>` for the game's listeners in order. The speaker observes the
    target image {"target": (H, W, 3) uint8} and acts with `max_tokens` token ids of its LM's vocabulary
    (the caption ends at the first EOS; pad after it; `caption_action` makes one from text). Listener i observes
    {"board": (N, H, W, 3) uint8 through its perception, "caption": (max_tokens,) int64 token ids, all pad until
    the speaker has spoken} and acts with the position it picks, 0 to N-1.
    """

    boards: Boards  # (1 board) set by reset
    tokens: np.ndarray  # (max_tokens,) int64 the speaker's action, pad until it has spoken
    caption: str | None  # the decoded caption, None until the speaker has spoken
    picks: dict[str, int]  # listener agent -> picked position
    outcome: Outcome | None  # the game core's verdict once every listener has picked

    def __init__(
        self,
        game: Game | None = None,
        tokenizer: Any = None,
        split: str = "train",
        max_tokens: int = 16,
        data: DataConfig | None = None,
    ) -> None:
        game, tokenizer = env_players(game, tokenizer)
        self.game, self.tokenizer, self.split, self.max_tokens, self.data = game, tokenizer, split, max_tokens, data
        self.listeners = {listener_agent(i): name for i, name in enumerate(game.listeners)}  # agent -> listener name
        self.agents = [SPEAKER, *self.listeners]
        self.pad_id = pad_id(tokenizer)
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

    def reset(self, seed: int | None = None, boards: Boards | None = None) -> None:
        """A new board: `boards` (one board, e.g. another env's) as given, else the next of the board stream; `seed`
        restarts the stream (None: continue it)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        if boards is not None and len(boards) != 1:
            raise ValueError(f"a round plays one board; got {len(boards)}")
        self.boards = boards if boards is not None else self.game.sample(1, self.rng, self.split, self.data)
        self.tokens = np.full(self.max_tokens, self.pad_id, dtype=np.int64)
        self.caption, self.picks, self.outcome = None, {}, None
        self._views: dict[str, np.ndarray] = {}  # listener agent -> its perceived board

    @property
    def phase(self) -> str:
        """`speak` until the speaker has spoken, `pick` until the round is scored, then `done`."""
        if self.caption is None:
            return SPEAK
        return PICK if self.outcome is None else DONE

    def acting(self) -> list[str]:
        """The agents whose actions the round reads now: the speaker, then the listeners yet to pick, then nobody."""
        phase = self.phase
        if phase == SPEAK:
            return [SPEAKER]
        return [agent for agent in self.listeners if agent not in self.picks] if phase == PICK else []

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
        """The speaker's (max_tokens,) integer token ids; anything else (floats, another shape, ids out of the
        vocabulary, a second caption) is a ValueError, never truncated or wrapped."""
        self.check_open()
        if self.caption is not None:
            raise ValueError("the speaker has spoken this round; call reset() for a new board")
        self.tokens = checked_tokens(action, (self.max_tokens,), len(self.tokenizer))
        self.caption = decode_tokens(self.tokenizer, self.tokens[None])[0]

    def pick(self, actions: dict[str, Any]) -> None:
        """Listener agent -> its picked position, one integer in [0, N) each (a float, an array of another shape or a
        bool is a ValueError); every pick is checked before any is recorded, and a listener picks once a round."""
        self.check_open()
        if self.caption is None:
            raise ValueError(f"{', '.join(actions)} pick(s) before the speaker has spoken; the speaker acts first")
        positions = {}
        for agent, action in actions.items():
            if agent not in self.acting():
                raise ValueError(f"{agent} is not a listener yet to pick this round")
            positions[agent] = int(checked_picks(action, (), self.game.n_images, agent))
        self.picks |= positions

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
        """Agent -> reward of the finished round (0 for everyone before it is finished).

        A listener agent's reward is 1 when its pick is the target, else 0. The speaker's is the game's reward
        (`Game.judge`) with the listener agents' picks as the listeners' choices and the game's listener models'
        P(image | caption) as their probabilities, so it follows the agents' picks exactly when the reward reads
        picks: `score=acc` and `dixit` read only picks; `prob` and `logprob` read only the models' P(target), which
        no pick changes. A listener the reward does not name (a control) never moves the speaker's reward.
        """
        if self.outcome is None:
            return dict.fromkeys(self.agents, 0.0)
        mine = self.outcome.listener_rewards
        return {
            SPEAKER: float(self.outcome.reward[0]),
            **{a: float(mine[name][0]) for a, name in self.listeners.items()},
        }

    def infos(self) -> dict[str, dict[str, Any]]:
        """Agent -> info: every agent's `phase` (speak | pick | done) and `acts` (whether the round reads its action
        now, `acting`); the speaker's caption once spoken; each listener's P(image | caption) once scored."""
        phase, acting = self.phase, self.acting()
        infos = {agent: {"phase": phase, "acts": agent in acting} for agent in self.agents}
        if self.caption is not None:
            infos[SPEAKER]["caption"] = self.caption
        if self.outcome is not None:
            for agent, name in self.listeners.items():
                infos[agent]["probs"] = self.outcome.probs[name][0].tolist()
        return infos

    def record(self) -> dict[str, Any]:
        """The finished round as plain JSON: board scene ids, target, caption, each listener's pick and probs,
        rewards; positions count from 0."""
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

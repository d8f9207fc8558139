"""Batched fronts of the game: `listener_sub/DixitSpeaker-v0`, a Gymnasium `VectorEnv` from the speaker's side, and
`BatchedDixitEnv`, every agent at once over a batch of boards in the Parallel style.

Both play whole batches through the game core (`Game.play` / `Game.judge` on num_envs boards at once): no Python
loop over envs in `step`.

DixitSpeaker-v0: one-step episodes. The speaker observes each board's target image ({"target": (H, W, 3) uint8};
with `board=True` also {"board": (N, H, W, 3) uint8}, the images in board order) and acts with `max_tokens` token ids
of its tokenizer (`caption_action`); the game's listeners pick inside the env; the reward is the listener-subtraction
reward of `Game.play`. Every step ends every episode and resets it in the same step (autoreset mode SAME_STEP: no
step is spent on a reset): the observation returned is the next board's, `infos["final_obs"]` the one acted on.
`infos` carries, per env, the caption, the target position and each listener's pick (`pick/<name>`) and
P(image | caption) (`probs/<name>`), each with its `_<key>` mask as Gymnasium's vector infos do.

    import gymnasium, listener_sub.envs
    envs = gymnasium.make_vec("listener_sub/DixitSpeaker-v0", num_envs=64, game=game, tokenizer=tokenizer)
    obs, infos = envs.reset(seed=0)  # obs["target"]: (64, H, W, 3)
    obs, rewards, terminations, truncations, infos = envs.step(actions)  # actions: (64, max_tokens) token ids

BatchedDixitEnv: the agents of `listener_sub/Dixit-v0` (`speaker_0`, `listener_<i>`) with every value an array over
num_envs boards ({agent: array[num_envs, ...]}): a step with the speaker's token ids, then a step with every
listener's picks, for libraries that train listeners too. The speaker's reward then reads the listener agents' picks
as `Game.judge` does in the single-board envs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from listener_sub.data import DataConfig
from listener_sub.envs.round import (
    PICK,
    SPEAK,
    SPEAKER,
    checked_picks,
    checked_tokens,
    env_players,
    listener_agent,
    pad_id,
)
from listener_sub.evaluation import warm_pool
from listener_sub.game import Boards, Game, Outcome, decode_tokens
from listener_sub.images import perceived

SPEAKER_ENV_ID = "listener_sub/DixitSpeaker-v0"


def outcome_infos(outcome: Outcome, boards: Boards, captions: list[str]) -> dict[str, Any]:
    """Gymnasium vector infos of played boards: caption, target, each listener's pick and probabilities, with masks."""
    n = len(captions)
    infos: dict[str, Any] = {"caption": np.array(captions, dtype=object), "target": boards.target.copy()}
    for name in outcome.choices:
        infos[f"pick/{name}"] = outcome.choices[name].cpu().numpy()
        infos[f"probs/{name}"] = outcome.probs[name].float().cpu().numpy()
    return infos | {f"_{key}": np.ones(n, dtype=bool) for key in list(infos)}


class DixitSpeakerVectorEnv(VectorEnv):
    """num_envs one-step episodes of the game from the speaker's side, played as one batch (module docstring).

    game / tokenizer: the game (its listeners pick, its reward pays) and the speaker's tokenizer (neither: the
    default experiment's, from the cache). split: the boards' split (`train`; `test`: held-out). max_tokens: the
    action's token ids. board: also observe the board's images. data: other images (a DataConfig).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        game: Game | None = None,
        tokenizer: Any = None,
        split: str = "train",
        max_tokens: int = 16,
        board: bool = False,
        data: DataConfig | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs}: play at least one board at a time")
        self.game, self.tokenizer = env_players(game, tokenizer)
        self.num_envs, self.split, self.max_tokens, self.board, self.data = num_envs, split, max_tokens, board, data
        image = self.game.pool(split, data).images.shape[1:]  # (H, W, 3)
        observed = {"target": spaces.Box(0, 255, image, np.uint8)}
        if board:
            observed["board"] = spaces.Box(0, 255, (self.game.n_images, *image), np.uint8)
        self.single_observation_space = spaces.Dict(observed)
        self.single_action_space = spaces.MultiDiscrete([len(self.tokenizer)] * max_tokens)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.rng = np.random.default_rng()
        self.generator = torch.Generator()  # a listener's sampled pick (game.choice=sample)
        self.boards: Boards | None = None
        warm_pool(self.game, split, data)  # every listener's features of the pool, once: no step pays for them

    def _observe(self) -> dict[str, np.ndarray]:
        observation = {"target": self.boards.target_images}  # (num_envs, H, W, 3)
        if self.board:
            observation["board"] = self.boards.images  # (num_envs, N, H, W, 3)
        return observation

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
        """New boards for every env; `seed` restarts the board stream (None: continue it)."""
        super().reset(seed=seed)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self.generator.manual_seed(seed)
        self.boards = self.game.sample(self.num_envs, self.rng, self.split, self.data)
        return self._observe(), {}

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict]:
        """Every env's caption (num_envs, max_tokens) token ids played on its board; each episode ends and the next
        board is observed (SAME_STEP autoreset). Actions outside the action space are a ValueError."""
        if self.boards is None:
            raise ValueError("no boards yet; call reset() first")
        tokens = checked_tokens(actions, (self.num_envs, self.max_tokens), len(self.tokenizer))
        captions = decode_tokens(self.tokenizer, tokens)
        outcome = self.game.play(captions, self.boards, self.generator)
        infos = outcome_infos(outcome, self.boards, captions)
        infos |= {"final_obs": self._observe(), "_final_obs": np.ones(self.num_envs, dtype=bool)}
        rewards = outcome.reward.float().cpu().numpy()  # (num_envs,)
        self.boards = self.game.sample(self.num_envs, self.rng, self.split, self.data)
        done = np.ones(self.num_envs, dtype=bool)
        return self._observe(), rewards, done, np.zeros(self.num_envs, dtype=bool), infos


class BatchedDixitEnv:
    """Every agent of the game over num_envs boards, Parallel-style with arrays ({agent: array[num_envs, ...]}):
    reset, a step with {"speaker_0": (num_envs, max_tokens) token ids}, then a step with {"listener_<i>":
    (num_envs,) positions} for every listener; the episode (a round on every board) then ends: reset for new boards.

    Observations: speaker_0 {"target": (num_envs, H, W, 3)}; listener_<i> {"board": (num_envs, N, H, W, 3) through
    its perception, "caption": (num_envs, max_tokens) token ids, pad until the speaker has spoken}. Rewards after the
    second step: each listener agent 1 for picking the target, the speaker the game's reward with those picks.
    """

    def __init__(
        self,
        num_envs: int = 1,
        game: Game | None = None,
        tokenizer: Any = None,
        split: str = "train",
        max_tokens: int = 16,
        data: DataConfig | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs}: play at least one board at a time")
        self.game, self.tokenizer = env_players(game, tokenizer)
        self.num_envs, self.split, self.max_tokens, self.data = num_envs, split, max_tokens, data
        self.listeners = {listener_agent(i): name for i, name in enumerate(self.game.listeners)}
        self.possible_agents = [SPEAKER, *self.listeners]
        self.agents: list[str] = []
        self.pad_id = pad_id(self.tokenizer)
        self.rng = np.random.default_rng()
        self.phase = SPEAK

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.boards = self.game.sample(self.num_envs, self.rng, self.split, self.data)
        self.tokens = np.full((self.num_envs, self.max_tokens), self.pad_id, dtype=np.int64)
        self.views = {
            agent: perceived(self.game.listeners[name].perception, self.boards.images)
            for agent, name in self.listeners.items()
        }  # agent -> (num_envs, N, H, W, 3)
        self.agents, self.phase = list(self.possible_agents), SPEAK
        return self._observe(), self._infos()

    def _observe(self) -> dict[str, dict[str, np.ndarray]]:
        observations = {SPEAKER: {"target": self.boards.target_images}}
        for agent in self.listeners:
            observations[agent] = {"board": self.views[agent], "caption": self.tokens.copy()}
        return observations

    def _infos(self) -> dict[str, dict[str, Any]]:
        acting = {SPEAK: [SPEAKER], PICK: list(self.listeners)}.get(self.phase, [])
        return {agent: {"phase": self.phase, "acts": agent in acting} for agent in self.possible_agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise ValueError("no episode is running (it has ended, or reset() was not called); call reset()")
        zeros = np.zeros(self.num_envs, dtype=np.float32)
        if self.phase == SPEAK:
            if SPEAKER not in actions:
                raise ValueError(f"this phase needs the action of {SPEAKER}")
            self.tokens = checked_tokens(actions[SPEAKER], (self.num_envs, self.max_tokens), len(self.tokenizer))
            self.captions = decode_tokens(self.tokenizer, self.tokens)
            self.phase = PICK
            rewards = dict.fromkeys(self.agents, zeros)
            done = False
            infos = self._infos()
        else:
            missing = [agent for agent in self.listeners if agent not in actions]
            if missing:
                raise ValueError(f"this phase needs actions of {missing}")
            picks = {
                self.listeners[a]: torch.as_tensor(checked_picks(actions[a], (self.num_envs,), self.game.n_images, a))
                for a in self.listeners
            }  # listener name -> (num_envs,)
            outcome = self.game.judge(self.game.listen(self.captions, self.boards), picks, self.boards)
            mine = outcome.listener_rewards
            rewards = {SPEAKER: outcome.reward.float().cpu().numpy()}
            rewards |= {agent: mine[name].cpu().numpy() for agent, name in self.listeners.items()}
            self.phase, done = "done", True
            infos = self._infos()
            infos[SPEAKER] |= outcome_infos(outcome, self.boards, self.captions)
        observations = self._observe()
        flags = np.full(self.num_envs, done)
        terminations = {agent: flags for agent in self.agents}
        truncations = {agent: np.zeros(self.num_envs, dtype=bool) for agent in self.agents}
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

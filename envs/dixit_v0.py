"""`listener_sub/Dixit-v0`: the listener-subtraction reference game as PettingZoo AEC and Parallel envs.

One episode is one board: the speaker speaks, then every listener picks (AEC: in turn; Parallel: the
speaker's phase, then the listeners' phase), then every agent gets its reward and the episode ends.
The speaker's reward is the configured listener-subtraction reward; a listener's is 1 for picking the target.

    env = dixit_v0.env(game=game, tokenizer=speaker.tokenizer, split="test", render_mode="ansi")

Boards come from the split of the game's data, or of `data` (a DataConfig: other images, e.g. a folder).

An env plays the game it is given; it never composes configs or trains models. The embedded default
experiment's game and speaker come from `listener_sub.envs.defaults.load_default_players()`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import AgentSelector, wrappers

from listener_sub.data import DataConfig
from listener_sub.envs.render import frame, transcript
from listener_sub.envs.round import SPEAKER, Round
from listener_sub.game import Game

ENV_ID = "listener_sub/Dixit-v0"
METADATA = {"name": "dixit_v0", "id": ENV_ID, "render_modes": ["ansi", "rgb_array", "human"], "is_parallelizable": True}


def _render(round_: Round, mode: str | None) -> str | np.ndarray | None:
    if mode is None:
        return None
    if mode == "rgb_array":
        return frame(round_)
    text = transcript(round_)
    if mode == "human":
        print(text + "\n")
        return None
    return text


class raw_env(AECEnv):
    """AEC env: speaker_0 acts, then listener_0, listener_1, ... in turn; one board per episode."""

    metadata = METADATA

    def __init__(
        self,
        game: Game,
        tokenizer: Any,
        split: str = "train",
        max_tokens: int = 16,
        render_mode: str | None = None,
        data: DataConfig | None = None,
    ) -> None:
        super().__init__()
        if render_mode not in (None, *METADATA["render_modes"]):
            raise ValueError(
                f"unknown render_mode {render_mode!r}; choose one of: {', '.join(METADATA['render_modes'])}"
            )
        self.round = Round(game, tokenizer, split, max_tokens, data)
        self.render_mode = render_mode
        self.possible_agents = list(self.round.agents)

    def observation_space(self, agent: str) -> spaces.Space:
        return self.round.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.round.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.round.reset(seed)
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = self.round.infos()
        self._selector = AgentSelector(self.agents)
        self.agent_selection = self._selector.next()

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        return self.round.observe(agent)

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        if agent == SPEAKER:
            self.round.speak(action)
        else:
            self.round.pick(agent, action)
        if self._selector.is_last():
            self.round.finish()
            self.terminations = dict.fromkeys(self.agents, True)
        self.rewards = self.round.rewards()
        self.infos = self.round.infos()
        self.agent_selection = self._selector.next()
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()

    def render(self) -> str | np.ndarray | None:
        return _render(self.round, self.render_mode)

    def close(self) -> None:
        pass


class parallel_raw_env(ParallelEnv):
    """Parallel env in two phases: a step with the speaker's action, then a step with every listener's pick.

    Every agent is live in both phases; actions of agents whose phase it is not are ignored.
    """

    metadata = METADATA

    def __init__(
        self,
        game: Game,
        tokenizer: Any,
        split: str = "train",
        max_tokens: int = 16,
        render_mode: str | None = None,
        data: DataConfig | None = None,
    ) -> None:
        if render_mode not in (None, *METADATA["render_modes"]):
            raise ValueError(
                f"unknown render_mode {render_mode!r}; choose one of: {', '.join(METADATA['render_modes'])}"
            )
        self.round = Round(game, tokenizer, split, max_tokens, data)
        self.render_mode = render_mode
        self.possible_agents = list(self.round.agents)
        self.agents: list[str] = []

    def observation_space(self, agent: str) -> spaces.Space:
        return self.round.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.round.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.round.reset(seed)
        self.agents = list(self.possible_agents)
        return {a: self.round.observe(a) for a in self.agents}, self.round.infos()

    @property
    def acting_agents(self) -> list[str]:
        """The agents whose actions this phase reads: the speaker, then every listener."""
        return [SPEAKER] if self.round.caption is None else list(self.round.listeners)

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise ValueError(
                "no episode is running (it has ended, or reset() was not called); call reset() for a new board"
            )
        missing = [agent for agent in self.acting_agents if agent not in actions]
        if missing:
            raise ValueError(f"this phase needs actions of {missing}")
        if self.round.caption is None:
            self.round.speak(actions[SPEAKER])
        else:
            for agent in self.acting_agents:
                self.round.pick(agent, actions[agent])
            self.round.finish()
        done = self.round.outcome is not None
        live = self.agents
        observations = {a: self.round.observe(a) for a in live}
        rewards, infos = self.round.rewards(), self.round.infos()
        terminations, truncations = dict.fromkeys(live, done), dict.fromkeys(live, False)
        if done:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos

    def render(self) -> str | np.ndarray | None:
        return _render(self.round, self.render_mode)

    def close(self) -> None:
        pass


def env(**kwargs: Any) -> AECEnv:
    """The AEC env with PettingZoo's usual wrappers (out-of-bounds actions assert, call order enforced)."""
    return wrappers.OrderEnforcingWrapper(wrappers.AssertOutOfBoundsWrapper(raw_env(**kwargs)))


def parallel_env(**kwargs: Any) -> ParallelEnv:
    """The Parallel env (two phases: speaker, then listeners)."""
    return parallel_raw_env(**kwargs)

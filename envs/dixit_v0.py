"""`listener_sub/Dixit-v0`: the listener-subtraction reference game as PettingZoo AEC and Parallel envs.

One episode is one board. Agents: `speaker_0`, then `listener_<i>` for the game's listeners in order.

Phases (`infos[agent]["phase"]`: speak | pick | done, and `infos[agent]["acts"]`: whether the env reads this
agent's action now):

- speak: the speaker acts with `max_tokens` token ids (`caption_action(tokenizer, text, max_tokens)` makes them
  from a caption: ids, EOS, pad); the listeners observe all-pad captions.
- pick: every listener acts with the board position it picks, 0 to N-1.
- done: the round is scored; every agent has its reward and the episode ends.

`reset(seed, options={"boards": boards})` plays the given board (one `Boards` row, e.g. another env's) instead of the
next one drawn.

AEC: the speaker steps, then listener_0, listener_1, ... in turn. Parallel: two steps, the speaker's phase, then the
listeners' phase; each step reads exactly the actions of the agents whose info says `acts` (the speaker in the
first step, every listener in the second) and never reads the others' (PettingZoo sends an action for every live
agent each step; an off-phase action is not even checked).

Rewards: a listener agent gets 1 when its pick is the target, else 0. The speaker gets the game's reward
(`Game.judge`) with the listener agents' picks as the listeners' choices and the game's listener models'
P(image | caption) as their probabilities. So with `reward.score=acc` or `dixit` the speaker's reward follows the
agents' picks (and only them); with `prob` or `logprob` it is the models' P(target) of the caption, the same
whatever the agents pick (their picks then change only their own rewards). A listener the reward does not name
(a control) never moves the speaker's reward.

    env = dixit_v0.env(game=game, tokenizer=speaker.tokenizer, render_mode="ansi")
    env.reset(seed=0)
    env.step(caption_action(speaker.tokenizer, "a red circle .", 16))  # speaker_0 speaks
    while not all(env.terminations.values()):
        env.step(0)  # listener_0, listener_1, ... each pick position 0

Boards come from the `split` of the game's data, or of `data` (a DataConfig: other images, e.g. a folder).
The default split is `train`, the boards agents learn on (the trainer's `trainer.split`); evaluate on held-out
boards with `split="test"`, the split `listener-sub rollout` plays by default.

An env plays the game it is given. Without game= and tokenizer= it plays the default experiment's game with its
captioning speaker's tokenizer, read from the artifact cache (`listener_sub.default_players(build=False)`); it never
trains a model -- a cache without them is one error naming `listener-sub pretrain`:

    from listener_sub.envs import dixit_v0
    env = dixit_v0.env()  # PettingZoo's first line
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import AgentSelector, wrappers

from listener_sub.envs.render import frame, transcript
from listener_sub.envs.round import SPEAK, SPEAKER, Round

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


class _DixitEnv:
    """What both fronts share: the round, the render mode, every agent's spaces, rendering.

    render_mode: ansi | rgb_array | human | None. round_settings: `Round`'s -- game= and tokenizer= (the speaker's;
    neither: the default experiment's, from the cache), split= (default `train`; `test` for held-out boards),
    max_tokens= (16), data= (a DataConfig: other images).
    """

    metadata = METADATA

    def __init__(self, render_mode: str | None = None, **round_settings: Any) -> None:
        super().__init__()
        if render_mode not in (None, *METADATA["render_modes"]):
            raise ValueError(
                f"unknown render_mode {render_mode!r}; choose one of: {', '.join(METADATA['render_modes'])}"
            )
        self.round = Round(**round_settings)
        self.render_mode = render_mode
        self.possible_agents = list(self.round.agents)
        self.agents: list[str] = []  # live agents: every agent from reset() until the episode ends

    def observation_space(self, agent: str) -> spaces.Space:
        return self.round.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.round.action_spaces[agent]

    def render(self) -> str | np.ndarray | None:
        return _render(self.round, self.render_mode)

    def close(self) -> None:
        pass


class raw_env(_DixitEnv, AECEnv):
    """AEC env: speaker_0 acts, then listener_0, listener_1, ... in turn; one board per episode.

    split: the game's split the boards come from (default `train`; `test` for held-out boards).
    """

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.round.reset(seed, (options or {}).get("boards"))
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
            self.round.pick({agent: action})
        if self._selector.is_last():
            self.round.finish()
            self.terminations = dict.fromkeys(self.agents, True)
        self.rewards = self.round.rewards()
        self.infos = self.round.infos()
        self.agent_selection = self._selector.next()
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()


class parallel_raw_env(_DixitEnv, ParallelEnv):
    """Parallel env in two phases: a step with the speaker's action, then a step with every listener's pick.

    Every agent is live in both phases. A step reads the actions of `acting_agents` (the agents whose
    `infos[agent]["acts"]` is True: the speaker, then every listener) and never reads the others' actions.
    split: the game's split the boards come from (default `train`; `test` for held-out boards).
    """

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.round.reset(seed, (options or {}).get("boards"))
        self.agents = list(self.possible_agents)
        return {a: self.round.observe(a) for a in self.agents}, self.round.infos()

    @property
    def acting_agents(self) -> list[str]:
        """The agents whose actions this phase reads: the speaker, then every listener, then (done) nobody."""
        return self.round.acting()

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise ValueError(
                "no episode is running (it has ended, or reset() was not called); call reset() for a new board"
            )
        missing = [agent for agent in self.acting_agents if agent not in actions]
        if missing:
            raise ValueError(f"this phase needs actions of {missing}")
        if self.round.phase == SPEAK:
            self.round.speak(actions[SPEAKER])
        else:
            self.round.pick({agent: actions[agent] for agent in self.acting_agents})
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


def env(**kwargs: Any) -> AECEnv:
    """The AEC env with PettingZoo's usual wrappers (out-of-bounds actions assert, call order enforced)."""
    return wrappers.OrderEnforcingWrapper(wrappers.AssertOutOfBoundsWrapper(raw_env(**kwargs)))


def parallel_env(**kwargs: Any) -> ParallelEnv:
    """The Parallel env (two phases: speaker, then listeners)."""
    return parallel_raw_env(**kwargs)

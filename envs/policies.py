"""Policies that play the env with the real models: a Speaker for speaker_0, the pretrained listeners for listener_i."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pettingzoo import ParallelEnv

from listener_sub.envs.round import SPEAKER, Round
from listener_sub.game import choose, decode_tokens
from listener_sub.models.listener import Listener
from listener_sub.models.speaker import Speaker
from listener_sub.perception import make_perception


class SpeakerPolicy:
    """speaker_0: the Speaker's caption of the target image, as `max_tokens` token ids (EOS, then pad)."""

    def __init__(self, speaker: Speaker, max_tokens: int = 16, greedy: bool = True, temperature: float = 1.0, generator: torch.Generator | None = None) -> None:
        self.speaker, self.max_tokens, self.greedy, self.temperature, self.generator = speaker, max_tokens, greedy, temperature, generator

    def __call__(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        out = self.speaker.generate(
            observation["target"][None], max_new_tokens=self.max_tokens, greedy=self.greedy, temperature=self.temperature, generator=self.generator
        )
        tokens = np.full(self.max_tokens, self.speaker.pad_id, dtype=np.int64)  # (L,)
        tokens[: out.tokens.shape[1]] = out.tokens[0].cpu().numpy()
        return tokens


class ListenerPolicy:
    """listener_i: a pretrained listener's pick on the board it observes.

    The observed board is already seen through the listener's perception, so the policy's CLIP looks at it
    as it is (perception `full`) instead of perceiving it twice.
    """

    def __init__(self, listener: Listener, tokenizer: Any, choice: str = "argmax", generator: torch.Generator | None = None) -> None:
        self.model = Listener(listener.name, listener.clip, listener.tokenizer, make_perception("full"), listener.model_name).to(listener.device)
        self.tokenizer, self.choice, self.generator = tokenizer, choice, generator

    def probs(self, observation: dict[str, np.ndarray]) -> torch.Tensor:
        """(N,) P(image | caption) over the observed board."""
        caption = decode_tokens(self.tokenizer, observation["caption"][None])
        return self.model.choose(caption, observation["board"][None])[0]

    def __call__(self, observation: dict[str, np.ndarray]) -> int:
        return int(choose(self.probs(observation), self.choice, self.generator))


def model_policies(round_: Round, speaker: Speaker, greedy: bool = True, temperature: float = 1.0, generator: torch.Generator | None = None) -> dict[str, Any]:
    """Agent -> policy for every agent of an env's round: the speaker and each of the game's listeners."""
    game = round_.game
    policies: dict[str, Any] = {SPEAKER: SpeakerPolicy(speaker, round_.max_tokens, greedy, temperature, generator)}
    for agent, name in round_.listeners.items():
        policies[agent] = ListenerPolicy(game.listeners[name], round_.tokenizer, game.choice, generator)
    return policies


def play_episode(env: Any, policies: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """One episode of an AEC or Parallel Dixit env with the policies; returns the round's record (`Round.record`)."""
    if isinstance(env, ParallelEnv):
        observations, _ = env.reset(seed=seed)
        while env.agents:
            observations, *_ = env.step({agent: policies[agent](observations[agent]) for agent in env.acting_agents})
    else:
        env.reset(seed=seed)
        for agent in env.agent_iter():
            observation, _, termination, truncation, _ = env.last()
            env.step(None if termination or truncation else policies[agent](observation))
    return env.unwrapped.round.record()

"""Policies that play the env with the real models: a Speaker for speaker_0, the pretrained listeners for listener_i."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pettingzoo import ParallelEnv

from listener_sub.envs.round import SPEAKER, Round
from listener_sub.game import choose, decode_tokens
from listener_sub.models.speaker import Speaker


class SpeakerPolicy:
    """speaker_0: the Speaker's caption of the target image, as `max_tokens` token ids (EOS, then pad)."""

    def __init__(
        self,
        speaker: Speaker,
        max_tokens: int = 16,
        greedy: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.speaker, self.max_tokens, self.greedy, self.temperature, self.generator = (
            speaker,
            max_tokens,
            greedy,
            temperature,
            generator,
        )

    def __call__(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        out = self.speaker.generate(
            observation["target"][None],
            max_new_tokens=self.max_tokens,
            greedy=self.greedy,
            temperature=self.temperature,
            generator=self.generator,
        )
        tokens = np.full(self.max_tokens, self.speaker.pad_id, dtype=np.int64)  # (L,)
        tokens[: out.tokens.shape[1]] = out.tokens[0].cpu().numpy()
        return tokens


class ListenerPolicy:
    """listener_i: the game's listener picks on the round's board, scoring the observed caption through the game core.

    The listener sees the board through its own perception in the game core (the observation's uint8 board is the
    picture of that view for other agents), so the env's picks are the trainer's picks.
    """

    def __init__(
        self, round_: Round, agent: str, choice: str = "argmax", generator: torch.Generator | None = None
    ) -> None:
        self.round, self.name, self.choice, self.generator = round_, round_.listeners[agent], choice, generator

    def probs(self, observation: dict[str, np.ndarray]) -> torch.Tensor:
        """(N,) P(image | caption) over the round's board."""
        caption = decode_tokens(self.round.tokenizer, observation["caption"][None])[0]
        return self.round.listen(caption)[self.name][0]

    def __call__(self, observation: dict[str, np.ndarray]) -> int:
        return int(choose(self.probs(observation), self.choice, self.generator))


def model_policies(
    round_: Round,
    speaker: Speaker,
    greedy: bool = True,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Agent -> policy for every agent of an env's round: the speaker and each of the game's listeners."""
    policies: dict[str, Any] = {SPEAKER: SpeakerPolicy(speaker, round_.max_tokens, greedy, temperature, generator)}
    for agent in round_.listeners:
        policies[agent] = ListenerPolicy(round_, agent, round_.game.choice, generator)
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

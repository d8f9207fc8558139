"""`listener-sub rollout episodes=N [speaker.checkpoint=PATH] [render=rgb_array]`: episodes played by the real models.

speaker.checkpoint: an adapter file, or a train run / checkpoint of one -- then the episodes are played in that
run's own game (its saved config, this command's overrides on top) by its trained speaker.
Writes rollouts.jsonl (one object per episode), rollout_summary.json (mean reward, accuracies, gap,
episodes/s, the oracle gaps) and, with render=rgb_array, frames/episode_NNNN.png.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from PIL import Image

from listener_sub.assembly import Assembly
from listener_sub.cache import ArtifactCache
from listener_sub.cli import hydra_command
from listener_sub.commands.common import adapter_file, check_adapter, eval_config, from_run, run_of, run_spec
from listener_sub.data import DataSource
from listener_sub.envs import dixit_v0
from listener_sub.envs.policies import model_policies, play_episode
from listener_sub.errors import UserError
from listener_sub.evaluation import held_out_boards
from listener_sub.files import write_json
from listener_sub.oracle import has_oracle, oracle_gaps
from listener_sub.rewards import Reward

RENDER_MODES = (None, "ansi", "rgb_array")
OWN_KEYS = (
    "command",
    "speaker.checkpoint",
    "episodes",
    "split",
    "env",
    "render",
    "max_tokens",
    "greedy",
    "temperature",
    "oracle",
    "threads",
    "debug",
)
ENVS = {"aec": dixit_v0.env, "parallel": dixit_v0.parallel_env}


def transcript_line(record: dict[str, Any]) -> str:
    """One line per episode: target, caption, each listener's pick and target probability, the speaker's reward."""
    target = record["target"]
    picks = " | ".join(
        f"{v['name']}->{v['choice']} p={v['probs'][target]:.2f} {'right' if v['correct'] else 'wrong'}"
        for v in record["listeners"].values()
    )
    return f"ep {record['episode']:>3} target {target} {record['caption']!r:<40} {picks} | reward {record['rewards']['speaker_0']:+.3f}"


def summarize(records: list[dict[str, Any]], listeners: dict[str, str], reward: Reward) -> dict[str, float]:
    """Mean speaker reward, each listener's accuracy and the gap over the episodes; listeners: agent -> name."""
    correct = {
        name: torch.tensor([r["listeners"][agent]["correct"] for r in records]) for agent, name in listeners.items()
    }
    summary = {"reward": float(np.mean([r["rewards"]["speaker_0"] for r in records]))}
    summary |= {f"acc/{name}": float(c.double().mean()) for name, c in correct.items()}
    summary["gap"] = float(reward.gap(correct).double().mean())
    return summary


def check(cfg: DictConfig) -> None:
    """Raise UserError on settings that cannot work, before any model is loaded."""
    if cfg.render not in RENDER_MODES:
        raise UserError(f"unknown render={cfg.render}; choose one of: null, ansi, rgb_array")
    if cfg.env not in ENVS:
        raise UserError(f"unknown env={cfg.env}; choose one of: {', '.join(ENVS)}")
    if cfg.episodes < 1:
        raise UserError(f"episodes={cfg.episodes}; play at least one (episodes=10)")


@hydra_command("rollout")
def main(cfg: DictConfig) -> None:
    """Play cfg.episodes episodes with the speaker and the game's listeners; log transcripts and oracle gaps."""
    check(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    trained = None
    if cfg.speaker.checkpoint and run_of(cfg.speaker.checkpoint) is not None:  # a train run's speaker, in its own game
        trained = adapter_file(cfg.speaker.checkpoint, "speaker.checkpoint")
        cfg = from_run(cfg, run_of(trained), OWN_KEYS)
    eval_cfg = eval_config(cfg)
    spec = run_spec(
        cfg, [] if eval_cfg.data else [cfg.split]
    )  # episodes play the evaluation data when it is set, else the game's
    if trained is not None:
        check_adapter(trained, spec, "speaker.checkpoint")
    if eval_cfg.data:
        DataSource(eval_cfg.data, spec.world).check_split(cfg.split)
    models = Assembly(spec, ArtifactCache(cfg.get("cache_dir")))
    models.load_data([(eval_cfg.data, cfg.split), (eval_cfg.data, eval_cfg.split)])
    models.build_clips()
    game = models.game()
    speaker = models.speaker(trained)
    env = ENVS[cfg.env](
        game=game,
        tokenizer=speaker.tokenizer,
        split=cfg.split,
        max_tokens=cfg.max_tokens,
        render_mode=cfg.render,
        data=eval_cfg.data,
    )
    generator = torch.Generator(device=speaker.device).manual_seed(cfg.seed)
    policies = model_policies(env.unwrapped.round, speaker, cfg.greedy, cfg.temperature, generator)
    frames = run_dir / "frames"
    if cfg.render == "rgb_array":
        frames.mkdir(parents=True, exist_ok=True)
    records, play_s = [], 0.0
    with open(run_dir / "rollouts.jsonl", "w") as out:
        for episode in range(cfg.episodes):
            start = time.perf_counter()
            record = {"episode": episode, "seed": cfg.seed + episode, **play_episode(env, policies, cfg.seed + episode)}
            play_s += time.perf_counter() - start
            out.write(json.dumps(record) + "\n")
            records.append(record)
            print(transcript_line(record))
            if cfg.render == "rgb_array":
                Image.fromarray(env.render()).save(frames / f"episode_{episode:04d}.png")
            elif cfg.render == "ansi":
                print(env.render() + "\n")
    played = summarize(records, env.unwrapped.round.listeners, game.reward)
    summary: dict[str, Any] = {"episodes": cfg.episodes, "episodes_per_s": cfg.episodes / play_s, **played}
    print(
        f"{cfg.episodes} episodes, {summary['episodes_per_s']:.1f} episodes/s: "
        + ", ".join(f"{k} {v:.3f}" for k, v in played.items())
    )
    boards = held_out_boards(game, eval_cfg) if cfg.oracle else None
    if boards is not None and has_oracle(boards):
        summary |= oracle_gaps(game, boards, torch.Generator(device="cpu").manual_seed(eval_cfg.seed))
        print(
            f"oracle on {eval_cfg.boards} {eval_cfg.split} boards (seed {eval_cfg.seed}): fixed_oracle_gap "
            f"{summary['fixed_oracle_gap']:.3f} ({'+'.join(summary['fixed_oracle_subset'])}), oracle_gap {summary['oracle_gap']:.3f}"
        )
    write_json(run_dir / "rollout_summary.json", summary)
    print(f"wrote {run_dir / 'rollouts.jsonl'} and rollout_summary.json")

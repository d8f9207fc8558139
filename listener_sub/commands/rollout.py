"""`listener-sub rollout episodes=N [run=RUN] [checkpoint=PATH|captioner] [render=rgb_array]`: PettingZoo episodes
played by the real models.

The game, the speaker and the data are named as for `listener-sub eval`: run= (a train run's game), checkpoint= (the
trained adapter that speaks; unset, the run's latest, or the captioning adapter without a run), data= (the images the
boards come from). Writes rollouts.jsonl (one object per episode), rollout_summary.json (mean reward, accuracies, gap,
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

from listener_sub.cli import hydra_command
from listener_sub.commands.common import eval_config, run_spec
from listener_sub.data import DataSource
from listener_sub.envs import dixit_v0
from listener_sub.envs.policies import model_policies, play_episode
from listener_sub.envs.render import pick_words
from listener_sub.errors import UserError
from listener_sub.evaluation import held_out_boards
from listener_sub.files import write_json
from listener_sub.loading import game_and_speaker, game_config, players
from listener_sub.oracle import has_oracle, oracle_gaps
from listener_sub.report.tables import show
from listener_sub.rewards import Reward

RENDER_MODES = (None, "ansi", "rgb_array")
OWN_KEYS = (
    "command",
    "run",
    "checkpoint",
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
    """One line per episode: target position, caption, each listener's pick (`pick_words`: position from 0, right /
    wrong, P(target)), the speaker's reward.

        transcript_line(record)  # "ep   4 target 2 'a red circle .' | full picks 2 right p(target)=0.81 | ..."
    """
    target = record["target"]
    picks = " | ".join(
        f"{v['name']} picks {pick_words(v['choice'], v['correct'], v['probs'][target])}"
        for v in record["listeners"].values()
    )
    reward = record["rewards"]["speaker_0"]
    return f"ep {record['episode']:>3} target {target} {record['caption']!r:<40} | {picks} | reward {reward:+.3f}"


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
    run, trained = game_and_speaker(cfg.run, cfg.checkpoint)
    cfg = game_config(cfg, OWN_KEYS, run)
    eval_cfg = eval_config(cfg)
    spec = run_spec(
        cfg, [] if eval_cfg.data else [cfg.split]
    )  # episodes play the evaluation data when it is set, else the game's
    if eval_cfg.data:
        DataSource(eval_cfg.data, spec.world).check_split(cfg.split)
    boards = [(eval_cfg.data, cfg.split), (eval_cfg.data, eval_cfg.split)]
    played = players(cfg, spec, boards, trained)
    game, speaker = played.game, played.speaker
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
            show(transcript_line(record))
            if cfg.render == "rgb_array":
                Image.fromarray(env.render()).save(frames / f"episode_{episode:04d}.png")
            elif cfg.render == "ansi":
                show(env.render() + "\n")
    played = summarize(records, env.unwrapped.round.listeners, game.reward)
    summary: dict[str, Any] = {"episodes": cfg.episodes, "episodes_per_s": cfg.episodes / play_s, **played}
    summary |= {"speaker": str(trained or "captioner"), "run": str(run) if run else None}
    show(
        f"speaker: {trained or 'the captioning adapter'} in {f'the game of {run}' if run else 'the composed game'}",
        f"{cfg.episodes} episodes, {summary['episodes_per_s']:.1f} episodes/s: "
        + ", ".join(f"{k} {v:.3f}" for k, v in played.items()),
    )
    boards = held_out_boards(game, eval_cfg) if cfg.oracle else None
    if boards is not None and has_oracle(boards):
        summary |= oracle_gaps(game, boards, torch.Generator(device="cpu").manual_seed(eval_cfg.seed))
        show(
            f"oracle on {eval_cfg.boards} {eval_cfg.split} boards (seed {eval_cfg.seed}): fixed_oracle_gap "
            f"{summary['fixed_oracle_gap']:.3f} ({'+'.join(summary['fixed_oracle_subset'])}), "
            f"oracle_gap {summary['oracle_gap']:.3f}"
        )
    write_json(run_dir / "rollout_summary.json", summary)
    show(f"wrote {run_dir / 'rollouts.jsonl'} and rollout_summary.json")

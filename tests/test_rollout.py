"""`listener-sub rollout`: episodes played by (tiny, locally trained) models, written as JSONL, frames and a summary."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import test_pretrain
from hydra import compose, initialize_config_module
from PIL import Image

from listener_sub.commands.common import run_spec
from listener_sub.commands.rollout import check, transcript_line
from listener_sub.envs.render import TARGET_COLOR
from listener_sub.errors import UserError
from listener_sub.rewards import MISLED_COST

TINY = [*test_pretrain.TINY, "game.pool_size=64"]  # tiny locally trained models, a small pool


def rollout(run_dir, *overrides) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "listener_sub", "rollout", f"hydra.run.dir={run_dir}", *TINY, *overrides]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rollout_writes_transcripts_frames_and_summary(tmp_path, warm_cache):
    result = rollout(tmp_path, "episodes=5", "render=rgb_array")  # oracle on evaluation.boards=16
    assert result.returncode == 0, result.stderr
    records = read_jsonl(tmp_path / "rollouts.jsonl")
    assert [r["episode"] for r in records] == list(range(5)) and [r["seed"] for r in records] == list(range(5))
    for r in records:
        assert (
            r["split"] == "test"
            and len(set(r["board"])) == 4
            and 0 <= r["target"] < 4
            and isinstance(r["caption"], str)
        )
        assert len(r["tokens"]) == 16
        assert set(r["rewards"]) == {"speaker_0", "listener_0", "listener_1"}
        listeners = r["listeners"]
        assert [v["name"] for v in listeners.values()] == ["full", "gray"]  # the colour-blind experiment's reward
        for agent, v in listeners.items():
            assert sum(v["probs"]) == pytest.approx(1.0, abs=1e-4) and v["correct"] == (v["choice"] == r["target"])
            assert r["rewards"][agent] == float(v["correct"])
        full, gray = listeners["listener_0"]["probs"][r["target"]], listeners["listener_1"]["probs"][r["target"]]
        chance = 1 / len(r["board"])  # score=prob, lam=1, each listener read against chance
        read = full - MISLED_COST * max(chance - full, 0) - max(gray - chance, 0)
        assert r["rewards"]["speaker_0"] == pytest.approx(read, abs=1e-5)
    last = records[4]
    assert f"ep   4 target {last['target']}" in result.stdout
    for v in last["listeners"].values():  # positions from 0, as in rollouts.jsonl; P(target)
        verdict = "right" if v["correct"] else "wrong"
        assert f"{v['name']} picks {v['choice']} {verdict} p(target)={v['probs'][last['target']]:.2f}" in result.stdout

    frames = sorted((tmp_path / "frames").glob("*.png"))
    assert [f.name for f in frames] == [f"episode_{i:04d}.png" for i in range(5)]
    picture = np.asarray(Image.open(frames[0]).convert("RGB")).astype(int)
    assert (np.abs(picture - TARGET_COLOR).sum(-1) == 0).sum() > 4 * 3 * 64 * 3  # the target's frame

    summary = json.loads((tmp_path / "rollout_summary.json").read_text())
    assert summary["episodes"] == 5 and summary["episodes_per_s"] > 0
    assert summary["acc/full"] == pytest.approx(np.mean([r["listeners"]["listener_0"]["correct"] for r in records]))
    assert len(summary["subset_gap"]) == 31 and summary["fixed_oracle_gap"] == max(summary["subset_gap"].values())
    assert summary["subset_gap"]["+".join(summary["fixed_oracle_subset"])] == summary["fixed_oracle_gap"]
    assert -1 <= summary["oracle_gap"] <= 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("render=video", "unknown render=video; choose one of: null, ansi, rgb_array"),
        ("env=vec", "unknown env=vec"),
        ("episodes=0", "episodes=0"),
        ("split=dev", "the embedded world has no split 'dev'"),
    ],
)
def test_bad_settings_are_user_errors(override, message):
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose("rollout", overrides=[override])
    with pytest.raises(UserError, match=re.escape(message)):
        check(cfg)
        run_spec(cfg, [cfg.split])


def test_transcript_line_counts_positions_from_0_and_reports_p_target():
    record = {
        "episode": 4,
        "target": 2,
        "caption": "a red circle .",
        "listeners": {
            "listener_0": {"name": "full", "choice": 2, "correct": True, "probs": [0.05, 0.1, 0.81, 0.04]},
            "listener_1": {"name": "gray", "choice": 1, "correct": False, "probs": [0.1, 0.7, 0.2, 0.0]},
        },
        "rewards": {"speaker_0": 0.61, "listener_0": 1.0, "listener_1": 0.0},
    }
    line = transcript_line(record)
    assert line.startswith("ep   4 target 2 'a red circle .'")
    assert "| full picks 2 right p(target)=0.81 | gray picks 1 wrong p(target)=0.20 | reward +0.610" in line
    assert "0.70" not in line  # the probability of gray's pick is not what the line reports

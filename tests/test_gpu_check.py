"""scripts/gpu_check.sh, run to completion on the CPU at tiny sizes, so that the GPU check stays ready for a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 2 minutes on 2 cores: the real-size players (ViT-B-32, GPT-2 124M) are built on the CPU
def test_the_gpu_check_runs_every_part_and_writes_its_report(default_models, tmp_path):
    env = dict(
        os.environ,
        PYTHON=sys.executable,  # this interpreter has listener-sub installed: no virtual environment is made
        DEVICE="cpu",
        OMP_NUM_THREADS="1",
        STEPS="1",
        NAIVE_STEPS="1",
        REAL_BOARDS="1",
        REAL_K="2",
        VLM_SIZE="tiny",
        VLM_BOARDS="2",
        VLM_K="2",
        DDP="1",
        DDP_STEPS="1",
        OVERRIDES="trainer.boards=2 trainer.k=2 evaluation.boards=4 game.pool_size=64",
    )
    result = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and set(report["stage_s"]) == {"real", "tiny", "vlm", "ddp"}
    for name, games in (("real", 2), ("tiny", 4), ("vlm", 4)):
        part = report[name]
        assert part["games_per_step"] == games and part["optimized/games_per_s"] > 0
        assert 0 < part["optimized/flop_utilisation"] < 1 and part["optimized/peak_memory_gb"] > 0
        assert part["speedup"] == part["optimized/games_per_s"] / part["naive/games_per_s"]
    tiny_clip = report["tiny"]  # the listener CLIP's training step, on the check's device
    assert tiny_clip["clip/images_per_step"] == 128 and tiny_clip["clip/optimized/images_per_s"] > 0
    assert report["vlm"]["optimized/gflop_per_step"] > 0  # the VLM's attention counted (grouped-query heads too)
    ddp = report["ddp"]
    assert ddp["ranks"] == 2 and ddp["steps"] == 1
    assert ddp["games_per_s"] == 1 * 2 * 2 * 2 / ddp["wall_s/rl"]  # steps x ranks x boards x k, over the RL time
    assert f"wall {report['wall_s']:.0f} s" in result.stdout

"""Data-parallel RL on torchrun's process group: two gloo ranks on the CPU train like one process with twice the
boards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from test_rl import TINY, attribute_game, captioner, game, held_out, read_jsonl, rl_config, speaker_from  # noqa: F401 (module fixtures)
from tiny_game import one_thread  # noqa: F401 (an autouse fixture)

from listener_sub.distributed import Ranks, join, leave
from listener_sub.models.listener import register_model_configs
from listener_sub.rl import Trainer

BOARDS, STEPS = 8, 3  # boards per rank, optimizer steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_rank(rank: int, world: int, port: int, captioner_path: str, run_dir: str) -> None:
    """One rank of a torchrun-style run (the environment torchrun would set), training and saving its adapter."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    register_model_configs()  # a fresh interpreter: the tiny models' configs are registered on use
    ranks = join(torch.device("cpu"))
    trainer = Trainer(
        rl_config(steps=STEPS, boards=BOARDS, baseline="mean"),
        speaker_from(captioner_path),
        attribute_game(),
        run_dir,
        held_out(12),
        ranks,
    )
    result = trainer.fit()
    torch.save(trainer.speaker.adapter.state_dict(), os.path.join(run_dir, f"adapter_rank{rank}.pt"))
    with open(os.path.join(run_dir, f"result_rank{rank}.json"), "w") as out:
        json.dump(result, out)
    leave()


def test_two_ranks_train_like_one_process_with_twice_the_boards(captioner, tmp_path):
    run = tmp_path / "two_ranks"
    run.mkdir()
    mp.spawn(train_rank, args=(2, free_port(), str(captioner), str(run)), nprocs=2, join=True)
    weights = [torch.load(run / f"adapter_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])  # DDP kept the ranks in step

    start = speaker_from(captioner).adapter.state_dict()
    single = Trainer(
        rl_config(steps=STEPS, boards=2 * BOARDS, baseline="mean"),
        speaker_from(captioner),
        attribute_game(),
        tmp_path / "one",
        held_out(12),
        Ranks(),
    )
    single_result = single.fit()
    trained = single.speaker.adapter.state_dict()
    change = torch.cat(
        [(trained[name] - start[name]).flatten() for name in start]
    )  # what one process of 2B boards learnt
    difference = torch.cat([(weights[0][name] - trained[name]).flatten() for name in start])
    # the same update up to float rounding (summing in another order; Adam amplifies it where a gradient is ~0):
    # measured 2e-3 of the update's norm, where each rank stepping on its own boards alone would be of the order of the
    # update itself
    assert difference.norm() < 1e-2 * change.norm()

    logged = [line for line in read_jsonl(run / "metrics.jsonl") if "train/reward" in line]  # rank 0's log
    expected = [line for line in read_jsonl(tmp_path / "one" / "metrics.jsonl") if "train/reward" in line]
    assert [line["train/captions"] for line in logged] == [2 * BOARDS * 4] * STEPS  # both ranks' boards
    for ours, theirs in zip(logged, expected):
        assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"step_{STEPS:06d}"]  # written once, by rank 0
    results = [json.loads((run / f"result_rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1]  # evaluation split across ranks, gathered: every rank has the metrics of all boards
    assert results[0]["after"] == pytest.approx(single_result["after"], rel=1e-4, abs=1e-5)
    assert results[0]["before"] == pytest.approx(single_result["before"], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_train_command_under_torchrun_then_resumed(tmp_path):
    """`torchrun --nproc_per_node=2 -m listener_sub train`: rank 0 builds the cache, logs both ranks' boards,
    checkpoints once; a resumed run under torchrun continues from the checkpoint."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port",
        str(free_port()),
        "-m",
        "listener_sub",
        "train",
    ]
    settings = [*TINY, f"cache_dir={cache}", f"hydra.run.dir={run}", "device=cpu", "trainer.save_every=2"]
    first = subprocess.run([*torchrun, *settings, "trainer.steps=2"], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = subprocess.run(
        [*torchrun, *settings, "trainer.steps=4", "resume=true"], capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    train = [line for line in read_jsonl(run / "metrics.jsonl") if "train/reward" in line]
    assert [line["step"] for line in train] == [1, 2, 3, 4] and {line["train/captions"] for line in train} == {
        2 * 4 * 2
    }  # 2 ranks x 4 boards x k=2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    assert json.loads((run / "summary.json").read_text())["steps"] == 4

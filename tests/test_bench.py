"""`listener-sub bench`: the RL step against its naive twin, on the same boards from the same start."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import test_pretrain
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from test_rl import captioner, game, rl_config, speaker_from  # noqa: F401 (module fixtures: a tiny game and its captioner)
from tiny_game import one_thread, tiny_game, tiny_listeners  # noqa: F401 (one_thread: an autouse fixture)

from listener_sub.bench import (
    NaiveListenerTraining,
    NaiveStep,
    bench_clip,
    bench_rl,
    naive_listen,
    naive_sample,
    step_flops,
)
from listener_sub.commands.bench import check
from listener_sub.draws import uniforms
from listener_sub.errors import UserError
from listener_sub.evaluation import EvalConfig
from listener_sub.game import listen
from listener_sub.perception import make_perception
from listener_sub.pretrain.listeners import ListenerRecipe, ListenerTraining
from listener_sub.rl import Trainer
from listener_sub.world import WorldConfig


def test_the_naive_listener_scores_as_the_game_does():
    game = tiny_game(tiny_listeners())
    boards = game.sample(6, np.random.default_rng(0), "test")
    captions = [
        "a red circle.",
        "a large object.",
        "a red circle.",
        "a striped square on the left.",
        "a blue object.",
        "a small cross.",
    ]
    fast, slow = listen(game.listeners, captions, boards), naive_listen(game.listeners, captions, boards)
    for name in game.listeners:
        torch.testing.assert_close(slow[name], fast[name], atol=1e-5, rtol=0)


def test_the_naive_step_plays_the_same_game_as_the_optimized_one(game, captioner, tmp_path):
    """The same boards, start and random streams: sampling without a KV cache and listening without caches give the same
    captions, rewards and update as the trainer's step (the optimizations change speed, not the game)."""
    trainer = Trainer(
        rl_config(boards=8, k=2), speaker_from(captioner), game, tmp_path, EvalConfig(boards=4, split="train")
    )
    start = trainer.save()

    def update() -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each adapter weight and the gradient that moved it (AdamW's first moment after one step: (1 - beta1) g)."""
        state = trainer.optimizer.state
        return [(p.detach().clone(), state[p]["exp_avg"].clone()) for p in trainer.speaker.adapter.parameters()]

    fast = trainer.train_step()
    fast_update = update()
    trainer.load(start)
    slow = NaiveStep(trainer)()
    assert slow == pytest.approx(fast, rel=1e-4, abs=1e-5)
    lr = trainer.cfg.lr
    for (weight, moment), (fast_weight, fast_moment) in zip(update(), fast_update):
        torch.testing.assert_close(moment, fast_moment, rtol=1e-4, atol=1e-7)  # the same gradient
        # AdamW's first step moves each weight by about lr * sign(g): a gradient within float noise of 0 may move it
        # by anything up to lr either way
        torch.testing.assert_close(weight, fast_weight, rtol=0, atol=lr)
    prefix = trainer.speaker.prefix(game.pool("train").images[:3])
    cached = trainer.speaker.sample(prefix, 2, generator=torch.Generator().manual_seed(1))
    tokens, lengths = naive_sample(
        trainer.speaker, prefix, 2, 1.0, uniforms(6, 16, torch.Generator().manual_seed(1), "cpu")
    )
    assert torch.equal(lengths, cached.lengths) and torch.equal(tokens, cached.tokens[:, : tokens.shape[1]])


def test_bench_rl_reports_both_steps(game, captioner, tmp_path):
    trainer = Trainer(
        rl_config(boards=8, k=2), speaker_from(captioner), game, tmp_path, EvalConfig(boards=4, split="train")
    )
    results = bench_rl(trainer, steps=2, naive_steps=1)
    for variant in ("optimized", "naive"):
        assert results[f"rl/{variant}/games_per_s"] > 0 and results[f"rl/{variant}/gflop_per_step"] > 0
        assert 0 < results[f"rl/{variant}/flop_utilisation"] < 1 and results[f"rl/{variant}/peak_memory_gb"] > 0
        phases = {k.rsplit("/", 1)[1] for k in results if k.startswith(f"rl/{variant}/s/")}
        assert phases == {
            "boards",
            "vision",
            "sampling",
            "listeners",
            "teacher-forced pass",
            "reference pass",
            "backward",
            "optimizer",
            "bookkeeping",
        }
        assert sum(v for k, v in results.items() if k.startswith(f"rl/{variant}/s/")) == pytest.approx(
            results[f"rl/{variant}/s_per_step"]
        )
    assert results["rl/naive/gflop_per_step"] > results["rl/optimized/gflop_per_step"]  # the naive step does more work
    assert results["rl/speedup"] == pytest.approx(results["rl/optimized/games_per_s"] / results["rl/naive/games_per_s"])
    assert trainer.step == 0  # back at the start: the bench leaves the trainer as it found it


def test_bench_rl_without_the_naive_step_times_the_optimized_one_alone(game, captioner, tmp_path):
    trainer = Trainer(
        rl_config(boards=4, k=2), speaker_from(captioner), game, tmp_path, EvalConfig(boards=4, split="train")
    )
    results = bench_rl(trainer, steps=1, naive_steps=0)
    assert results["rl/optimized/games_per_s"] > 0 and "rl/speedup" not in results
    assert not any(key.startswith("rl/naive/") for key in results)


def test_attention_flops_count_grouped_query_heads_and_the_cpu_kernel():
    """Scores and values of every query head, forward (2 B Hq Sq Sk (D + Dv)) and backward (the scores recomputed, four
    gradient products): on the CPU's flash kernel, which torch's own counter skips, and with fewer key/value heads."""
    forward = 2 * 2 * 8 * 5 * 7 * (16 + 16)
    backward = 2 * 2 * 8 * 5 * 7 * (3 * 16 + 2 * 16)
    for kv_heads in (8, 2):
        q = torch.randn(2, 8, 5, 16, requires_grad=True)
        k, v = (torch.randn(2, kv_heads, 7, 16, requires_grad=True) for _ in range(2))
        attend = functools.partial(F.scaled_dot_product_attention, q, k, v, enable_gqa=True)
        assert step_flops(attend) == forward
        assert step_flops(functools.partial(lambda f: f().sum().backward(), attend)) == forward + backward


@pytest.mark.parametrize(
    "override, message",
    [
        ("preset=huge", "unknown preset=huge"),
        ("parts=[speed]", "parts=['speed']"),
        ("rl.steps=0", "rl.steps=0"),
        ("rl.naive_steps=-1", "rl.naive_steps=-1"),
        ("clip.naive_steps=-2", "clip.naive_steps=-2"),
    ],
)
def test_bench_refuses_bad_settings(override, message):
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose("bench", overrides=[override])
    with pytest.raises(UserError, match=re.escape(message)):
        check(cfg)


@pytest.mark.slow
def test_bench_command_writes_rl_results(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [
        sys.executable,
        "-m",
        "listener_sub",
        "bench",
        "parts=[rl]",
        "rl.steps=1",
        "rl.naive_steps=1",
        *test_pretrain.TINY,
        "game.pool_size=64",
        "trainer.boards=4",
        "trainer.k=2",
        "evaluation.boards=4",
        f"hydra.run.dir={tmp_path}",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert results["rl/speedup"] > 1 and results["rl/games_per_step"] == 8


def test_the_naive_clip_step_trains_as_the_optimized_one():
    """Encoding each caption key (not each distinct text) and AdamW's per-parameter loop change the speed, not the
    training."""
    recipe = ListenerRecipe(pool_size=256, batch_size=16)
    losses = []
    for kind in (ListenerTraining, NaiveListenerTraining):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            training = kind("ls-rn-tiny-64", make_perception("full"), WorldConfig(), recipe)
        losses.append([float(training.step()[0].detach()) for _ in range(3)])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_bench_clip_reports_both_steps():
    results = bench_clip(
        "ls-rn-tiny-64", WorldConfig(), ListenerRecipe(pool_size=256, batch_size=16), steps=1, naive_steps=1
    )
    for variant in ("optimized", "naive"):
        assert results[f"clip/{variant}/images_per_s"] > 0 and 0 < results[f"clip/{variant}/flop_utilisation"] < 1
    assert (
        results["clip/naive/gflop_per_step"] > results["clip/optimized/gflop_per_step"]
    )  # the naive step encodes more captions
    assert results["clip/speedup"] == pytest.approx(
        results["clip/optimized/images_per_s"] / results["clip/naive/images_per_s"]
    )

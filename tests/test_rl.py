"""REINFORCE with listener subtraction: learning, what changes, resume, logs, and the train / eval commands."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import test_pretrain
import torch
from folders import plain_folder
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from test_speaker import make_speaker
from tiny_game import one_thread, tiny_game, tiny_listeners, word_tokenizer  # noqa: F401 (one_thread: an autouse fixture)
from torch import nn

from listener_sub.adapters.io import read_adapter
from listener_sub.commands.common import build_reward, run_spec, trainer_config
from listener_sub.errors import DataError, TrainingDiverged, UserError
from listener_sub.evaluation import EvalConfig
from listener_sub.game import Game, Pool, create_game
from listener_sub.loading import load_run
from listener_sub.models.listener import register_model_configs
from listener_sub.optim import Schedule
from listener_sub.pretrain.speaker import CaptionerRecipe, train_captioner
from listener_sub.rewards import Reward
from listener_sub.rl import (
    Baseline,
    ConstraintConfig,
    Multipliers,
    RLConfig,
    TargetInputs,
    Trainer,
    check_constraint,
)
from listener_sub.runs import latest_checkpoint, read_state
from listener_sub.world import ATTRIBUTES, WORLD_VOCAB, WorldConfig, canonical_caption, parse

POOL = 8  # train-split scenes the tiny game's boards are drawn from


class AttributeListener(nn.Module):
    """A rule listener that knows one attribute: of a pool image from ground truth, of a caption from its parse.

    P(image | caption) is sharp on the images whose value matches the one the caption names, uniform when it names none.
    """

    def __init__(self, name: str, attribute: str, pool: Pool, scale: float = 20.0) -> None:
        super().__init__()
        self.name, self.attribute, self.scale = name, attribute, scale
        self.values = WORLD_VOCAB.values[attribute]
        column = ATTRIBUTES.index(attribute)
        self.truth = {image.tobytes(): int(value) for image, value in zip(pool.images, pool.attrs[:, column])}

    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        values = torch.tensor([self.truth[image.tobytes()] for image in images])
        return nn.functional.one_hot(values, len(self.values)).float()  # (B, V)

    def encode_texts(self, captions: list[str]) -> torch.Tensor:
        named = [parse(caption).spec.objects[0].get(self.attribute) for caption in captions]
        out = torch.zeros(len(captions), len(self.values))  # (B, V)
        for row, value in enumerate(named):
            if value:
                out[row, self.values.index(value)] = 1.0
        return out

    def read(self, captions: list[str]) -> torch.Tensor:
        return self.encode_texts(captions)

    def forget_texts(self) -> None:
        """Nothing is remembered."""

    @property
    def logit_scale(self) -> torch.Tensor:
        return torch.tensor(self.scale)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


@pytest.fixture(scope="module")
def game() -> Game:
    return attribute_game()


def attribute_game() -> Game:
    """Colour-blind subtraction in miniature: the intended listener reads colour, the subtracted one shape."""
    world = WorldConfig()
    pool = Pool.build(world, "train", POOL)  # the same scenes the game's train pool holds
    listeners = {"full": AttributeListener("full", "color", pool), "gray": AttributeListener("gray", "shape", pool)}
    return create_game(world, listeners, Reward(intended={"full": 1.0}, subtracted={"gray": 1.0}), pool_size=POOL)


@pytest.fixture(scope="module")
def captioner(game, tmp_path_factory):
    """A tiny speaker captioned to say either 'a <colour> object.' or 'a <shape>.' of each pool image; its adapter
    file."""
    register_model_configs()
    pool = game.pool("train")
    captions = [[canonical_caption(pool.scenes.objects(i)[0], (a,)) for a in ("color", "shape")] for i in range(POOL)]
    speaker = make_speaker(word_tokenizer())
    train_captioner(
        speaker,
        pool.images,
        captions,
        CaptionerRecipe(steps=150, batch_size=POOL, lr=3e-3, schedule=Schedule(10, 0.1)),
        progress=False,
    )
    path = tmp_path_factory.mktemp("captioner") / "adapter.safetensors"
    speaker.save_adapter(path)
    return path


def speaker_from(captioner):
    """A fresh copy of the captioned tiny speaker (same frozen vision and LM: make_speaker is seeded)."""
    speaker = make_speaker(word_tokenizer())
    speaker.load_adapter(captioner)
    return speaker


def rl_config(**overrides) -> RLConfig:
    settings = dict(
        steps=4, boards=16, k=4, lr=1e-3, schedule=Schedule(2, 1.0), eval_every=0, save_every=0, progress=False
    )
    return RLConfig(**(settings | overrides))


def held_out(boards: int = 64) -> EvalConfig:
    """Evaluation boards of the tiny game's train pool."""
    return EvalConfig(boards=boards, split="train")


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rl_learns_to_name_what_only_the_intended_listener_sees(game, captioner, tmp_path):
    speaker = speaker_from(captioner)
    frozen = {name: t.clone() for name, t in [*speaker.visual.state_dict().items(), *speaker.lm.state_dict().items()]}
    adapter_before = {name: t.clone() for name, t in speaker.adapter.state_dict().items()}
    trainer = Trainer(rl_config(steps=30, eval_every=15), speaker, game, tmp_path, held_out())
    result = trainer.fit()
    before, after = result["before"], result["after"]
    print(
        {
            k: (round(before[k], 3), round(after[k], 3))
            for k in ("reward", "sample/reward", "sample/mention/color", "sample/mention/shape", "kl")
        }
    )
    assert after["sample/reward"] > before["sample/reward"] + 0.2  # one temperature-1 sample per board
    assert after["reward"] > before["reward"] + 0.2  # greedy captions
    assert after["sample/mention/color"] > before["sample/mention/color"] + 0.2
    assert (
        after["sample/mention/shape"] < before["sample/mention/shape"] - 0.15
    )  # subtraction: omit what the other sees
    assert after["sample/truthful"] >= 0.6 and after["gap"] > before["gap"]
    assert abs(before["kl"]) < 1e-4 and 0 < after["kl"] < 10 and 0 < after["sample/kl"] < 10

    # only the adapter changed; the vision tower and the LM are bit-identical
    current = {**speaker.visual.state_dict(), **speaker.lm.state_dict()}
    assert all(torch.equal(current[name], t) for name, t in frozen.items())
    assert any(not torch.equal(speaker.adapter.state_dict()[name], t) for name, t in adapter_before.items())
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == {
        id(p) for p in speaker.adapter.parameters()
    }

    lines = read_jsonl(tmp_path / "metrics.jsonl")
    train = [line for line in lines if "train/reward" in line]
    evals = [line for line in lines if "eval/gap" in line]
    assert [line["step"] for line in train] == list(range(1, 31)) and [line["step"] for line in evals] == [0, 15, 30]
    assert all(math.isfinite(line["train/kl"]) and math.isfinite(line["train/loss"]) for line in train)
    assert (
        np.mean([line["train/reward"] for line in train[-10:]])
        > np.mean([line["train/reward"] for line in train[:3]]) + 0.1
    )  # it learns within ~10 steps
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert latest_checkpoint(tmp_path).name == "step_000030"  # the final checkpoint


def test_resumed_run_is_bit_identical_to_a_straight_run(game, captioner, tmp_path):
    straight = Trainer(rl_config(steps=4), speaker_from(captioner), game, tmp_path / "straight", held_out(8))
    straight.fit()
    first = Trainer(rl_config(steps=2), speaker_from(captioner), game, tmp_path / "split", held_out(8))
    first.fit()
    resumed = Trainer(rl_config(steps=4), speaker_from(captioner), game, tmp_path / "split", held_out(8))
    resumed.fit(resume=True)
    assert resumed.step == 4 and resumed.before == first.before
    ours, theirs = straight.speaker.adapter.state_dict(), resumed.speaker.adapter.state_dict()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    logged = [line["step"] for line in read_jsonl(tmp_path / "split" / "metrics.jsonl") if "train/reward" in line]
    assert logged == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == ["step_000002", "step_000004"]


def test_keep_last_bounds_the_checkpoints_and_resume_drops_a_torn_metrics_line(game, captioner, tmp_path):
    Trainer(rl_config(steps=3, save_every=1, keep_last=2), speaker_from(captioner), game, tmp_path, held_out(8)).fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000002", "step_000003"]
    with open(tmp_path / "metrics.jsonl", "a") as out:
        out.write('{"step": 4, "train/rew')  # killed while writing step 4's line
    resumed = Trainer(
        rl_config(steps=5, save_every=1, keep_last=2), speaker_from(captioner), game, tmp_path, held_out(8)
    )
    resumed.fit(resume=True)
    logged = [line["step"] for line in read_jsonl(tmp_path / "metrics.jsonl") if "train/reward" in line]
    assert resumed.step == 5 and logged == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000004", "step_000005"]
    every = [line["step"] for line in read_jsonl(tmp_path / "metrics.jsonl")]
    assert every == [0, 1, 2, 3, 3, 4, 5, 5]  # before, three steps and their evaluation, two more and the final one
    Trainer(rl_config(steps=5, save_every=1, keep_last=2), speaker_from(captioner), game, tmp_path, held_out(8)).fit(
        resume=True
    )
    assert [
        line["step"] for line in read_jsonl(tmp_path / "metrics.jsonl")
    ] == every  # killed after its final evaluation: once


def poison(trainer: Trainer, steps: set[int], monkeypatch) -> None:
    """Make the loss of the given (1-based) steps NaN, as a diverging objective would."""
    objective = trainer.objective

    def maybe_nan(*args):
        out = objective(*args)
        return replace(out, loss=out.loss * float("nan")) if trainer.step + 1 in steps else out

    monkeypatch.setattr(trainer, "objective", maybe_nan)


def test_a_non_finite_step_is_skipped_and_counted_and_too_many_in_a_row_stop_the_run(
    game, captioner, tmp_path, monkeypatch
):
    trainer = Trainer(
        rl_config(steps=6, save_every=1, max_bad_steps=3), speaker_from(captioner), game, tmp_path / "a", held_out(8)
    )
    poison(trainer, {3, 5, 6}, monkeypatch)
    trainer.fit()
    logged = [
        line["train/skipped_steps"] for line in read_jsonl(tmp_path / "a" / "metrics.jsonl") if "train/reward" in line
    ]
    assert logged == [0, 0, 1, 1, 2, 3]
    adapters = {
        step: read_adapter(tmp_path / "a" / "checkpoints" / f"step_{step:06d}" / "adapter.safetensors").state_dict()
        for step in range(1, 7)
    }
    assert all(
        torch.equal(adapters[2][key], adapters[3][key]) for key in adapters[2]
    )  # step 3 left the adapter as it was
    assert any(not torch.equal(adapters[3][key], adapters[4][key]) for key in adapters[3])  # step 4 trained
    assert all(torch.isfinite(t).all() for t in adapters[6].values())

    stopped = Trainer(
        rl_config(steps=6, save_every=1, max_bad_steps=2), speaker_from(captioner), game, tmp_path / "b", held_out(8)
    )
    poison(stopped, {2, 3}, monkeypatch)
    with pytest.raises(
        TrainingDiverged,
        match=r"2 RL steps in a row \(up to step 3\) had a non-finite loss or gradient; the last checkpoint "
        r".*step_000002",
    ):
        stopped.fit()
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    kept = read_adapter(tmp_path / "b" / "checkpoints" / "step_000002" / "adapter.safetensors").state_dict()
    assert all(torch.isfinite(t).all() for t in kept.values())


def test_a_checkpoint_is_safetensors_and_json_and_a_legacy_pickle_still_resumes(game, captioner, tmp_path):
    straight = Trainer(rl_config(steps=2), speaker_from(captioner), game, tmp_path / "straight", held_out(8))
    straight.fit()
    Trainer(rl_config(steps=1), speaker_from(captioner), game, tmp_path / "legacy", held_out(8)).fit()
    checkpoint = latest_checkpoint(tmp_path / "legacy")
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "adapter.json",
        "adapter.safetensors",
        "trainer.json",
        "trainer.safetensors",
    ]
    state = read_state(checkpoint)
    assert isinstance(state["rng"]["python"], tuple) and isinstance(
        next(iter(state["optimizer"]["state"])), int
    )  # types kept
    torch.save(state, checkpoint / "trainer.pt")  # the first checkpoint format: the state as a pickle
    (checkpoint / "trainer.json").unlink()
    (checkpoint / "trainer.safetensors").unlink()
    resumed = Trainer(rl_config(steps=2), speaker_from(captioner), game, tmp_path / "legacy", held_out(8))
    resumed.fit(resume=True)
    ours, theirs = straight.speaker.adapter.state_dict(), resumed.speaker.adapter.state_dict()
    assert resumed.step == 2 and all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_resume_is_bit_identical_with_clip_listeners_that_remember_captions(captioner, tmp_path):
    """CLIP listeners that remember the text features of captions they have read (and forget them at each checkpoint):
    N steps straight and N/2 + N/2 give identical adapters when both runs checkpoint at N/2, as an interrupted run
    resumes from a checkpoint the straight run also wrote (a text encoder's floats may depend on what else is in its
    pass)."""
    adapters = []
    for name, parts in (("straight", [4]), ("split", [2, 4])):
        for i, steps in enumerate(parts):
            cfg = rl_config(steps=steps, boards=8, save_every=2)
            trainer = Trainer(cfg, speaker_from(captioner), tiny_game(tiny_listeners()), tmp_path / name, held_out(4))
            trainer.fit(resume=i > 0)
        adapters.append(trainer.speaker.adapter.state_dict())
    assert all(torch.equal(adapters[0][key], adapters[1][key]) for key in adapters[0])


def test_pool_table_holds_what_each_step_would_compute(game, captioner, tmp_path):
    """The training pool's frozen speaker inputs (vision features, reference prefix) are computed once when they fit in
    memory; a row of the table is what a step would compute for that image."""
    trainer = Trainer(rl_config(), speaker_from(captioner), game, tmp_path, held_out(4))
    assert trainer.targets is not None and trainer.targets.reference.shape[0] == len(game.pool("train"))
    boards = game.sample(8, np.random.default_rng(0))
    features, reference = trainer.target_inputs(boards)
    trainer.targets = None  # computed for the boards instead
    computed, computed_reference = trainer.target_inputs(boards)
    torch.testing.assert_close(features.tokens, computed.tokens, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(features.pooled, computed.pooled, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(reference, computed_reference, atol=1e-5, rtol=1e-4)
    assert reference.abs().sum() > 0 and not reference.requires_grad
    images = game.pool("train").images
    table_bytes = 4 * len(images) * (features.tokens[0].numel() + features.pooled[0].numel() + reference[0].numel())
    fits = [
        TargetInputs.fits(trainer.speaker, trainer.reference, images, budget=b) for b in (table_bytes, table_bytes - 1)
    ]
    assert fits == [True, False]


def test_resume_needs_a_checkpoint_and_a_fresh_start_an_empty_run(game, captioner, tmp_path):
    trainer = Trainer(rl_config(steps=1), speaker_from(captioner), game, tmp_path, held_out(4))
    with pytest.raises(UserError, match="resume=true but .* holds no checkpoint"):
        trainer.fit(resume=True)
    trainer.fit()
    with pytest.raises(UserError, match="already holds checkpoints"):
        Trainer(rl_config(steps=1), speaker_from(captioner), game, tmp_path, held_out(4)).fit()


def test_baselines():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])  # two boards, k = 3
    torch.testing.assert_close(Baseline("rloo", 3, 0.9)(rewards), torch.tensor([2.5, 2.0, 1.5, 25.0, 20.0, 15.0]))
    torch.testing.assert_close(Baseline("mean", 3, 0.9)(rewards), torch.full((6,), 11.0))
    assert Baseline("none", 3, 0.9)(rewards).eq(0).all()
    ema = Baseline("ema", 3, 0.5)
    assert ema(rewards).eq(11.0).all() and ema.ema == 11.0  # the first batch is its own baseline
    assert ema(rewards + 2).eq(11.0).all() and ema.ema == 12.0


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "trainer.baseline=best",
            r"^trainer: bad trainer settings: baseline=best \(choose one of: rloo, mean, ema, none\) \(fix the trainer",
        ),
        ("trainer.k=1", "k=1 with baseline=rloo"),
        ("evaluation.split=dev", "the embedded world has no split 'dev'; choose one of: train, val, test, shifted"),
        ("trainer.split=dev", "the embedded world has no split 'dev'"),
        ("evaluation.boards=0", "evaluation.boards=0"),
        ("+trainer.gamma=0.9", "gamma"),
    ],
)
def test_bad_trainer_settings_are_user_errors(override, message):
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose("train", overrides=[override])
    with pytest.raises(UserError, match=message):
        run_spec(cfg, [trainer_config(cfg).split])


def test_mistyped_trainer_settings_fail_to_compose():
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        with pytest.raises(HydraException, match="steps"):
            compose("train", overrides=["trainer.steps=many"])


TINY = [
    *test_pretrain.TINY,
    "game.pool_size=64",
    "trainer.boards=4",
    "trainer.k=2",
    "evaluation.boards=8",
    "trainer.progress=false",
]


def command(name: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "listener_sub", name, *TINY, *args], capture_output=True, text=True, timeout=600, env=env
    )


def test_train_and_eval_commands(tmp_path, warm_cache):
    run = tmp_path / "run"
    result = command(
        "train",
        f"hydra.run.dir={run}",
        "trainer.steps=2",
        "trainer.save_every=1",
        "reward.lam=0.5",
        "game.distractors=hard",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert {
        "before",
        "after",
        "oracle_gap",
        "fixed_oracle_gap",
        "fixed_oracle_subset",
        "wall_s",
        "wall_s/pretrain",
        "wall_s/rl",
        "config",
    } <= set(summary)
    for key in (
        "acc/full",
        "acc/gray",
        "gap",
        "reward",
        "mention/color",
        "truthful",
        "grammatical",
        "kl",
        "length",
        "distinct_1",
        "distinct_2",
        "lm_nll",
    ):
        assert key in summary["before"] and f"sample/{key}" in summary["after"]
    assert summary["config"]["trainer"]["steps"] == 2 and summary["steps"] == 2
    assert [line["step"] for line in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2, 2]  # eval, two steps, eval
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    assert "before" in result.stdout and "fixed_oracle_gap" in result.stdout
    environment = summary["environment"]
    assert environment["world_size"] == 1 and environment["torch"] == torch.__version__.split("+")[0]
    assert {"listener_sub", "transformers", "open_clip", "git_commit", "python"} <= set(environment)

    evaluated = command("eval", f"hydra.run.dir={tmp_path / 'eval'}", f"checkpoint={run}")
    assert evaluated.returncode == 0, evaluated.stderr
    again = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert again["checkpoint"].endswith("step_000002/adapter.safetensors") and "before" not in again
    assert again["after"] == pytest.approx(summary["after"], abs=1e-6)  # the same boards, seed and adapter
    assert again["fixed_oracle_gap"] == summary["fixed_oracle_gap"]
    for folder, after in (
        (run, summary["after"]),
        (tmp_path / "eval", again["after"]),
    ):  # each board's values, train's and eval's
        with np.load(folder / "eval_boards.npz") as boards:
            assert len(boards["gap"]) == summary["config"]["evaluation"]["boards"]
            assert boards["gap"].mean() == pytest.approx(after["gap"]) and boards[
                "sample/prob_gap"
            ].mean() == pytest.approx(after["sample/prob_gap"])
    assert (
        again["config"]["reward"]["lam"] == 0.5 and again["config"]["game"]["distractors"] == "hard"
    )  # the run's own game

    overridden = command(
        "eval",
        f"hydra.run.dir={tmp_path / 'eval4'}",
        f"checkpoint={run / 'checkpoints' / 'step_000001'}",
        "evaluation.boards=4",
    )
    assert overridden.returncode == 0, overridden.stderr
    four = json.loads((tmp_path / "eval4" / "summary.json").read_text())
    assert (
        four["config"]["evaluation"]["boards"] == 4 and four["config"]["reward"]["lam"] == 0.5
    )  # overrides on top of the run's config
    assert four["checkpoint"].endswith(
        "step_000001/adapter.safetensors"
    )  # (refused overrides and resumes: test_bad_input.py)

    # the game (run=), the speaker (checkpoint=) and the data are named apart
    base = command("eval", f"hydra.run.dir={tmp_path / 'base'}", f"run={run}", "checkpoint=captioner")
    assert base.returncode == 0, base.stderr
    assert json.loads((tmp_path / "base" / "summary.json").read_text())["after"] == pytest.approx(
        summary["before"], abs=1e-6
    )  # the captioning speaker in the run's game: the run's metrics before RL
    loaded = load_run(run, ["evaluation.boards=4"])
    assert loaded.adapter == run / "checkpoints" / "step_000002" / "adapter.safetensors"
    assert loaded.config.evaluation.boards == 4 and loaded.players.game.reward.lam == 0.5
    trained = read_adapter(loaded.adapter).state_dict()
    assert all(torch.equal(t.cpu(), trained[k]) for k, t in loaded.players.speaker.adapter.state_dict().items())


def test_eval_on_other_images_never_trains_a_model(tmp_path, warm_cache):
    """data=... names the boards' images: the game's listeners, LM and captioner stay those of its own data."""
    plain_folder(tmp_path / "plain", 12)
    models = {path for path in warm_cache.glob("*/*") if path.parent.name in ("listeners", "lm", "speaker")}
    plain = ["data=folder", f"data.root={tmp_path / 'plain'}", "data.image_size=64"]
    result = command("eval", f"hydra.run.dir={tmp_path / 'eval'}", "checkpoint=captioner", *plain)
    assert result.returncode == 0, result.stderr
    found = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert found["config"]["data"]["kind"] == "synthetic" and found["config"]["evaluation"]["data"]["kind"] == "folder"
    assert found["data"]["evaluation"].startswith("folder") and "acc/full" in found["after"]
    assert {path for path in warm_cache.glob("*/*") if path.parent.name in ("listeners", "lm", "speaker")} == models


def test_a_run_killed_at_a_random_point_resumes_to_the_uninterrupted_runs_adapter_and_summary(tmp_path, warm_cache):
    args = ["trainer.steps=6", "trainer.save_every=1", "trainer.eval_every=0"]
    assert command("train", f"hydra.run.dir={tmp_path / 'straight'}", *args).returncode == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    killed = subprocess.Popen(
        [sys.executable, "-m", "listener_sub", "train", *TINY, *args, f"hydra.run.dir={tmp_path / 'killed'}"], env=env
    )
    rng = np.random.default_rng()
    reached = tmp_path / "killed" / "checkpoints" / f"step_{rng.integers(1, 5):06d}" / "trainer.json"
    while killed.poll() is None and not reached.exists():
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.2))  # somewhere in the following steps, checkpoint writes or metric lines
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "the run ended before it was killed; kill it earlier"
    resumed = command("train", f"hydra.run.dir={tmp_path / 'killed'}", *args, "resume=true")
    assert resumed.returncode == 0, resumed.stderr
    straight, again = (
        read_adapter(tmp_path / name / "checkpoints" / "step_000006" / "adapter.safetensors").state_dict()
        for name in ("straight", "killed")
    )
    assert all(torch.equal(straight[key], again[key]) for key in straight)
    ours, theirs = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("straight", "killed"))
    assert (
        ours["after"] == theirs["after"]
        and ours["before"] == theirs["before"]
        and ours["fixed_oracle_gap"] == theirs["fixed_oracle_gap"]
    )
    assert [line["step"] for line in read_jsonl(tmp_path / "killed" / "metrics.jsonl")] == [0, 1, 2, 3, 4, 5, 6, 6]


@pytest.mark.slow  # three commands (train, eval, eval reranked): test_rerank.py checks reranking itself
def test_eval_of_the_captioner_greedy_and_reranked(tmp_path, warm_cache):
    """checkpoint=captioner evaluates the RL reference itself (a train run's `before`); speaker.decode=rerank keeps the
    best of n samples per board, its kl the best-of-n bound (the reference is the sampling speaker)."""
    game = ["reward.lam=0.5", "game.distractors=hard"]
    run = tmp_path / "run"
    assert command("train", f"hydra.run.dir={run}", "trainer.steps=1", *game).returncode == 0
    before = json.loads((run / "summary.json").read_text())["before"]
    greedy = command("eval", f"hydra.run.dir={tmp_path / 'greedy'}", "checkpoint=captioner", *game)
    assert greedy.returncode == 0, greedy.stderr
    base = json.loads((tmp_path / "greedy" / "summary.json").read_text())
    assert base["checkpoint"] == "captioner" and base["run"] is None and base["wall_s/eval"] > 0
    assert base["after"] == pytest.approx(before, abs=1e-6)
    reranked = command(
        "eval",
        f"hydra.run.dir={tmp_path / 'rerank'}",
        "checkpoint=captioner",
        "speaker.decode=rerank",
        "speaker.rerank.n=4",
        *game,
    )
    assert reranked.returncode == 0, reranked.stderr
    best = json.loads((tmp_path / "rerank" / "summary.json").read_text())
    assert best["after"]["kl"] == pytest.approx(math.log(4) - 3 / 4, abs=1e-6) and base["after"]["kl"] == pytest.approx(
        0.0, abs=1e-6
    )
    assert best["config"]["speaker"]["rerank"]["n"] == 4
    assert {k: v for k, v in best["after"].items() if k.startswith("sample/")} == pytest.approx(
        {k: v for k, v in base["after"].items() if k.startswith("sample/")}
    )
    assert (
        best["after"]["reward"] > base["after"]["sample/reward"]
    )  # (bad decoding settings: rows of test_bad_input.py)


@pytest.mark.slow
def test_compiled_adapter_gives_the_eager_prefix_and_gradient(game, captioner, tmp_path):
    """trainer.compile=true: the step runs the adapter through torch.compile; its prefix and gradient are the eager
    ones, and training runs."""
    trainer = Trainer(rl_config(steps=2, compile=True), speaker_from(captioner), game, tmp_path, held_out(4))
    speaker = trainer.speaker
    features, _ = trainer.target_inputs(game.sample(8, np.random.default_rng(0)))
    grads = []
    for policy in (speaker.adapter, trainer.policy):
        speaker.adapter.zero_grad(set_to_none=True)
        prefix = speaker.adapt(features, policy)  # (8, M, d_lm)
        (prefix * torch.linspace(-1, 1, prefix.numel()).view_as(prefix)).sum().backward()
        grads.append((prefix.detach(), [p.grad.clone() for p in speaker.adapter.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-5, rtol=1e-4)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(grads[0][1], grads[1][1]))
    before = {key: t.clone() for key, t in speaker.adapter.state_dict().items()}
    trainer.fit()
    assert any(not torch.equal(speaker.adapter.state_dict()[key], t) for key, t in before.items())
    lines = [line for line in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in line]
    assert len(lines) == 2 and all(math.isfinite(line["train/loss"]) for line in lines)


def test_multipliers_move_by_projected_dual_ascent():
    both = Multipliers(ConstraintConfig(subtracted_acc=0.3, kl=1.0, lam_lr=0.5, beta_lr=0.1), lam=0.0, beta=0.15)
    both.update(subtracted_acc=0.5, kl=3.0)  # both bounds broken: both multipliers rise by lr * the excess
    assert both.lam == pytest.approx(0.1) and both.beta == pytest.approx(0.35)
    both.update(subtracted_acc=0.0, kl=0.0)  # both kept: they fall, lam no lower than 0
    assert both.lam == 0.0 and both.beta == pytest.approx(0.25)
    fixed = Multipliers(ConstraintConfig(), lam=1.0, beta=0.15)  # no bound set: the fixed coefficients
    fixed.update(subtracted_acc=0.9, kl=9.0)
    assert (fixed.lam, fixed.beta) == (1.0, 0.15)


def test_constrained_subtraction_learns_lam_and_resumes_it(captioner, tmp_path):
    """A bound of 0 on the subtracted listener's accuracy: lam rises by lam_lr * its accuracy each step, from
    reward.lam; the game plays the learnt lam; a resumed run continues with it, bit for bit."""
    constrained = dict(constraint=ConstraintConfig(subtracted_acc=0.0, lam_lr=0.5))
    straight = Trainer(
        rl_config(steps=4, **constrained), speaker_from(captioner), attribute_game(), tmp_path / "straight", held_out(8)
    )
    straight.fit()
    train = [line for line in read_jsonl(tmp_path / "straight" / "metrics.jsonl") if "train/lam" in line]
    lams, accs = [line["train/lam"] for line in train], [line["train/acc/gray"] for line in train]
    assert lams[0] == 1.0 and all(acc > 0 for acc in accs)
    assert lams[1:] == pytest.approx([lam + 0.5 * acc for lam, acc in zip(lams, accs)][:-1])
    assert straight.game.reward.lam == pytest.approx(lams[-1] + 0.5 * accs[-1]) == straight.multipliers.lam
    assert all(line["train/beta"] == straight.cfg.beta for line in train)  # no KL bound: beta stays fixed

    game = attribute_game()
    Trainer(rl_config(steps=2, **constrained), speaker_from(captioner), game, tmp_path / "split", held_out(8)).fit()
    resumed = Trainer(
        rl_config(steps=4, **constrained), speaker_from(captioner), attribute_game(), tmp_path / "split", held_out(8)
    )
    resumed.fit(resume=True)
    assert resumed.multipliers.lam == straight.multipliers.lam
    ours, theirs = straight.speaker.adapter.state_dict(), resumed.speaker.adapter.state_dict()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["reward.score=dixit"], "dixit rule has no lam"),
        (["~reward.subtracted"], "subtracts none"),
    ],
)
def test_a_constraint_the_reward_cannot_take_is_a_user_error(overrides, message):
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose("train", overrides=[*overrides, "trainer.constraint.subtracted_acc=0.3"])
    with pytest.raises(ValueError, match=message):
        check_constraint(trainer_config(cfg).constraint, build_reward(cfg.reward))


def test_the_constrained_experiment_bounds_the_subtracted_accuracy():
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose("train", overrides=["experiment=colorblind_constrained"])
    rl = trainer_config(cfg)
    assert rl.constraint.subtracted_acc == 0.30 and rl.constraint.kl is None
    assert build_reward(cfg.reward).lam == 0.0 and dict(cfg.reward.subtracted) == {"gray": 1.0}


def resident_mib(pid: int) -> float:
    """A process's resident memory (VmRSS) in MiB, from /proc."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.slow  # a few minutes: 2,000 tiny RL steps
def test_resident_memory_stays_flat_over_a_long_run(tmp_path):
    run = tmp_path / "run"
    args = ["trainer.steps=2000", "trainer.eval_every=0", "trainer.save_every=500", f"hydra.run.dir={run}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "listener_sub", "train", *TINY, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    samples = []  # (step logged, resident MiB)
    while proc.poll() is None:
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        step = json.loads(lines[-1])["step"] if lines else 0
        samples.append((step, resident_mib(proc.pid)))
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    warm = max(mib for step, mib in samples if 200 <= step < 300)  # after warm-up: caches filled, allocator settled
    late = max(mib for step, mib in samples if step >= 300)
    print(f"resident MiB at steps 200-300: {warm:.0f}, at most after: {late:.0f} (+{100 * (late / warm - 1):.1f}%)")
    assert late < 1.10 * warm


def test_any_path_the_command_line_takes_loads_the_same_adapter(game, captioner, tmp_path):
    """A run, one of its checkpoints, the adapter file and the JSON beside it all name the trained adapter, for
    Speaker.load_adapter as for checkpoint= on the command line."""
    Trainer(rl_config(steps=2, save_every=1), speaker_from(captioner), game, tmp_path / "run", held_out(8)).fit()
    latest = tmp_path / "run" / "checkpoints" / "step_000002"
    expected = read_adapter(latest / "adapter.safetensors").state_dict()
    first = read_adapter(tmp_path / "run" / "checkpoints" / "step_000001" / "adapter.safetensors").state_dict()
    assert any(not torch.equal(first[k], expected[k]) for k in expected)  # the run's checkpoints differ
    for path in (tmp_path / "run", latest, latest / "adapter.safetensors", latest / "adapter.json"):
        loaded = speaker_from(captioner).load_adapter(path).state_dict()
        assert all(torch.equal(loaded[k].cpu(), expected[k]) for k in expected), path
    with pytest.raises(DataError, match="holds no adapter; pass a train run dir"):
        speaker_from(captioner).load_adapter(tmp_path)

"""The assembly of a run's models: trained once into the artifact cache, reused, real-format checkpoints load as
models."""

import json
import os
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from hydra import compose, initialize_config_module

from listener_sub.assembly import Assembly
from listener_sub.cache import ArtifactCache
from listener_sub.commands.common import run_spec
from listener_sub.commands.pretrain import pretrain_summary
from listener_sub.errors import UserError
from listener_sub.game import Boards, Pool, listen
from listener_sub.models.listener import create_listener
from listener_sub.pretrain.listeners import ListenerRecipe, train_listener
from listener_sub.pretrain.progress import StepProgress
from listener_sub.rl import Trainer
from listener_sub.world import WorldConfig, render, sample_scenes

TINY = [
    "listener_train.steps=3",
    "listener_train.pool_size=256",
    "lm.train.steps=5",
    "lm.train.n_scenes=40",
    "speaker.captioner.steps=3",
    "speaker.captioner.scenes=32",
    "evaluation.boards=16",
    "device=cpu",
]


def config(tmp_path, *overrides):
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        return compose("pretrain", overrides=[*TINY, f"cache_dir={tmp_path}", *overrides])


def assembly(cfg) -> Assembly:
    return Assembly(run_spec(cfg), ArtifactCache(cfg.cache_dir), progress=False)


def test_artifacts_build_once_then_reuse(tmp_path):
    cfg = config(tmp_path)
    first = assembly(cfg)
    first.speaker()
    assert len(first.cache.built) == 3  # the speaker's CLIP, the LM, the captioning adapter
    first.listener("full")
    assert len(first.cache.built) == 3 and set(first.cache.wall_s) == {
        "lm",
        "speaker",
        "listeners",
    }  # full's CLIP is the speaker's
    again = assembly(cfg)
    again.speaker()
    again.listener("full")
    assert again.cache.built == [] and again.cache.wall_s == {}
    for override in ("listeners.full.seed=9", "listener_train.eps=1e-5", "listener_train.view_loss_rate=0.5"):
        changed = assembly(config(tmp_path, override))
        changed.listener("full")
        assert len(changed.cache.built) == 1, (
            override
        )  # every recipe setting is in the key: a changed one is a new artifact
    lm_recipe = assembly(config(tmp_path, "lm.train.max_grad_norm=0.5"))
    lm_recipe.lm_dir()
    assert len(lm_recipe.cache.built) == 1


def test_summary_has_the_promised_keys(tmp_path):
    summary, files = pretrain_summary(config(tmp_path), "all")
    assert set(files) == {"listeners.full", "listeners.gray", "speaker.vision", "lm", "speaker.captioner"}
    assert all(Path(path).exists() for path in files.values())  # built, and named by role
    assert json.loads((Path(files["lm"]).parent / "about.json").read_text())["recipe"]["steps"] == 5  # what it is
    for name in ("full", "gray"):
        assert {"acc_full_caption", "acc_color_only", "acc_no_color"} <= {
            k.split("/", 2)[2] for k in summary if k.startswith(f"listener/{name}/")
        }
        for attribute in ("color", "shape", "size", "fill", "position"):
            assert 0 <= summary[f"listener/{name}/acc_only/{attribute}"] <= 1
            assert 0.25 <= summary[f"listener/{name}/ceiling_only/{attribute}"] <= 1
    for key in (
        "truthful",
        "grammatical",
        "mention/color",
        "acc/full",
        "acc/gray",
        "sample/truthful",
        "sample/acc/gray",
    ):
        assert 0 <= summary[f"speaker/{key}"] <= 1
    assert abs(summary["corpus/mention/color"] - 0.52) < 0.05
    assert {"wall_s/listeners", "wall_s/lm", "wall_s/speaker"} <= set(summary)


def test_reward_naming_an_undefined_listener_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"\+listeners.nobody"):
        run_spec(config(tmp_path, "+reward.subtracted.nobody=1.0"))


def test_random_vit_b_32_checkpoint_loads_as_a_listener(tmp_path):
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path / "vit_b_32.pt"
    torch.save({"state_dict": clip.state_dict()}, path)
    listener = create_listener("gray", "ViT-B-32", str(path), "grayscale")
    assert torch.equal(listener.clip.visual.conv1.weight, clip.visual.conv1.weight)
    boards = Boards(
        np.arange(8).reshape(2, 4), np.array([0, 3]), Pool.build(WorldConfig(), "test", 8)
    )  # 64 px, resized to 224 inside
    probs = listen({"gray": listener}, ["a red circle.", "a small object."], boards)["gray"]
    assert probs.shape == (2, 4) and torch.allclose(probs.sum(-1), torch.ones(2))
    with pytest.raises(UserError, match="does not exist"):
        create_listener("x", "ViT-B-32", str(tmp_path / "missing.pt"))
    with pytest.raises(UserError, match="unknown open_clip model"):
        create_listener("x", "ViT-Q-99", None)


class RunsCode:
    """A pickle that would run a shell command when unpickled (never: weights-only loading refuses it)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_carries_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": RunsCode(marker)}, evil)
    with pytest.raises(UserError, match=r"listener x: .*evil\.pt is not plain weights and was refused unread"):
        create_listener("x", "ls-rn-tiny-64", str(evil))
    run = tmp_path / "run" / "checkpoints" / "step_000001"
    run.mkdir(parents=True)
    (run / "trainer.pt").write_bytes(evil.read_bytes())
    trainer = object.__new__(Trainer)  # only load() is exercised: it refuses before touching any state
    with pytest.raises(UserError, match=r"checkpoint .*step_000001 is unreadable"):
        Trainer.load(trainer, run)
    assert not marker.exists()


def test_listener_sees_through_its_perception(tmp_path):
    cfg = config(tmp_path)
    gray = assembly(cfg).listener("gray")
    scenes = sample_scenes(WorldConfig(), "test", 0, 4)
    recoloured = scenes[np.arange(4)]
    recoloured.attrs[:, 0, 0] = (recoloured.attrs[:, 0, 0] + 1) % 6
    a, b = gray.encode_images(render(scenes)), gray.encode_images(render(recoloured))
    assert torch.allclose(a, b, atol=1e-3)  # a colour-blind listener cannot tell the colours apart


def test_missing_clips_are_trained_side_by_side_then_reused(tmp_path):
    cfg = config(tmp_path, "clip_workers=2", "speaker.vision.seed=100")  # a speaker CLIP of its own
    first = assembly(cfg)
    first.build_clips()
    assert len(first.cache.built) == 3 and set(first.cache.wall_s) == {"listeners"}  # full, gray, the speaker's CLIP
    first.listener("full"), first.listener("gray"), first.vision_checkpoint()
    assert len(first.cache.built) == 3  # nothing trained twice
    again = assembly(cfg)
    again.build_clips()
    assert again.cache.built == []


def test_a_clip_trained_into_a_log_writes_plain_progress_lines(capsys):
    """Into a file (not a terminal) a CLIP's progress is whole lines, never a bar's carriage returns: the bars of CLIPs
    trained side by side would interleave in a log."""
    recipe = ListenerRecipe(steps=10, batch_size=16, pool_size=64)
    train_listener("ls-vit-tiny-64", "grayscale", WorldConfig(), recipe, seed=3, progress=True, position=1)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("CLIP seed 3 (grayscale): step ")]
    assert "\r" not in err and len(lines) == 10 and lines[-1].startswith("CLIP seed 3 (grayscale): step 10/10, loss ")


def test_a_loop_into_a_log_writes_a_line_a_tenth_and_reads_values_only_then(capsys):
    """The LM's and the captioners' loops too (`StepProgress`): into a log, whole lines at each tenth of the steps and
    the last; a value is read (a GPU tensor's read waits on the GPU) only on the steps that display it."""
    reads = []

    class Loss:
        def __init__(self, step: int) -> None:
            self.step = step

        def __float__(self) -> float:
            reads.append(self.step)
            return self.step / 100

    progress = StepProgress(25, "training LM")
    for step in progress:
        progress.show(loss=Loss(step))
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[0] == "training LM: step 2/25, loss 0.010"
    assert reads == [*range(1, 25, 2), 24] and err.splitlines()[-1] == "training LM: step 25/25, loss 0.240"
    StepProgress(5, "quiet", enabled=False).show(loss=Loss(0))
    assert capsys.readouterr().err == ""

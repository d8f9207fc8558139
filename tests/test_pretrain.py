"""Pretraining stages: cached by config, reused when present, real-format checkpoints load as models."""
import numpy as np
import open_clip
import pytest
import torch
from hydra import compose, initialize_config_module

from listener_sub.commands.pretrain import pretrain_summary
from listener_sub.errors import UserError
from listener_sub.models.listener import load_listener
from listener_sub.pretrain.stages import Pretrainer, needed_listeners
from listener_sub.world import WorldConfig, render, sample_scenes

TINY = [
    "listener_train.steps=3",
    "listener_train.pool_size=256",
    "lm.train.steps=5",
    "lm.train.n_scenes=40",
    "speaker.captioner.steps=3",
    "speaker.captioner.scenes=32",
    "eval.boards=16",
    "device=cpu",
]


def config(tmp_path, *overrides):
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        return compose("pretrain", overrides=[*TINY, f"cache_dir={tmp_path}", *overrides])


def test_stages_build_once_then_reuse(tmp_path):
    cfg = config(tmp_path)
    first = Pretrainer(cfg, progress=False)
    first.speaker()
    assert len(first.built) == 3  # the speaker's CLIP, the LM, the captioning adapter; no listener yet
    first.listener("full")
    assert len(first.built) == 4 and set(first.wall_s) == {"speaker_vision", "lm", "speaker", "listeners"}
    again = Pretrainer(cfg, progress=False)
    again.speaker()
    again.listener("full")
    assert again.built == [] and again.wall_s == {}
    other_seed = Pretrainer(config(tmp_path, "listeners.full.seed=9"), progress=False)
    other_seed.listener("full")
    assert len(other_seed.built) == 1  # a changed config is a new artifact


def test_summary_has_the_promised_keys(tmp_path):
    summary = pretrain_summary(config(tmp_path), "all")
    for name in ("full", "gray"):
        assert {"acc_full_caption", "acc_color_only", "acc_no_color"} <= {k.split("/", 2)[2] for k in summary if k.startswith(f"listener/{name}/")}
        for attribute in ("color", "shape", "size", "fill", "position"):
            assert 0 <= summary[f"listener/{name}/acc_only/{attribute}"] <= 1
            assert 0.25 <= summary[f"listener/{name}/ceiling_only/{attribute}"] <= 1
    for key in ("truthful", "grammatical", "mention/color", "acc/full", "acc/gray", "sample/truthful", "sample/acc/gray"):
        assert 0 <= summary[f"speaker/{key}"] <= 1
    assert abs(summary["corpus/mention/color"] - 0.52) < 0.05
    assert {"wall_s/listeners", "wall_s/lm", "wall_s/speaker", "wall_s/speaker_vision"} <= set(summary)


def test_reward_naming_an_undefined_listener_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"\+listeners.nobody"):
        needed_listeners(config(tmp_path, "+reward.subtracted.nobody=1.0"))


def test_random_vit_b_32_checkpoint_loads_as_a_listener(tmp_path):
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path / "vit_b_32.pt"
    torch.save({"state_dict": clip.state_dict()}, path)
    listener = load_listener("gray", "ViT-B-32", str(path), "grayscale")
    assert torch.equal(listener.clip.visual.conv1.weight, clip.visual.conv1.weight)
    scenes = sample_scenes(WorldConfig(), "test", 0, 8)
    boards = render(scenes).reshape(2, 4, 64, 64, 3)  # resized to 224 inside
    probs = listener.choose(["a red circle.", "a small object."], boards)
    assert probs.shape == (2, 4) and torch.allclose(probs.sum(-1), torch.ones(2))
    with pytest.raises(UserError, match="does not exist"):
        load_listener("x", "ViT-B-32", str(tmp_path / "missing.pt"))
    with pytest.raises(UserError, match="unknown open_clip model"):
        load_listener("x", "ViT-Q-99", None)


def test_listener_sees_through_its_perception(tmp_path):
    cfg = config(tmp_path)
    gray = Pretrainer(cfg, progress=False).listener("gray")
    scenes = sample_scenes(WorldConfig(), "test", 0, 4)
    recoloured = scenes[np.arange(4)]
    recoloured.attrs[:, 0, 0] = (recoloured.attrs[:, 0, 0] + 1) % 6
    a, b = gray.encode_images(render(scenes)), gray.encode_images(render(recoloured))
    assert torch.allclose(a, b, atol=1e-3)  # a colour-blind listener cannot tell the colours apart


def test_missing_clips_are_trained_side_by_side_then_reused(tmp_path):
    cfg = config(tmp_path, "clip_workers=2")
    first = Pretrainer(cfg, progress=False)
    first.build_clips()
    assert len(first.built) == 3 and set(first.wall_s) == {"listeners", "speaker_vision"}  # full, gray, the speaker's CLIP
    first.listener("full"), first.listener("gray"), first.vision_checkpoint()
    assert len(first.built) == 3  # nothing trained twice
    again = Pretrainer(cfg, progress=False)
    again.build_clips()
    assert again.built == []

"""The default artifacts' cache keys are pinned: a change to how a setting is spelled or typed must not orphan the
models users have already trained (nor silently retrain them)."""

import pytest
from hydra import compose, initialize_config_module

from listener_sub.commands.common import run_spec
from listener_sub.loading import assembly

CLIP = "/pinned-cache/listeners/ls-rn-tiny-64-{}/open_clip.safetensors"
DEFAULT = {  # the embedded default's models (experiment=colorblind), as the first published code keyed them
    "listeners.full": CLIP.format("3700bc407ffc9b11"),
    "listeners.gray": CLIP.format("df33872124cd0384"),
    "speaker.vision": CLIP.format("3700bc407ffc9b11"),
    "lm": "/pinned-cache/lm/gpt2-9d516d5f2e9e9d4b/model",
    "speaker.captioner": "/pinned-cache/speaker/4c174e96ad69817a/adapter/adapter.safetensors",
}


def files(*overrides: str) -> dict[str, str]:
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose("train", overrides=[*overrides, "cache_dir=/pinned-cache"])
    return assembly(cfg, run_spec(cfg, ["train"])).files()


@pytest.mark.parametrize(
    "experiment, extra",
    [
        ("colorblind", {}),
        ("two_subtracted", {"listeners.blur": CLIP.format("085e5a0e428e3e3b")}),
        ("knowledge_limited", {"listeners.no_shape": CLIP.format("0925b4d074187478")}),
    ],
)
def test_the_default_artifacts_keep_their_cache_keys(experiment, extra):
    found = files(f"experiment={experiment}")
    expected = {k: v for k, v in DEFAULT.items() if k in found} | extra
    assert found == expected


def test_a_setting_that_makes_a_model_changes_its_key():
    changed = files("listener_train.steps=999", "lm.train.lr=0.02")
    assert changed["listeners.full"] != DEFAULT["listeners.full"] and changed["lm"] != DEFAULT["lm"]
    assert changed["speaker.captioner"] != DEFAULT["speaker.captioner"]  # it reads the CLIP and the LM it is made of

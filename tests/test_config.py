"""Configs that compose: one source of defaults, groups and `_target_` plug-ins, the whole config checked first."""

from dataclasses import asdict
from pathlib import Path

import open_clip
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from listener_sub.cli import group_overrides
from listener_sub.commands.common import eval_config, run_spec, trainer_config, typed
from listener_sub.errors import UserError
from listener_sub.evaluation import EvalConfig
from listener_sub.models.listener import register_model_configs
from listener_sub.perception import Grayscale
from listener_sub.pretrain.listeners import ListenerRecipe, save_listener
from listener_sub.rewards import Reward
from listener_sub.rl import RLConfig
from listener_sub.spec import LanguageModelConfig, ListenerConfig, SpeakerConfig
from listener_sub.world import CaptionConfig, WorldConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SCHEMA_OF = {  # yaml file -> the dataclass whose defaults it extends
    "world/default.yaml": WorldConfig,
    "trainer/default.yaml": RLConfig,
    "listener/full.yaml": ListenerConfig,
    "lm/tiny_gpt2.yaml": LanguageModelConfig,
    "speaker/default.yaml": SpeakerConfig,
}


def compose_cfg(name="train", *overrides):
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        return compose(name, overrides=list(overrides))


def leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("path, schema", SCHEMA_OF.items())
def test_yaml_holds_only_what_differs_from_the_schema(path, schema):
    yaml = OmegaConf.to_container(OmegaConf.load(CONFIGS / path))
    yaml.pop("defaults")
    defaults = OmegaConf.to_container(OmegaConf.structured(schema))
    for key, value in leaves(yaml):
        default = OmegaConf.select(OmegaConf.create(defaults), key, throw_on_missing=False)
        assert isinstance(value, str) and value.startswith("${") or value != default, (
            f"{path}: {key}: {value!r} restates the default"
        )


def test_the_composed_defaults_are_the_dataclasses():
    cfg = compose_cfg()
    assert trainer_config(cfg) == RLConfig(seed=cfg.seed)
    assert eval_config(cfg) == EvalConfig()
    assert typed(WorldConfig, cfg.world, "world") == WorldConfig(seed=cfg.seed)
    assert typed(CaptionConfig, cfg.caption, "caption") == CaptionConfig()
    assert typed(ListenerRecipe, cfg.listener_train, "listener_train") == ListenerRecipe()
    spec = run_spec(cfg)
    assert spec.speaker.adapter == {
        "kind": "perceiver",
        "n_latents": 8,
        "depth": 2,
        "width": 128,
        "heads": 4,
        "mlp_ratio": 4.0,
        "dropout": 0.0,
    }
    assert spec.lm.model.prefix_len == 8 and asdict(spec.lm.train)["seed"] == cfg.seed
    assert spec.reward == Reward({"full": 1.0}, {"gray": 1.0}, 1.0, "prob")


def test_experiments_compose():
    colorblind, none, control = (
        run_spec(compose_cfg("train", f"experiment={e}")).reward for e in ("colorblind", "no_subtraction", "control")
    )
    assert none == Reward(colorblind.intended, colorblind.subtracted, 0.0, colorblind.score)  # colorblind with lam 0
    assert control.subtracted == {"full_b": 1.0} and control.intended == colorblind.intended


def test_experiments_beyond_one_subtracted_listener_compose():
    limited = run_spec(compose_cfg("train", "experiment=knowledge_limited"))
    assert limited.reward.subtracted == {"no_shape": 1.0} and limited.listeners["no_shape"].exclude == ("shape",)
    assert limited.listeners["no_shape"].perception == limited.listeners["full"].perception
    assert limited.listeners["no_shape"].seed not in {
        spec.seed for name, spec in limited.listeners.items() if name != "no_shape"
    }
    summed, dixit = (
        run_spec(compose_cfg("train", f"experiment={e}")).reward for e in ("two_subtracted", "two_subtracted_dixit")
    )
    assert summed == Reward({"full": 1.0}, {"gray": 1.0, "blur": 1.0}, 1.0, "prob")
    assert dixit == Reward({"full": 1.0}, {"gray": 1.0, "blur": 1.0}, 1.0, "dixit")


@pytest.mark.parametrize("spelling", ["speaker.adapter=mlp", "speaker/adapter=mlp", "speaker.adapter.kind=mlp"])
def test_the_adapter_is_a_group(spelling):
    spec = run_spec(compose_cfg("train", *group_overrides([spelling, "speaker.adapter.n_latents=6"])))
    assert spec.speaker.adapter == {"kind": "mlp", "n_latents": 6, "hidden": None, "dropout": 0.0}
    assert spec.lm.model.prefix_len == 6  # the LM's description length follows the prefix length


def test_a_pretrained_file_of_the_models_weights_is_accepted(tmp_path, isolated_cache):
    """(Files that cannot be the model's weights are rows of test_bad_input.py.)"""
    register_model_configs()
    save_listener(open_clip.create_model("ls-rn-tiny-64"), tmp_path / "good.safetensors")
    torch.save(
        {"state_dict": open_clip.create_model("ls-rn-tiny-64").state_dict()}, tmp_path / "rn.pt"
    )  # a pickle of plain weights
    for name in ("good.safetensors", "rn.pt"):
        assert run_spec(compose_cfg("train", f"listeners.gray.pretrained={tmp_path / name}")).listeners[
            "gray"
        ].pretrained == str(tmp_path / name)
    assert not any(isolated_cache.iterdir())


def test_a_perception_and_a_reward_of_your_own_plug_in_by_target(tmp_path, monkeypatch):
    (tmp_path / "my_game.py").write_text(
        "import torch\n"
        "from listener_sub.perception import Perception\n"
        "from listener_sub.rewards import Reward\n\n"
        "class Sepia(Perception):\n"
        "    name = 'sepia'\n"
        "    def __init__(self, strength: float = 1.0):\n"
        "        super().__init__()\n"
        "        self.strength = strength\n"
        "    def perceive(self, images):\n"
        "        tone = torch.tensor([1.0, 0.85, 0.6]).view(1, 3, 1, 1)\n"
        "        return images.mean(1, keepdim=True) * tone * self.strength\n\n"
        "class Doubled(Reward):\n"
        "    def __call__(self, target_probs, correct, chance=None):\n"
        "        return 2 * super().__call__(target_probs, correct, chance)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = run_spec(
        compose_cfg(
            "train",
            "listeners.gray.perception={_target_:my_game.Sepia,strength:0.5}",
            "reward._target_=my_game.Doubled",
        )
    )
    sepia = spec.perceptions["gray"]
    assert type(sepia).__name__ == "Sepia" and sepia.strength == 0.5
    assert spec.listeners["gray"].perception == {
        "_target_": "my_game.Sepia",
        "strength": 0.5,
    }  # in the CLIP's cache key
    assert type(spec.reward).__name__ == "Doubled" and spec.reward.subtracted == {"gray": 1.0}
    probs = {"full": torch.tensor([0.9]), "gray": torch.tensor([0.5])}
    correct = {"full": torch.tensor([True]), "gray": torch.tensor([True])}
    assert spec.reward(probs, correct, chance=0.25).item() == pytest.approx(2 * (0.9 - (0.5 - 0.25)))
    assert isinstance(run_spec(compose_cfg("train")).perceptions["gray"], Grayscale)


def test_model_names_are_checked_without_importing_open_clip_yet_agree_with_it():
    import open_clip

    from listener_sub.models.listener import known_models, register_model_configs

    register_model_configs()
    assert (
        set(known_models()) == set(open_clip.list_models())
        and "ViT-B-32" in known_models()
        and "ls-rn-tiny-64" in known_models()
    )


def test_overrides_apply_on_top_of_a_runs_saved_config(tmp_path):
    from listener_sub.loading import from_run

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("reward: {lam: 1.0, score: prob}\ncommand: train\nthreads: null\n")
    own = OmegaConf.create({"command": "eval", "threads": 2})
    cfg = from_run(own, tmp_path, ["command", "threads"], ["reward.lam=0.5", "~reward.score", "threads=2"])
    assert OmegaConf.to_container(cfg) == {"reward": {"lam": 0.5}, "command": "eval", "threads": 2}
    for bad, message in [
        (["~reward.nope"], "no such key"),
        (["reward.lamb=1"], "lamb"),
        (["experiment/x=y"], "where config groups are already resolved"),
    ]:
        with pytest.raises(UserError, match=message):
            from_run(own, tmp_path, ["command"], bad)


def test_the_colour_vision_deficiency_experiments_compose():
    for experiment, name, kind in (("deuteranope", "deutan", "deutan"), ("tritanope", "tritan", "tritan")):
        spec = run_spec(compose_cfg("train", f"experiment={experiment}"))
        assert spec.reward == Reward({"full": 1.0}, {name: 1.0}, 1.0, "prob") and spec.players == ["full", name]
        seen = spec.perceptions[name]
        assert (seen.name, seen.kind, seen.severity) == ("cvd", kind, 1.0)
        assert spec.listeners[name].seed not in {spec.listeners["full"].seed, 2, 5}  # its own CLIP, not gray's

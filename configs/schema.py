"""The config groups' schemas, registered in Hydra's ConfigStore: the library's own dataclasses, so a yaml file's
defaults are the library's and a Hydra config becomes the objects the library takes without a translation.

Groups and the ConfigStore entries the yaml files extend (`defaults: [base_..., _self_]`): world/base_world
(WorldConfig), data/base_data (DataConfig), caption/default (CaptionConfig), game/default (GameConfig),
evaluation/default (EvalConfig), listener_train/default (ListenerRecipe), listener/base_listener (ListenerConfig),
lm/base_lm (LanguageModelConfig), speaker/base_speaker (SpeakerConfig), speaker/base_vlm (VLMSpeakerConfig),
speaker/adapter/<kind> (each adapter's config
fields, from its dataclass), reward/default (a `_target_` node of `listener_sub.rewards.Reward`), trainer/base_trainer
(RLConfig).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from listener_sub.adapters import ADAPTERS
from listener_sub.data import DataConfig
from listener_sub.evaluation import EvalConfig
from listener_sub.game import GameConfig
from listener_sub.pretrain.listeners import ListenerRecipe
from listener_sub.rewards import Reward
from listener_sub.rl import RLConfig
from listener_sub.spec import LanguageModelConfig, ListenerConfig, SpeakerConfig, VLMSpeakerConfig
from listener_sub.world import CaptionConfig, WorldConfig

ADAPTER_SIZES_FROM_MODELS = ("d_vision", "d_lm")  # adapter fields filled in from the vision tower and the LM


def dataclass_node(cls: type, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A plain node of a dataclass's default field values (lists for tuples), without the fields in `drop`."""
    values = dataclasses.asdict(cls()) if all(f.default is not MISSING for f in dataclasses.fields(cls)) else {}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k not in drop}


def adapter_node(kind: str) -> dict[str, Any]:
    """speaker/adapter/<kind>: the kind and the adapter config's fields except the sizes the models fill in."""
    return {"kind": kind, **dataclass_node(ADAPTERS[kind][1], ADAPTER_SIZES_FROM_MODELS)}


def reward_node() -> dict[str, Any]:
    """reward/default: a `_target_` node of Reward with its default settings (the experiment names the listeners)."""
    defaults = {
        f.name: MISSING
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        else (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        for f in dataclasses.fields(Reward)
    }
    return {"_target_": f"{Reward.__module__}.{Reward.__qualname__}", **defaults}


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(group="world", name="base_world", node=WorldConfig)
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(group="caption", name="default", node=CaptionConfig)
    cs.store(group="game", name="default", node=GameConfig)
    cs.store(group="evaluation", name="default", node=EvalConfig)
    cs.store(group="listener_train", name="default", node=ListenerRecipe)
    cs.store(group="listener", name="base_listener", node=ListenerConfig)
    cs.store(group="lm", name="base_lm", node=LanguageModelConfig)
    cs.store(group="speaker", name="base_speaker", node=SpeakerConfig)
    cs.store(group="speaker", name="base_vlm", node=VLMSpeakerConfig)
    for kind in ADAPTERS:
        cs.store(group="speaker/adapter", name=kind, node=adapter_node(kind))
    cs.store(group="reward", name="default", node=reward_node())
    cs.store(group="trainer", name="base_trainer", node=RLConfig)

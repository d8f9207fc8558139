"""Config schemas, registered in Hydra's ConfigStore: the library's dataclasses and factory signatures are the defaults.

Groups and the ConfigStore entries the yaml files extend (`defaults: [base_..., _self_]`):
world/base_world (WorldConfig), data/base_data (DataConfig), caption/default (CaptionConfig), game/default (`create_game`'s settings),
evaluation/default (EvalConfig), listener_train/default (ListenerRecipe), listener/base_listener (ListenerConfig),
lm/base_lm (LMNodeConfig), speaker/base_speaker (SpeakerConfig), speaker/adapter/<kind> (each adapter's config
fields, from its dataclass), reward/default (a `_target_` node of `listener_sub.rewards.Reward`), trainer/base_trainer (RLConfig).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from listener_sub.adapters import ADAPTERS
from listener_sub.data import DataConfig
from listener_sub.evaluation import EvalConfig
from listener_sub.game import create_game
from listener_sub.models.lm import LMConfig
from listener_sub.pretrain.listeners import ListenerRecipe
from listener_sub.pretrain.lm import LMRecipe
from listener_sub.pretrain.speaker import CaptionerRecipe
from listener_sub.rerank import RerankConfig
from listener_sub.rewards import Reward
from listener_sub.rl import RLConfig
from listener_sub.world import CaptionConfig, WorldConfig

ADAPTER_SIZES_FROM_MODELS = ("d_vision", "d_lm")  # adapter fields filled in from the vision tower and the LM


@dataclass
class KnowledgeConfig:
    exclude: list[str] = field(
        default_factory=list
    )  # attributes whose words never appear in the listener's training captions


@dataclass
class ListenerConfig:
    """A listener: any open_clip model + pretrained (tag or file; null: trained locally on the world) + perception."""

    model: str = "ls-rn-tiny-64"  # any open_clip model name (the package's small configs are registered too)
    pretrained: Optional[str] = None  # open_clip tag or local checkpoint file; null: trained locally (cached)
    perception: Any = "full"  # a name (full | grayscale | blur | lowres | crop), {name: ..., params} or {_target_: your.Perception, ...}
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    seed: int = 0  # initialisation and data order when trained locally
    finetune: bool = (
        False  # with pretrained: fine-tune it through its perception on the pretraining data (listener_train.*)
    )


@dataclass
class VisionConfig:
    """The speaker's own CLIP, whose image tower it sees through."""

    model: str = "ls-rn-tiny-64"  # any open_clip model name
    pretrained: Optional[str] = None  # tag or local checkpoint; null: trained locally like a full-colour listener
    seed: int = (
        1  # of that local training; 1 = listeners.full's seed: the speaker sees through the intended listener's CLIP
    )


@dataclass
class SpeakerConfig:
    """The speaker: frozen CLIP vision tower -> trainable adapter (speaker/adapter=perceiver|mlp) -> frozen LM."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    adapter: Any = (
        None  # the speaker/adapter group (speaker/adapter=perceiver|mlp): kind + that adapter's config fields
    )
    checkpoint: Optional[str] = None  # captioning adapter (safetensors); null: trained locally by `captioner`
    captioner: CaptionerRecipe = field(default_factory=CaptionerRecipe)
    decode: str = "greedy"  # evaluation captions: greedy | rerank (best of speaker.rerank.n samples by the game's reward; `listener-sub eval`)
    rerank: RerankConfig = field(default_factory=RerankConfig)


@dataclass
class LMNodeConfig:
    """The speaker's LM: name = any HF causal LM name or local directory; null: the small GPT-2 below, trained locally."""

    name: Optional[str] = None
    model: LMConfig = field(default_factory=LMConfig)
    train: LMRecipe = field(default_factory=LMRecipe)


def signature_schema(name: str, function: Any, extra: list[tuple[str, Any, Any]] = ()) -> type:
    """A dataclass of a function's defaulted keyword settings (type hints and defaults from its signature), plus `extra` fields."""
    defaulted = [p for p in inspect.signature(function).parameters.values() if p.default is not inspect.Parameter.empty]
    fields = [(p.name, eval(p.annotation, function.__globals__), field(default=p.default)) for p in defaulted]  # noqa: S307 (our own annotations)
    return dataclasses.make_dataclass(name, [*fields, *extra])


GameConfig = signature_schema("GameConfig", create_game, [("listeners", Optional[list[str]], field(default=None))])


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
    cs.store(group="lm", name="base_lm", node=LMNodeConfig)
    cs.store(group="speaker", name="base_speaker", node=SpeakerConfig)
    for kind in ADAPTERS:
        cs.store(group="speaker/adapter", name=kind, node=adapter_node(kind))
    cs.store(group="reward", name="default", node=reward_node())
    cs.store(group="trainer", name="base_trainer", node=RLConfig)

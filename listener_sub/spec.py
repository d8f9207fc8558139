"""What decides a run's players and game: the settings of each player as the library takes them -- the very
dataclasses Hydra composes the `listener`, `speaker` and `lm` config groups from (`configs/schema.py` stores them) --
and `RunSpec`, every setting of a run together with the plug-ins built from them (perceptions, the reward).

    full = ListenerConfig(model="ViT-B-32", pretrained="openai")
    gray = ListenerConfig(model="ViT-B-32", pretrained="openai", perception="grayscale")
    speaker = SpeakerConfig(vision=VisionConfig("ViT-B-32", "openai"), adapter={"kind": "perceiver"})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from listener_sub.data import DataConfig
from listener_sub.game import GameConfig
from listener_sub.models.lm import LMConfig
from listener_sub.models.vlm import VLMConfig
from listener_sub.perception import Perception
from listener_sub.pretrain.listeners import ListenerRecipe
from listener_sub.pretrain.lm import LMRecipe
from listener_sub.pretrain.speaker import CaptionerRecipe
from listener_sub.pretrain.vlm import VLMRecipe
from listener_sub.rerank import DECODES, RerankConfig
from listener_sub.rewards import Reward
from listener_sub.world import CaptionConfig, WorldConfig


@dataclass
class KnowledgeConfig:
    """What a locally trained listener never learns."""

    exclude: list[str] = field(default_factory=list)  # attributes whose words never appear in its training captions


@dataclass
class ListenerConfig:
    """A listener: any open_clip model + its weights (a tag or file; null: trained locally) + what it perceives."""

    model: str = "ls-rn-tiny-64"  # any open_clip model name (the package's small configs are registered too)
    pretrained: Optional[str] = None  # open_clip tag or local checkpoint file; null: trained locally (cached)
    # a built-in by name (full | grayscale | blur | lowres | crop | cvd), {name: ..., params} or {_target_: ...}
    perception: Any = "full"
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    seed: int = 0  # initialisation and data order when trained locally
    finetune: bool = False  # with pretrained: fine-tune it through its perception on the pretraining data

    def __post_init__(self) -> None:
        if self.finetune and not self.pretrained:
            raise ValueError("finetune=true needs pretrained (a tag or checkpoint to start from)")

    @property
    def trained_locally(self) -> bool:
        """Whether its CLIP comes out of the listener recipe (trained from scratch, or fine-tuned from `pretrained`)."""
        return not self.pretrained or self.finetune

    @property
    def exclude(self) -> tuple[str, ...]:
        return tuple(self.knowledge.exclude)


@dataclass
class VisionConfig:
    """The speaker's own CLIP, whose image tower it sees through."""

    model: str = "ls-rn-tiny-64"  # any open_clip model name
    pretrained: Optional[str] = None  # tag or local checkpoint; null: trained locally like a full-colour listener
    seed: int = 1  # of that local training; 1 = listeners.full's: the speaker sees through the intended listener's CLIP


@dataclass
class SpeakerConfig:
    """The speaker: frozen CLIP vision tower -> trainable adapter (speaker/adapter=perceiver|mlp) -> frozen LM."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    adapter: Any = None  # the speaker/adapter group: kind + that adapter's config fields (d_vision, d_lm: the models')
    checkpoint: Optional[str] = None  # the captioning adapter (safetensors); null: trained locally by `captioner`
    captioner: CaptionerRecipe = field(default_factory=CaptionerRecipe)
    decode: str = "greedy"  # evaluation captions: greedy | rerank (the best of rerank.n samples by the game's reward)
    rerank: RerankConfig = field(default_factory=RerankConfig)

    def __post_init__(self) -> None:
        if self.decode not in DECODES:
            raise ValueError(f"decode={self.decode}: unknown decoding; choose one of: {', '.join(DECODES)}")


@dataclass
class VLMSpeakerConfig(VLMConfig):
    """speaker=vlm: a Hugging Face vision-language model with LoRA adapters in its language model
    (`listener_sub.models.vlm`); the reference policy is the model with its adapter disabled."""

    # a hub id or a save_pretrained directory with the model and its processor; null: the embedded VLM, a LLaVA of a
    # locally trained CLIP ViT and a small Llama, built and trained by captioning (`train`) and cached
    name: Optional[str] = None
    train: VLMRecipe = field(default_factory=VLMRecipe)  # how the embedded VLM is made (name: null only)
    kind: str = "vlm"  # which speaker: this node's presence, for a run's saved config
    decode: str = "greedy"  # evaluation captions: greedy | rerank (the best of rerank.n samples by the game's reward)
    rerank: RerankConfig = field(default_factory=RerankConfig)

    def __post_init__(self) -> None:
        if self.decode not in DECODES:
            raise ValueError(f"decode={self.decode}: unknown decoding; choose one of: {', '.join(DECODES)}")


@dataclass
class LanguageModelConfig:
    """The speaker's LM: any HF causal LM name or local directory; null: the small GPT-2 `model`, trained by `train`."""

    name: Optional[str] = None
    model: LMConfig = field(default_factory=LMConfig)
    train: LMRecipe = field(default_factory=LMRecipe)


@dataclass
class RunSpec:
    """Every setting that decides a run's models and game (each field named as its config node), with the plug-ins
    built from them: each listener's perception and the reward."""

    world: WorldConfig
    caption: CaptionConfig
    data: DataConfig  # the game's images (RL boards from trainer.split, evaluation boards from evaluation.split)
    listeners: dict[str, ListenerConfig]  # the listeners that play, the reward's first
    perceptions: dict[str, Perception]  # each listener's, built from its `perception` setting
    reward: Reward  # listener_sub.rewards.Reward, or a class of yours with the same interface
    game: GameConfig
    speaker: SpeakerConfig | VLMSpeakerConfig  # the adapter speaker (the paper's), or speaker=vlm
    lm: LanguageModelConfig | None  # the adapter speaker's LM (None: a VLM speaker, which brings its own)
    listener_train: ListenerRecipe = field(default_factory=ListenerRecipe)
    pretrain_data: DataConfig | None = None  # what locally trained models learn from (its pretrain split); None: data
    device: str = "auto"
    seed: int = 0  # the speaker adapter's initialisation
    clip_workers: int = 1  # missing CLIPs trained side by side in processes of one torch thread each

    @property
    def players(self) -> list[str]:
        """The names of the listeners that play, the reward's first."""
        return list(self.listeners)

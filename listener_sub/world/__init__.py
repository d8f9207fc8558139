"""The embedded world: procedurally rendered scenes, their captions, and a parser for captions."""

from listener_sub.world.grammar import (
    CaptionConfig,
    CaptionSpec,
    canonical_caption,
    caption_scenes,
    realize,
    sample_spec,
)
from listener_sub.world.parser import ParsedCaption, grammatical, parse, truthful
from listener_sub.world.render import PALETTE, render
from listener_sub.world.scene import (
    PRETRAIN_SPLIT,
    SPLITS,
    STYLES,
    SceneBatch,
    Style,
    WorldConfig,
    allowed_combos,
    sample_scenes,
)
from listener_sub.world.vocab import (
    ATTRIBUTES,
    CLEVR_VOCAB,
    VOCABULARIES,
    WORLD_VOCAB,
    Vocabulary,
    isoluminant_palette,
    luma,
)

__all__ = [
    "ATTRIBUTES",
    "CLEVR_VOCAB",
    "PALETTE",
    "PRETRAIN_SPLIT",
    "SPLITS",
    "VOCABULARIES",
    "STYLES",
    "WORLD_VOCAB",
    "CaptionConfig",
    "CaptionSpec",
    "ParsedCaption",
    "SceneBatch",
    "Style",
    "Vocabulary",
    "WorldConfig",
    "allowed_combos",
    "canonical_caption",
    "caption_scenes",
    "grammatical",
    "isoluminant_palette",
    "luma",
    "parse",
    "realize",
    "render",
    "sample_scenes",
    "sample_spec",
    "truthful",
]

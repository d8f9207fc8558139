"""What the commands share: a composed config checked and turned into the library's dataclasses before anything is
built."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from listener_sub.adapters import ADAPTERS, register_adapter
from listener_sub.adapters.io import adapter_skeleton
from listener_sub.assembly import pick_device
from listener_sub.configs.schema import ADAPTER_SIZES_FROM_MODELS
from listener_sub.data import DataConfig, DataSource
from listener_sub.errors import DataError, UserError
from listener_sub.evaluation import EvalConfig
from listener_sub.game import GameConfig, check_game
from listener_sub.models.listener import checkpoint_problem, known_models
from listener_sub.models.lm import DESC_ORDER, check_lm, lm_width
from listener_sub.models.speaker import meta_vision_tower
from listener_sub.models.vlm import check_vlm
from listener_sub.perception import PERCEPTIONS, Perception, make_perception
from listener_sub.pretrain.listeners import ListenerRecipe
from listener_sub.pretrain.vlm import check_recipe
from listener_sub.rerank import RerankConfig
from listener_sub.rl import RLConfig
from listener_sub.runs import adapter_file
from listener_sub.spec import LanguageModelConfig, ListenerConfig, RunSpec, SpeakerConfig, VLMSpeakerConfig
from listener_sub.world import CaptionConfig, WorldConfig


def typed(cls: type, node: Any, key: str) -> Any:
    """A config node as an instance of its dataclass (defaults filled in, types and ranges checked, tuples as
    tuples)."""
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), plain(node)))
        for f in dataclasses.fields(obj):
            if isinstance(f.default, tuple) and isinstance(getattr(obj, f.name), list):
                setattr(obj, f.name, tuple(getattr(obj, f.name)))
        return obj
    except (OmegaConfBaseException, ValueError, TypeError) as error:
        message = " ".join(str(error).split("\n")[0].split())
        where = f"{key}.{error.full_key}" if getattr(error, "full_key", None) else key
        raise UserError(f"{where}: {message} (fix the {key}.* settings)") from None


def plain(node: Any) -> Any:
    """A config value as plain Python."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def without(node: Any, key: str) -> dict[str, Any]:
    """A config node as a plain dict (interpolations resolved), one key left out (a node checked on its own)."""
    return {k: v for k, v in plain(node).items() if k != key}


def build_perception(node: Any, key: str) -> tuple[Perception, Any]:
    """(the perception, the plain config it came from): a built-in by name or {name: ...}, or any Perception by
    `_target_`."""
    spec = plain(node)
    if isinstance(spec, dict) and "_target_" in spec:
        try:
            perception = hydra.utils.instantiate(spec)
        except InstantiationException as error:
            raise UserError(f"{key}: cannot build {spec['_target_']} ({error.__cause__ or error})") from None
        if not isinstance(perception, Perception):
            raise UserError(f"{key}: {spec['_target_']} is not a listener_sub.perception.Perception subclass")
        return perception, spec
    try:
        return make_perception(spec), spec
    except ValueError as error:
        raise UserError(
            f"{key}: {error}; or plug in your own with {key}._target_=your_module.YourPerception "
            f"(built-ins: {', '.join(PERCEPTIONS)})"
        ) from None


def build_reward(node: Any) -> Any:
    """The reward object of the `reward` node (`_target_`: listener_sub.rewards.Reward or your own class)."""
    try:
        reward = hydra.utils.instantiate(node, _convert_="all")
    except InstantiationException as error:
        raise UserError(f"reward: {error.__cause__ or error} (fix the reward.* settings)") from None
    for attribute in ("listeners", "intended", "subtracted", "gap"):
        if not hasattr(reward, attribute):
            raise UserError(
                f"reward: {type(reward).__name__} has no `{attribute}`; a reward class needs listeners, intended, "
                "subtracted, __call__ and gap"
            )
    return reward


def adapter_settings(node: Any) -> dict[str, Any]:
    """The speaker.adapter node checked against its kind's config dataclass: {kind, fields...}."""
    settings = dict(plain(node))
    kind = settings.pop("kind", None)
    if isinstance(kind, str) and kind not in ADAPTERS and "." in kind:  # your own adapter class, by its import path
        try:
            cls = hydra.utils.get_class(kind)
            register_adapter(cls, cls.config_class)
        except (ImportError, AttributeError, ValueError) as error:
            raise UserError(
                f"speaker.adapter.kind: cannot use {kind} as an adapter ({error}); it needs kind, uses_tokens and "
                "config_class"
            ) from None
        kind = cls.kind
    if kind not in ADAPTERS:
        raise UserError(
            f"speaker.adapter: unknown adapter kind {kind!r}; choose one with speaker/adapter={'|'.join(ADAPTERS)}"
        )
    valid = [
        f for f in ADAPTERS[kind][1].__dataclass_fields__ if f not in ADAPTER_SIZES_FROM_MODELS
    ]  # d_vision, d_lm: from the models
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise UserError(
            f"speaker.adapter: the {kind} adapter has no setting(s) {', '.join(unknown)} "
            f"(its settings: {', '.join(valid)}); "
            f"switch adapters with speaker/adapter={'|'.join(ADAPTERS)}"
        )
    typed(ADAPTERS[kind][1], settings, "speaker.adapter")
    return {"kind": kind, **settings}


def players(cfg: DictConfig, reward: Any) -> list[str]:
    """The listeners that play: game.listeners, else the reward's (intended first); each must be defined."""
    names = list(cfg.game.get("listeners") or dict.fromkeys(reward.listeners))
    for name in [*names, *reward.listeners]:
        if name not in cfg.listeners:
            raise UserError(
                f"listener {name!r} plays (reward or game.listeners) but is not defined; define it with "
                f"+listeners.{name}={{model: ..., perception: ...}} or use one of: {', '.join(cfg.listeners)}"
            )
    return names


def check_open_clip(models: Iterable[tuple[str, str, str | None]]) -> None:
    """(config key, open_clip model name, pretrained) of each CLIP: a known name, and a pretrained file that exists."""
    known = set(known_models())
    for key, model, pretrained in models:
        if model not in known and not model.startswith("hf-hub:"):
            raise UserError(
                f"{key}.model: unknown open_clip model {model!r}; use one of open_clip.list_models() "
                "(e.g. ViT-B-32, ls-rn-tiny-64)"
            )
        if pretrained and ("/" in pretrained or Path(pretrained).suffix):
            if not Path(pretrained).expanduser().exists():
                raise UserError(
                    f"{key}.pretrained: {pretrained} does not exist; pass an open_clip tag or an existing checkpoint "
                    "file"
                )
            problem = None if model.startswith("hf-hub:") else checkpoint_problem(model, pretrained)
            if problem:
                raise UserError(f"{key}.pretrained: {problem}; pass a checkpoint of {key}.model={model}")


def data_config(node: Any, key: str) -> DataConfig | None:
    """A data node (or null) as a DataConfig, checked."""
    return None if node is None else typed(DataConfig, node, key)


def run_spec(cfg: DictConfig, splits: Iterable[str] = ()) -> RunSpec:
    """The run's RunSpec, every setting checked first: a bad choice is one UserError naming the key, before any model
    is built.

    splits: the game data's splits the command draws boards from besides the evaluation's (train: trainer.split).
    """
    reward = build_reward(cfg.reward)
    game = typed(GameConfig, cfg.game, "game")
    names = players(cfg, reward)
    try:
        check_game(names, reward, **game.settings())
    except ValueError as error:
        raise UserError(f"game: {error} (fix the game.* or reward.* settings)") from None
    listeners, perceptions = {}, {}
    for name in names:
        key = f"listeners.{name}"
        perceptions[name], perception = build_perception(
            cfg.listeners[name].get("perception", "full"), f"{key}.perception"
        )
        listeners[name] = typed(ListenerConfig, without(cfg.listeners[name], "perception"), key)
        listeners[name].perception = perception
    if cfg.speaker.get("kind") == "vlm":
        speaker, lm = vlm_speaker_config(cfg), None  # a VLM brings its own language model
    else:
        lm = typed(LanguageModelConfig, cfg.lm, "lm")
        speaker = adapter_speaker_config(cfg, lm)
    device = str(cfg.get("device", "auto"))
    pick_device(device)
    clips = [(f"listeners.{n}", c.model, c.pretrained) for n, c in listeners.items()]
    if isinstance(speaker, SpeakerConfig):
        clips.append(("speaker.vision", speaker.vision.model, speaker.vision.pretrained))
    check_open_clip(clips)
    spec = RunSpec(
        world=typed(WorldConfig, cfg.world, "world"),
        caption=typed(CaptionConfig, cfg.caption, "caption"),
        data=data_config(cfg.get("data", {}), "data"),  # a run config without `data` played the embedded world
        listeners=listeners,
        perceptions=perceptions,
        reward=reward,
        game=game,
        speaker=speaker,
        lm=lm,
        listener_train=typed(ListenerRecipe, cfg.listener_train, "listener_train"),
        pretrain_data=data_config(cfg.get("pretrain_data"), "pretrain_data"),
        device=device,
        seed=int(cfg.seed),
        clip_workers=int(cfg.get("clip_workers", 1)),
    )
    check_data(spec, eval_config(cfg), splits)
    if isinstance(speaker, SpeakerConfig) and speaker.checkpoint:
        check_adapter(Path(speaker.checkpoint), spec, "speaker.checkpoint")
    return spec


def adapter_speaker_config(cfg: DictConfig, lm: LanguageModelConfig) -> SpeakerConfig:
    """The adapter speaker's node (with its LM's) checked: the adapter's settings, the captioning adapter's file, the
    LM's name or the prefix the locally trained LM reads."""
    speaker = typed(SpeakerConfig, without(cfg.speaker, "adapter"), "speaker")
    speaker.adapter = adapter_settings(cfg.speaker.adapter)
    if speaker.checkpoint:
        if not Path(speaker.checkpoint).expanduser().exists():
            raise UserError(f"speaker.checkpoint: {speaker.checkpoint} does not exist; fix the path or set it to null")
        speaker.checkpoint = str(adapter_file(speaker.checkpoint, "speaker.checkpoint"))
    if lm.name:
        check_lm(str(lm.name))
    elif lm.model.prefix_len < len(DESC_ORDER) + 1:  # the LM trained here reads one object's words and a separator
        raise UserError(
            f"lm.model.prefix_len={lm.model.prefix_len} (speaker.adapter.n_latents) is shorter than one object's "
            f"description (up to {len(DESC_ORDER) + 1} tokens); use speaker.adapter.n_latents >= {len(DESC_ORDER) + 1}"
        )
    return speaker


def vlm_speaker_config(cfg: DictConfig) -> VLMSpeakerConfig:
    """The VLM speaker's node checked from the model's config and processor alone (`check_vlm`): a known model type,
    an image token, the LoRA target modules, room for the caption."""
    adapter_only = [key for key in ("captioner", "checkpoint", "adapter", "vision") if key in cfg.speaker]
    if adapter_only:
        raise UserError(
            f"speaker.{adapter_only[0]} is a setting of the adapter speaker; a VLM speaker (speaker=vlm) has no "
            "captioning warm-up or separate vision tower: drop it, or train the adapter speaker"
        )
    speaker = typed(VLMSpeakerConfig, cfg.speaker, "speaker")
    if speaker.name:
        problem = check_vlm(speaker, trainer_config(cfg).max_new_tokens)
    else:
        problem = check_recipe(speaker.train, speaker.target_modules)
    if problem:
        raise UserError(problem)
    return speaker


def check_adapter(path: Path, spec: RunSpec, key: str) -> None:
    """UserError unless the adapter saved at `path` is intact, reads the width of this run's vision features and writes
    the width of its LM's inputs: from the files' headers and the models built on the meta device; nothing is loaded."""
    try:
        adapter = adapter_skeleton(path)
    except DataError as error:
        raise UserError(f"{key}: {error}") from None
    if spec.speaker.vision.model.startswith(
        "hf-hub:"
    ):  # its config is on the hub: the speaker checks the adapter on load
        return
    d_vision = meta_vision_tower(spec.speaker.vision.model).width_for(adapter.uses_tokens)
    d_lm = lm_width(str(spec.lm.name)) if spec.lm.name else spec.lm.model.n_embd
    if (adapter.config.d_vision, adapter.config.d_lm) != (d_vision, d_lm):
        lm = f"lm.name={spec.lm.name}" if spec.lm.name else "the locally trained LM (lm.model.n_embd)"
        raise UserError(
            f"{key}: the {adapter.kind} adapter {path} maps width {adapter.config.d_vision} -> "
            f"{adapter.config.d_lm}, but "
            f"speaker.vision.model={spec.speaker.vision.model} gives {d_vision} and {lm} takes {d_lm}; use it with the "
            "vision model and LM it was trained for, or pass an adapter trained for these"
        )


def check_data(spec: RunSpec, evaluation: EvalConfig, splits: Iterable[str]) -> None:
    """What the run reads of its data exists and can serve it: the splits boards come from, scene attributes where
    distractors or knowledge limits need them, captions where a model is pretrained locally. Reads no image."""
    game_data = DataSource(spec.data, spec.world)
    boards = [(game_data, split, "data") for split in splits]
    boards.append(
        (
            game_data.with_config(evaluation.data) if evaluation.data else game_data,
            evaluation.split,
            "evaluation.data" if evaluation.data else "data",
        )
    )
    for source, split, key in boards:
        source.check_split(split)
        if spec.game.distractors != "random" and not source.has_attributes:
            raise UserError(
                f"game.distractors={spec.game.distractors} needs data with scene attributes (synthetic, clevr); "
                f"{key} is {source.kind}: use game.distractors=random"
            )
        if source.kind == "synthetic" and spec.game.pool_size is None:
            raise UserError(
                "game.pool_size=null means every image of a folder; the embedded world needs a number of scenes "
                "(e.g. game.pool_size=4096)"
            )
    trained = [f"listeners.{n}" for n in spec.players if spec.listeners[n].trained_locally]
    if isinstance(spec.speaker, SpeakerConfig):  # a VLM speaker is given whole
        trained += ["speaker.vision"] if not spec.speaker.vision.pretrained else []
        trained += ["lm"] if not spec.lm.name else []
        trained += ["speaker.captioner"] if not spec.speaker.checkpoint else []
    pretraining = DataSource(spec.pretrain_data or spec.data, spec.world)
    key = "pretrain_data" if spec.pretrain_data else "data"
    if trained:
        if not pretraining.has_captions:
            raise UserError(
                f"{', '.join(trained)} would be trained locally on {key} ({pretraining.kind}), which has no captions; "
                "set pretrain_data to data with captions (e.g. +data@pretrain_data=synthetic) or give pretrained models"
            )
        pretraining.check_split("train")
    limited = [
        f"listeners.{n}" for n in spec.players if spec.listeners[n].exclude and spec.listeners[n].trained_locally
    ]
    if limited and not pretraining.has_attributes:
        raise UserError(
            f"{', '.join(limited)}: knowledge.exclude needs pretraining data with scene attributes "
            f"(synthetic, clevr); {key} is {pretraining.kind}"
        )


def trainer_config(cfg: DictConfig) -> RLConfig:
    return typed(RLConfig, cfg.trainer, "trainer")


def eval_config(cfg: DictConfig) -> EvalConfig:
    """The evaluation node (its data, when set, checked as a DataConfig); whether its split exists is `run_spec`'s
    check."""
    settings = typed(EvalConfig, without(cfg.evaluation, "data"), "evaluation")
    if settings.boards < 1:
        raise UserError(f"evaluation.boards={settings.boards}; evaluate on at least one board")
    settings.data = data_config(cfg.evaluation.get("data"), "evaluation.data")
    return settings


def decode_config(spec: RunSpec) -> RerankConfig | None:
    """How evaluation captions are chosen: None for greedy decoding, the best-of-n settings for
    speaker.decode=rerank."""
    return spec.speaker.rerank if spec.speaker.decode == "rerank" else None

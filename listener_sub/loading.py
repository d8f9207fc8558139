"""Players from configs: the one place models are assembled for a face -- a command's composed config, a finished
train run, or the default experiment.

    import listener_sub as ls
    run = ls.load_run("outputs/train/2026-12-03/10-00-00")  # its saved config, game and trained speaker
    texts = run.players.speaker.generate(images, greedy=True).texts
    players = ls.default_players()  # the default experiment's game and captioning speaker (from the cache)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from listener_sub.assembly import Assembly, Players
from listener_sub.cache import ArtifactCache
from listener_sub.commands.common import check_adapter, eval_config, run_spec
from listener_sub.data import DataConfig
from listener_sub.errors import UserError
from listener_sub.game import Boards
from listener_sub.pretrain.lm import LMRecipe
from listener_sub.runs import CONFIG, adapter_file, run_of
from listener_sub.spec import RunSpec, SpeakerConfig

EVAL_DATA = "data"  # on a run's saved config, data=... names other data to evaluate on (the run's evaluation.data)
CAPTIONER = "captioner"  # checkpoint=captioner: the captioning adapter speaks, no RL
DEFAULT_COMMAND = "rollout"  # the command config `default_players` composes: the default experiment's game


@dataclass
class Run:
    """A finished train run: where it is, its config (saved, overrides on top), the adapter played, the players."""

    dir: Path
    config: DictConfig
    adapter: Path | None  # None: the captioning adapter
    players: Players


# where settings that a run's saved config may spell in the first config format live now (old key -> new key)
MOVED = {
    "trainer.warmup": "trainer.schedule.warmup",
    "trainer.lr_floor": "trainer.schedule.floor",
    "listener_train.warmup": "listener_train.schedule.warmup",
    "speaker.captioner.warmup": "speaker.captioner.schedule.warmup",
    "speaker.captioner.min_lr_factor": "speaker.captioner.schedule.floor",
}


def current_spelling(config: DictConfig) -> DictConfig:
    """A saved run's config with every setting where this version reads it, so a run of any config format loads,
    evaluates and resumes: the MOVED keys; lm.train.warmup, a fraction of lm.train.steps, as the steps it ran
    (lm.train.schedule.warmup); a top-level compile as trainer.compile."""
    config = copy.deepcopy(config)
    OmegaConf.set_struct(config, False)
    moves = {old: (new, OmegaConf.select(config, old)) for old, new in MOVED.items()}
    fraction = OmegaConf.select(config, "lm.train.warmup")
    if isinstance(fraction, float):  # the steps the first format's warmup fraction ran
        steps = OmegaConf.select(config, "lm.train.steps", default=LMRecipe.steps)
        moves["lm.train.warmup"] = ("lm.train.schedule.warmup", max(int(fraction * steps), 1))
    for old, (new, value) in moves.items():
        parent, _, leaf = old.rpartition(".")
        node = OmegaConf.select(config, parent)
        if OmegaConf.is_dict(node) and leaf in node:
            del node[leaf]
            OmegaConf.update(config, new, value, merge=True)
    if "compile" in config:
        OmegaConf.update(config, "trainer.compile", config.pop("compile"), merge=True)
    return config


def assembly(cfg: DictConfig, spec: RunSpec, build: bool = True) -> Assembly:
    """The Assembly of a checked config (`run_spec`) over the config's artifact cache (`cache_dir`, else the default);
    build=False: a model the cache lacks raises MissingArtifact instead of being trained."""
    return Assembly(spec, ArtifactCache(cfg.get("cache_dir"), build=build))


def players(
    cfg: DictConfig,
    spec: RunSpec,
    boards: Iterable[tuple[DataConfig | None, str]] = (),
    adapter: Path | None = None,
    key: str = "checkpoint",
) -> Players:
    """The config's game and speaker (`Assembly.players`): an `adapter` (a trained checkpoint, named `key` on the
    command line) is checked against the speaker's models before anything is built."""
    if adapter is not None and isinstance(spec.speaker, SpeakerConfig):  # a VLM's LoRA is checked as it loads
        check_adapter(adapter, spec, key)
    return assembly(cfg, spec).players(adapter, boards)


def model_speakers(played: Players, max_new_tokens: int) -> dict[str, Callable[[Boards], list[str]]]:
    """The greedy captions of `base` (the captioning adapter, RL's reference) and `trained` (the players' speaker: a
    trained adapter when one was given), as functions of the boards."""
    speaker, settings = played.speaker, {"greedy": True, "max_new_tokens": max_new_tokens}
    return {
        "base": lambda boards: (
            speaker.sample(speaker.adapt(speaker.encode(boards.target_images), played.reference), 1, **settings).texts
        ),
        "trained": lambda boards: speaker.generate(boards.target_images, **settings).texts,
    }


def load_run(run: str | Path, overrides: Sequence[str] = (), checkpoint: str | Path | None = None) -> Run:
    """A finished train run: its saved config with `overrides` (["evaluation.boards=64"]) on top, its game, and its
    speaker with a trained adapter -- `checkpoint` (a checkpoint dir, an adapter file, or "captioner": the captioning
    adapter) or, by default, the run's latest checkpoint's.

        run = load_run("outputs/train/2026-12-03_10-00-00")
        outcome = run.players.game.play(captions, boards)
    """
    run_dir, adapter = game_and_speaker(run, checkpoint)
    if run_dir is None:
        raise UserError(f"run={run} is not a train run (no {CONFIG} in it); pass the directory of a finished run")
    cfg = from_run(None, run_dir, overrides=overrides)
    spec, evaluation = run_spec(cfg), eval_config(cfg)
    played = players(cfg, spec, [(evaluation.data, evaluation.split)], adapter)
    return Run(run_dir, cfg, adapter, played)


def game_and_speaker(run: str | Path | None, checkpoint: str | Path | None) -> tuple[Path | None, Path | None]:
    """(the train run whose game is played, or None: the composed experiment's; the trained adapter that speaks, or
    None: the captioning adapter), from the command line's `run=` and `checkpoint=`.

    checkpoint: "captioner", a train run, one of its checkpoint dirs, or an adapter file; unset, the latest checkpoint
    of `run` (the captioning adapter without a run). A checkpoint inside a train run plays in that run's game unless
    `run` names another.
    """
    run_dir = None
    if run is not None:
        run_dir = run_of(run)
        if run_dir is None:
            raise UserError(f"run={run} is not a train run (no {CONFIG} in it); pass the directory of a finished run")
    if checkpoint == CAPTIONER:
        return run_dir, None
    if checkpoint is None:
        return run_dir, adapter_file(run_dir, "run") if run_dir is not None else None
    adapter = adapter_file(checkpoint, "checkpoint")
    return run_dir or run_of(adapter), adapter


def game_config(cfg: DictConfig, own: Iterable[str], run: Path | None) -> DictConfig:
    """The config of the game a playing command (eval, rollout, inspect) plays, with this command's overrides on top:
    a train run's saved config (`from_run`), or else the command's own composed experiment.

    `data=...` (with data.* settings) names the data the boards come from: it becomes the game's evaluation.data, while
    the game's own data -- and so its models -- stay as they are: evaluating on other images never trains a model on
    them.
    """
    captioner = OmegaConf.select(cfg, "speaker.checkpoint")
    if captioner and run_of(captioner) is not None:
        raise UserError(
            f"speaker.checkpoint={captioner} names the captioning adapter, but this is a train run's: play the trained "
            f"speaker with checkpoint={captioner}"
        )
    if run is not None:
        return from_run(cfg, run, own)
    overrides = list(HydraConfig.get().overrides.task)
    on_data = [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if _names_data(o)]
    if not on_data:
        return cfg
    game = compose(str(cfg.command), overrides=[o for o in overrides if o not in on_data])
    game.evaluation.data = cfg[EVAL_DATA]
    return game


def _names_data(override: Override) -> bool:
    return override.key_or_group.split(".")[0] == EVAL_DATA


def default_players(overrides: Sequence[str] = (), build: bool = True) -> Players:
    """The default experiment's game and captioning speaker (overrides on top, e.g. ["experiment=control"]), from
    the artifact cache; build=False: what the cache lacks raises MissingArtifact instead of being trained."""
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose(DEFAULT_COMMAND, overrides=list(overrides))
    return assembly(cfg, run_spec(cfg), build).players()


def from_run(
    cfg: DictConfig | None, run_dir: Path, own: Iterable[str] = (), overrides: Sequence[str] | None = None
) -> DictConfig:
    """The run's saved config with `overrides` (default: this command's command-line overrides) on top; the
    command's own keys (`own`) taken from `cfg`.

    A config-group override cannot apply to a saved config (its groups are resolved): set the values instead. The one
    exception is `data=...` (with data.* settings): other data to evaluate on, which becomes the run's evaluation.data
    (`cfg.data`, composed by this command), while the run's own data, and so its models, stay as they were.
    """
    try:
        saved = OmegaConf.load(run_dir / CONFIG)
    except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as error:
        raise UserError(
            f"{run_dir / CONFIG} is unreadable ({str(error).splitlines()[0]}); pass an intact train run"
        ) from None
    if not isinstance(saved, DictConfig):
        raise UserError(f"{run_dir / CONFIG} is not a config (a YAML mapping); pass an intact train run")
    saved = current_spelling(saved)
    own = set(own)
    overrides = list(HydraConfig.get().overrides.task) if overrides is None else list(overrides)
    groups = set(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else set()
    OmegaConf.set_struct(saved, True)
    other_data = False
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key in own or key.split(".")[0] in own:
            continue
        if _names_data(override):
            other_data = True
            continue
        if "/" in key or "@" in key or key in groups:
            raise UserError(
                f"{override.input_line}: a train run's game is its saved config, where config groups are already "
                f"resolved; set the values {override.input_line} would change, or leave out run= to play that game"
            )
        try:
            if override.is_delete():
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(saved, parent) if parent else saved
                if not OmegaConf.is_dict(node) or leaf not in node:
                    raise KeyError(key)
                with open_dict(node):
                    del node[leaf]
            else:
                OmegaConf.update(
                    saved, key, override.value(), merge=True, force_add=override.is_add() or override.is_force_add()
                )
        except (OmegaConfBaseException, KeyError) as error:
            raise UserError(
                f"{override.input_line}: {' '.join(str(error).split())} (the run's config has no such key)"
            ) from None
    OmegaConf.set_struct(saved, False)
    for key in own:
        if cfg is not None and key in cfg:
            saved[key] = cfg[key]
    if other_data:
        if cfg is None:
            raise UserError(
                "data=...: other data to evaluate a run on is a config group of a command; set evaluation.data"
            )
        saved.evaluation.data = cfg[EVAL_DATA]
    return saved

"""Assembly: a run's models and game, found in the artifact cache or built by the pretraining recipes.

Plain dataclasses in (`RunSpec`, made from a Hydra config by the command line, or by hand), objects out. A CLIP
given as `pretrained` (tag or file), an LM given by name or directory and a given adapter checkpoint are loaded
as they are; what is not given is trained by its recipe and cached under a key of every setting that made it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from listener_sub.cache import ArtifactCache
from listener_sub.data import DataConfig, DataSource, ImageSet
from listener_sub.errors import UserError
from listener_sub.files import config_key
from listener_sub.game import Game, check_images, create_game
from listener_sub.models.listener import Listener, create_listener, register_model_configs
from listener_sub.models.lm import LMConfig
from listener_sub.models.speaker import Speaker, create_speaker
from listener_sub.perception import Full, Perception
from listener_sub.pretrain.listeners import ListenerRecipe, save_listener, train_listener
from listener_sub.pretrain.lm import LMRecipe, train_lm
from listener_sub.pretrain.speaker import CaptionerRecipe, train_captioner
from listener_sub.rewards import Reward
from listener_sub.world import PRETRAIN_SPLIT, CaptionConfig, WorldConfig

CLIP_FILE = "open_clip.safetensors"  # a locally trained CLIP: its state dict, which open_clip loads by this suffix
ADAPTER_FILE = "adapter.safetensors"  # the captioning adapter (its kind and config in adapter.json beside it)


def pick_device(name: str) -> torch.device:
    """auto -> cuda when present, else cpu; cpu, cuda or cuda:N as given."""
    if name != "auto" and name != "cpu" and not (name == "cuda" or name.startswith("cuda:")):
        raise UserError(f"device={name} is not a device; use device=auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available; use device=auto or device=cpu")
    return torch.device(name)


@dataclass
class ListenerSpec:
    """One listener: an open_clip model, its weights (a tag or file; None: trained locally) and what it perceives."""

    model: str
    pretrained: str | None
    perception: Perception
    perception_config: Any = "full"  # what `perception` was built from: part of a locally trained CLIP's cache key
    exclude: tuple[str, ...] = ()  # attributes whose words never appear in its training captions
    seed: int = 0  # initialisation and data order when trained locally
    finetune: bool = False  # with pretrained: fine-tune it on the pretraining data by the listener recipe (cached)

    @property
    def trained_locally(self) -> bool:
        """Whether its CLIP comes out of the listener recipe (trained from scratch, or fine-tuned from `pretrained`)."""
        return not self.pretrained or self.finetune


@dataclass
class SpeakerSpec:
    """The speaker: its own CLIP's vision tower, an adapter and its captioning recipe (the LM is `LMSpec`)."""

    vision_model: str
    vision_pretrained: (
        str | None
    )  # tag or file; None: trained locally like a full-colour listener (the same artifact as one of the same seed)
    vision_seed: int
    adapter: dict[str, Any]  # kind + the adapter config's fields (d_vision, d_lm come from the models)
    checkpoint: str | None  # the captioning adapter (safetensors); None: trained by `captioner` and cached
    captioner: CaptionerRecipe = field(default_factory=CaptionerRecipe)


@dataclass
class LMSpec:
    """The speaker's LM: any HF causal LM name or local directory, or (name None) the small GPT-2 trained locally."""

    name: str | None
    model: LMConfig = field(default_factory=LMConfig)
    recipe: LMRecipe = field(default_factory=LMRecipe)


@dataclass
class RunSpec:
    """Everything that decides a run's models and game."""

    world: WorldConfig
    captions: CaptionConfig
    data: DataConfig  # the game's images (RL boards from trainer.split, evaluation boards from evaluation.split)
    listeners: dict[str, ListenerSpec]  # the players' listeners, by name
    players: list[str]  # the listeners that play, the reward's first
    reward: Reward
    game: dict[str, Any]  # create_game settings: n_images, distractors, choice, pool_size
    speaker: SpeakerSpec
    lm: LMSpec
    listener_recipe: ListenerRecipe = field(default_factory=ListenerRecipe)
    pretrain_data: DataConfig | None = None  # what locally trained models learn from (its pretrain split); None: `data`
    device: str = "auto"
    seed: int = 0  # the speaker adapter's initialisation
    clip_workers: int = 1  # missing CLIPs trained side by side in processes of one torch thread each


class Assembly:
    """Finds or builds every model of a RunSpec through an ArtifactCache; `cache.wall_s` times each kind built."""

    def __init__(self, spec: RunSpec, cache: ArtifactCache, progress: bool = True) -> None:
        self.spec, self.cache, self.progress = spec, cache, progress
        self.device = pick_device(spec.device)
        self._pretrain_images: dict[int, ImageSet] = {}  # the pretraining data's images by size (`pretrain_images`)
        register_model_configs()

    # ---------------------------------------------------------------- data

    def source(self, config: DataConfig | None = None) -> DataSource:
        """The run's data (or `config`) over its world, decoded images kept in the cache."""
        return DataSource(self.spec.data if config is None else config, self.spec.world, self.cache.root)

    def pretrain_images(self, size: int) -> ImageSet | None:
        """The first `size` images of the pretraining data's pretraining split (a folder's train split), loaded once per size (every artifact's key
        reads them); None for the embedded world (the recipes render its scenes themselves)."""
        source = self.source(self.spec.pretrain_data)
        if source.kind == "synthetic":
            return None
        if size not in self._pretrain_images:
            self._pretrain_images[size] = source.load(PRETRAIN_SPLIT, size)
        return self._pretrain_images[size]

    def load_data(self, boards: Iterable[tuple[DataConfig | None, str]]) -> None:
        """Load every image set the run draws boards from -- (data, None: the run's; split) -- and check that each holds
        a board: missing, unreadable or too few images fail here, before any model is built. Folders decode once; the
        embedded world, whose splits and pool size the config checks settle, renders when the game needs it."""
        for config, split in boards:
            source = self.source(config)
            if source.kind != "synthetic":
                check_images(
                    source.load(split, self.spec.game["pool_size"]),
                    self.spec.game["n_images"],
                    self.spec.game["distractors"],
                )

    @staticmethod
    def _data_key(images: ImageSet | None) -> list[str]:
        """What a locally trained model's key adds for its data: nothing for the embedded world (keys as before)."""
        return [] if images is None else [images.key]

    # ---------------------------------------------------------------- CLIPs

    def _clip_job(
        self,
        model: str,
        perception: Perception,
        perception_config: Any,
        exclude: tuple[str, ...],
        seed: int,
        init: str | None = None,
    ) -> tuple[str, dict]:
        """The cache key of a locally trained (or fine-tuned, from `init`) CLIP and the train_listener arguments that make it."""
        recipe = self.spec.listener_recipe
        data = self.pretrain_images(recipe.pool_size)
        start = [] if init is None else [init, *_file_identity(init)]
        key = f"{model}-{config_key(model, perception_config, list(exclude), seed, self.spec.world, recipe, *self._data_key(data), *start)}"
        kwargs = dict(
            model_name=model,
            perception=perception,
            world=self.spec.world,
            recipe=recipe,
            seed=seed,
            exclude=exclude,
            data=data,
            init=init,
        )
        return key, kwargs

    def _listener_job(self, name: str) -> tuple[str, dict]:
        ls = self.spec.listeners[name]
        return self._clip_job(
            ls.model, ls.perception, ls.perception_config, ls.exclude, ls.seed, ls.pretrained if ls.finetune else None
        )

    def _vision_job(self) -> tuple[str, dict]:
        sp = self.spec.speaker
        return self._clip_job(sp.vision_model, Full(), "full", (), sp.vision_seed)

    def _clip(self, kind: str, job: tuple[str, dict]) -> str:
        key, kwargs = job
        build = lambda tmp: save_listener(train_listener(progress=self.progress, **kwargs), tmp)  # noqa: E731
        return str(self.cache.get_or_build(kind, key, CLIP_FILE, build))

    def build_clips(self) -> None:
        """Train every missing CLIP of the run, `clip_workers` at a time in processes of one torch thread each.

        Tiny CLIPs use two cores better side by side than one after another on two threads each. The kinds'
        wall times then overlap; the run's total pretraining time is the real one.
        """
        jobs = [
            ("listeners", *self._listener_job(name))
            for name in self.spec.players
            if self.spec.listeners[name].trained_locally
        ]
        if not self.spec.speaker.vision_pretrained:
            jobs.append(("listeners", *self._vision_job()))  # the full listener's own CLIP when their seeds agree
        missing = {
            key: (kind, kwargs) for kind, key, kwargs in jobs if not self.cache.has(kind, key, CLIP_FILE)
        }  # one job per key
        workers = min(self.spec.clip_workers, len(missing))
        if workers < 2:
            return  # built one at a time, on first use
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = []
            for position, (key, (kind, kwargs)) in enumerate(missing.items()):
                path = self.cache.path(kind, key, CLIP_FILE)
                futures.append(
                    (kind, path, pool.submit(_train_clip, self.cache.root, kind, key, kwargs, self.progress, position))
                )
            for kind, path, future in futures:
                seconds = future.result()
                if seconds is not None:
                    self.cache.record(kind, str(path), seconds)

    def listener_checkpoint(self, name: str) -> str:
        """The listener's CLIP checkpoint: `pretrained` as given, else trained (or fine-tuned) locally and cached."""
        ls = self.spec.listeners[name]
        return self._clip("listeners", self._listener_job(name)) if ls.trained_locally else str(ls.pretrained)

    def listener(self, name: str) -> Listener:
        ls = self.spec.listeners[name]
        return create_listener(name, ls.model, self.listener_checkpoint(name), ls.perception, self.device)

    def vision_checkpoint(self) -> str:
        sp = self.spec.speaker
        return str(sp.vision_pretrained) if sp.vision_pretrained else self._clip("listeners", self._vision_job())

    # ---------------------------------------------------------------- the game

    def game(self) -> Game:
        """The run's game with its players loaded (or built)."""
        listeners = {name: self.listener(name) for name in self.spec.players}
        return create_game(self.source(), listeners, self.spec.reward, **self.spec.game)

    # ---------------------------------------------------------------- LM

    def lm_dir(self) -> str:
        """The LM: a given HF name / directory, else the small GPT-2 trained locally and cached."""
        lm = self.spec.lm
        if lm.name:
            return str(lm.name)
        data = self.pretrain_images(lm.recipe.n_scenes)
        key = f"gpt2-{config_key(lm.model, lm.recipe, self.spec.world, self.spec.captions, *self._data_key(data))}"
        build = lambda tmp: train_lm(lm.model, self.spec.world, self.spec.captions, tmp, lm.recipe, self.progress, data)  # noqa: E731
        return str(self.cache.get_or_build("lm", key, "model", build))

    # ---------------------------------------------------------------- speaker

    def base_speaker(self) -> Speaker:
        """Vision tower + LM + a fresh adapter (no captioning training), initialised from `seed`; global RNG untouched."""
        sp = self.spec.speaker
        adapter = dict(sp.adapter)
        kind = adapter.pop("kind")
        return create_speaker(
            sp.vision_model, self.vision_checkpoint(), self.lm_dir(), kind, None, self.device, self.spec.seed, **adapter
        )

    def adapter_path(self) -> str:
        """The captioning adapter: speaker.checkpoint as given, else trained locally and cached."""
        sp = self.spec.speaker
        if sp.checkpoint:
            if not Path(sp.checkpoint).exists():
                raise UserError(f"speaker.checkpoint {sp.checkpoint} does not exist; fix the path or set it to null")
            return str(sp.checkpoint)
        recipe = sp.captioner
        data = self.pretrain_images(recipe.scenes)
        key = config_key(
            self.vision_checkpoint(), self.lm_dir(), sp.adapter, sp.captioner, self.spec.captions, *self._data_key(data)
        )

        def build(tmp: Path) -> None:
            speaker = self.base_speaker()
            images = (
                data if data is not None else self.source(self.spec.pretrain_data).load(PRETRAIN_SPLIT, recipe.scenes)
            )
            captions = images.caption_texts(self.spec.captions, recipe.per_scene, recipe.seed)
            train_captioner(speaker, images.images, captions, recipe, self.progress)
            tmp.mkdir()
            speaker.save_adapter(tmp / ADAPTER_FILE)

        return str(self.cache.get_or_build("speaker", key, "adapter", build) / ADAPTER_FILE)

    def speaker(self, adapter: str | Path | None = None) -> Speaker:
        """The speaker with the captioning adapter, or with the adapter saved at `adapter` (a trained checkpoint)."""
        speaker = self.base_speaker()
        speaker.load_adapter(adapter or self.adapter_path())
        return speaker.to(self.device)


def _file_identity(path: str) -> list[Any]:
    """A pretrained file's size and modification time (a changed file is a new artifact); nothing for a tag."""
    file = Path(path).expanduser()
    if not file.is_file():
        return []
    stat = file.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _train_clip(root: Path, kind: str, key: str, kwargs: dict, progress: bool, position: int) -> float | None:
    """Train one CLIP into the cache at `root` on one torch thread (a worker process); returns its wall seconds, or None
    when another process built it meanwhile."""
    torch.set_num_threads(1)
    register_model_configs()
    cache = ArtifactCache(root)
    cache.get_or_build(
        kind,
        key,
        CLIP_FILE,
        lambda tmp: save_listener(train_listener(progress=progress, position=position, **kwargs), tmp),
    )
    return cache.wall_s.get(kind)

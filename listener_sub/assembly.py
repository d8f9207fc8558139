"""Assembly: a run's models and game, found in the artifact cache or built by the pretraining recipes.

Plain dataclasses in (`RunSpec`, made from a Hydra config by the command line, or by hand), objects out. A CLIP
given as `pretrained` (tag or file), an LM given by name or directory and a given adapter checkpoint are loaded
as they are; what is not given is trained by its recipe and cached under a key of every setting that made it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from listener_sub.cache import ArtifactCache
from listener_sub.data import DataConfig, DataSource, ImageSet
from listener_sub.errors import UserError
from listener_sub.files import config_key, to_plain
from listener_sub.game import Game, check_images, create_game
from listener_sub.models.listener import Listener, create_listener, register_model_configs
from listener_sub.models.speaker import Speaker, create_speaker
from listener_sub.models.vlm import VLMConfig, VLMSpeaker, create_vlm_speaker
from listener_sub.perception import Full, Perception
from listener_sub.pretrain.listeners import save_listener, train_listener
from listener_sub.pretrain.lm import train_lm
from listener_sub.pretrain.speaker import train_captioner
from listener_sub.pretrain.vlm import build_llava, train_vlm_captioner, vlm_tokenizer
from listener_sub.spec import RunSpec, SpeakerConfig, VLMSpeakerConfig
from listener_sub.world import PRETRAIN_SPLIT, WORLD_VOCAB

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
        """The first `size` images of the pretraining data's pretraining split (a folder's train split), loaded once per
        size (every artifact's key reads them); None for the embedded world (the recipes render its scenes
        themselves)."""
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
                    source.load(split, self.spec.game.pool_size),
                    self.spec.game.n_images,
                    self.spec.game.distractors,
                )

    @staticmethod
    def _data_key(images: ImageSet | None) -> list[str]:
        """What a locally trained model's key adds for its data: nothing for the embedded world, so its models' keys
        are those of its settings alone."""
        return [] if images is None else [images.key]

    # ---------------------------------------------------------------- what is trained locally, and where it lives

    def _clip_artifact(
        self, model: str, perception: Any, exclude: tuple[str, ...], seed: int, init: str | None = None
    ) -> Artifact:
        """A locally trained (or fine-tuned, from `init`) CLIP: its key covers every setting that makes it."""
        recipe = self.spec.listener_train
        data = self.pretrain_images(recipe.pool_size)
        start = [] if init is None else [init, *_file_identity(init)]
        settings = (model, perception, list(exclude), seed, self.spec.world, recipe, *self._data_key(data), *start)
        about = {"model": model, "perception": perception, "exclude": list(exclude), "seed": seed, "init": init}
        return Artifact("listeners", f"{model}-{config_key(*settings)}", CLIP_FILE, about | _recipe_about(recipe, data))

    def _listener_artifact(self, name: str) -> Artifact:
        ls = self.spec.listeners[name]
        return self._clip_artifact(ls.model, ls.perception, ls.exclude, ls.seed, ls.pretrained if ls.finetune else None)

    def _vision_artifact(self) -> Artifact:
        """The speaker's CLIP, trained like a full-colour listener (the same artifact as one of the same seed)."""
        sp = self.spec.speaker
        return self._clip_artifact(sp.vision.model, "full", (), sp.vision.seed)

    def _lm_artifact(self) -> Artifact:
        lm = self.spec.lm
        data = self.pretrain_images(lm.train.n_scenes)
        key = f"gpt2-{config_key(lm.model, lm.train, self.spec.world, self.spec.caption, *self._data_key(data))}"
        return Artifact("lm", key, "model", {"model": to_plain(lm.model)} | _recipe_about(lm.train, data))

    def _vlm_vision_artifact(self) -> Artifact:
        """The embedded VLM's CLIP ViT, trained like a full-colour listener."""
        recipe = self.spec.speaker.train
        return self._clip_artifact(recipe.vision_model, "full", (), recipe.vision_seed)

    def _vlm_artifact(self, vision: str) -> Artifact:
        sp = self.spec.speaker
        data = self.pretrain_images(sp.train.scenes)
        settings = (vision, sp.train, sp.prompt, self.spec.caption, self.spec.world, *self._data_key(data))
        about = {"vision": vision, "prompt": sp.prompt}
        return Artifact("vlm", f"llava-{config_key(*settings)}", "model", about | _recipe_about(sp.train, data))

    def _captioner_artifact(self, vision: str, lm_dir: str) -> Artifact:
        sp = self.spec.speaker
        data = self.pretrain_images(sp.captioner.scenes)
        settings = (vision, lm_dir, sp.adapter, sp.captioner, self.spec.caption, *self._data_key(data))
        about = {"vision": vision, "lm": lm_dir, "adapter": sp.adapter}
        return Artifact("speaker", config_key(*settings), "adapter", about | _recipe_about(sp.captioner, data))

    def files(self) -> dict[str, str]:
        """Where each of the run's models is, by role (listeners.<name>, speaker.vision, lm, speaker.captioner): a given
        tag, name or file as given; a locally trained one at its place in the cache, built or not.

            files = Assembly(spec, ArtifactCache()).files()
            full = create_listener("full", "ls-rn-tiny-64", files["listeners.full"])
        """
        files = {}
        for name, ls in self.spec.listeners.items():
            local = ls.trained_locally
            files[f"listeners.{name}"] = self._path(self._listener_artifact(name)) if local else str(ls.pretrained)
        sp = self.spec.speaker
        if isinstance(sp, VLMSpeakerConfig):
            if sp.name:
                return files | {"speaker": str(sp.name)}
            vision = self._path(self._vlm_vision_artifact())
            return files | {"speaker.vision": vision, "speaker": self._path(self._vlm_artifact(vision))}
        files["speaker.vision"] = str(sp.vision.pretrained or self._path(self._vision_artifact()))
        files["lm"] = str(self.spec.lm.name or self._path(self._lm_artifact()))
        captioner = self._captioner_artifact(files["speaker.vision"], files["lm"])
        files["speaker.captioner"] = str(sp.checkpoint or Path(self._path(captioner)) / ADAPTER_FILE)
        return files

    def _path(self, artifact: Artifact) -> str:
        return str(self.cache.path(artifact.kind, artifact.key, artifact.name))

    # ---------------------------------------------------------------- CLIPs

    def _clip(self, artifact: Artifact, perception: Perception) -> str:
        kwargs = _clip_kwargs(self, artifact, perception)
        build = lambda tmp: save_listener(train_listener(progress=self.progress, **kwargs), tmp)  # noqa: E731
        return str(self.cache.get_or_build(artifact.kind, artifact.key, artifact.name, build, artifact.about))

    def _clips(self) -> list[tuple[Artifact, Perception]]:
        """Every CLIP of the run trained locally, with the perception it is trained through."""
        clips = [
            (self._listener_artifact(name), self.spec.perceptions[name])
            for name, ls in self.spec.listeners.items()
            if ls.trained_locally
        ]
        speaker = self.spec.speaker
        if isinstance(speaker, SpeakerConfig) and not speaker.vision.pretrained:
            clips.append((self._vision_artifact(), Full()))  # the full listener's own CLIP when their seeds agree
        if isinstance(speaker, VLMSpeakerConfig) and not speaker.name:
            clips.append((self._vlm_vision_artifact(), Full()))
        return clips

    def build_clips(self) -> None:
        """Train every missing CLIP of the run, `clip_workers` at a time in processes of one torch thread each (where
        this process can start them: `can_spawn`).

        Tiny CLIPs use two cores better side by side than one after another on two threads each. The kinds'
        wall times then overlap; the run's total pretraining time is the real one.
        """
        missing = {a.key: (a, p) for a, p in self._clips() if not self.cache.has(a.kind, a.key, a.name)}  # one a key
        workers = min(self.spec.clip_workers, len(missing))
        if workers < 2 or not self.cache.build or not can_spawn():
            return  # built one at a time on first use; a cache that may not build says what it lacks then
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = []
            for position, (artifact, perception) in enumerate(missing.values()):
                kwargs = _clip_kwargs(self, artifact, perception)
                job = (self.cache.root, artifact, kwargs, self.progress, position)
                futures.append((artifact, pool.submit(_train_clip, *job)))
            for artifact, future in futures:
                seconds = future.result()
                if seconds is not None:
                    self.cache.record(artifact.kind, self._path(artifact), seconds)

    def listener_checkpoint(self, name: str) -> str:
        """The listener's CLIP checkpoint: `pretrained` as given, else trained (or fine-tuned) locally and cached."""
        ls = self.spec.listeners[name]
        if not ls.trained_locally:
            return str(ls.pretrained)
        return self._clip(self._listener_artifact(name), self.spec.perceptions[name])

    def listener(self, name: str) -> Listener:
        ls = self.spec.listeners[name]
        return create_listener(name, ls.model, self.listener_checkpoint(name), self.spec.perceptions[name], self.device)

    def vision_checkpoint(self) -> str:
        sp = self.spec.speaker
        return str(sp.vision.pretrained) if sp.vision.pretrained else self._clip(self._vision_artifact(), Full())

    # ---------------------------------------------------------------- the game

    def game(self) -> Game:
        """The run's game with its players loaded (or built)."""
        listeners = {name: self.listener(name) for name in self.spec.players}
        return create_game(self.source(), listeners, self.spec.reward, **self.spec.game.settings())

    # ---------------------------------------------------------------- LM

    def lm_dir(self) -> str:
        """The LM: a given HF name / directory, else the small GPT-2 trained locally and cached."""
        lm = self.spec.lm
        if lm.name:
            return str(lm.name)
        artifact = self._lm_artifact()
        data = self.pretrain_images(lm.train.n_scenes)
        build = lambda tmp: train_lm(lm.model, self.spec.world, self.spec.caption, tmp, lm.train, self.progress, data)  # noqa: E731
        return str(self.cache.get_or_build(artifact.kind, artifact.key, artifact.name, build, artifact.about))

    # ---------------------------------------------------------------- speaker

    def base_speaker(self) -> Speaker:
        """Vision tower + LM + a fresh adapter (no captioning training), initialised from `seed`; the global RNG is
        left as it was."""
        sp = self.spec.speaker
        adapter = dict(sp.adapter)
        kind = adapter.pop("kind")
        return create_speaker(
            sp.vision.model, self.vision_checkpoint(), self.lm_dir(), kind, None, self.device, self.spec.seed, **adapter
        )

    def _captioning_images(self, scenes: int) -> ImageSet:
        """The images a captioner learns from: the pretraining data's, or the embedded world's, rendered here."""
        images = self.pretrain_images(scenes)
        return self.source(self.spec.pretrain_data).load(PRETRAIN_SPLIT, scenes) if images is None else images

    def adapter_path(self) -> str:
        """The captioning adapter: speaker.checkpoint as given, else trained locally and cached."""
        sp = self.spec.speaker
        if sp.checkpoint:
            if not Path(sp.checkpoint).exists():
                raise UserError(f"speaker.checkpoint {sp.checkpoint} does not exist; fix the path or set it to null")
            return str(sp.checkpoint)
        recipe = sp.captioner
        artifact = self._captioner_artifact(self.vision_checkpoint(), self.lm_dir())

        def build(tmp: Path) -> None:
            speaker = self.base_speaker()
            images = self._captioning_images(recipe.scenes)
            captions = images.caption_texts(self.spec.caption, recipe.per_scene, recipe.seed)
            train_captioner(speaker, images.images, captions, recipe, self.progress)
            tmp.mkdir()
            speaker.save_adapter(tmp / ADAPTER_FILE)

        folder = self.cache.get_or_build(artifact.kind, artifact.key, artifact.name, build, artifact.about)
        return str(folder / ADAPTER_FILE)

    def vlm_dir(self) -> str:
        """The VLM speaker's model: speaker.name as given, else the embedded LLaVA built, trained and cached."""
        sp = self.spec.speaker
        if sp.name:
            return str(sp.name)
        recipe = sp.train
        vision = self._clip(self._vlm_vision_artifact(), Full())
        artifact = self._vlm_artifact(vision)

        def build(tmp: Path) -> None:
            import open_clip

            from listener_sub.models.vision import clip_preprocess

            clip, _, _ = open_clip.create_model_and_transforms(recipe.vision_model, pretrained=vision)
            _, mean, std = clip_preprocess(clip)
            images = self._captioning_images(recipe.scenes)
            captions = images.caption_texts(self.spec.caption, recipe.per_scene, recipe.seed)
            vocab = WORLD_VOCAB if images.scenes is None else images.scenes.vocab
            tokenizer = vlm_tokenizer([c for per_image in captions for c in per_image], sp.prompt, vocab)
            model, processor = build_llava(clip.visual.eval(), mean, std, tokenizer, recipe)
            train_vlm_captioner(model, processor, images.images, captions, recipe, sp.prompt, self.progress)
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)

        return str(self.cache.get_or_build(artifact.kind, artifact.key, artifact.name, build, artifact.about))

    def speaker(self) -> Speaker | VLMSpeaker:
        """The captioning speaker: vision tower + LM + the captioning adapter; or the VLM with fresh LoRA adapters."""
        sp = self.spec.speaker
        if isinstance(sp, VLMSpeakerConfig):
            lora = {f.name: getattr(sp, f.name) for f in fields(VLMConfig) if f.name not in ("name", "prompt")}
            return create_vlm_speaker(self.vlm_dir(), sp.prompt, self.device, seed=self.spec.seed, **lora)
        speaker = self.base_speaker()
        speaker.load_adapter(self.adapter_path())
        return speaker.to(self.device)

    # ---------------------------------------------------------------- everything a face plays with

    def players(
        self, adapter: str | Path | None = None, boards: Iterable[tuple[DataConfig | None, str]] = ()
    ) -> Players:
        """The run's game and speaker, every model found in the cache or built (`ArtifactCache(build=False)`: a missing
        one raises MissingArtifact instead).

        boards: the (data, None: the game's; split) pairs boards will come from, loaded and checked first, so bad data
        fails before any model is built. adapter: a trained adapter file the speaker plays with; the captioning
        adapter stays the `reference`.

            players = Assembly(spec, ArtifactCache()).players(boards=[(None, "test")])
            outcome = players.game.play(players.speaker.generate(images).texts, boards)
        """
        self.load_data(boards)
        self.build_clips()
        game = self.game()
        speaker = self.speaker()
        reference = speaker.reference_policy()
        if adapter is not None:
            speaker.load_adapter(adapter)
        return Players(game, speaker, reference)


@dataclass
class Artifact:
    """A model trained locally: where it lives in the cache (kind/key/name) and what it is (`about`, kept beside it)."""

    kind: str  # listeners | lm | speaker
    key: str  # a hash of every setting that makes it
    name: str  # its file or folder in the key's directory
    about: dict[str, Any]  # what it is: model, perception, seed, recipe, the data it learnt from


@dataclass
class Players:
    """What every face plays with: the game (listeners, reward, data) and the speaker."""

    game: Game
    speaker: Speaker | VLMSpeaker
    reference: (
        nn.Module
    )  # the speaker before RL and RL's reference policy: the captioning adapter; a VLM's disabled LoRA


def can_spawn() -> bool:
    """Whether this process can start spawned workers: not inside a worker of joblib's loky backend (a launcher's run
    side by side with others), whose start method a spawned child cannot take up. There the run's CLIPs are trained one
    after another; its sweep already keeps the cores busy with other runs."""
    return multiprocessing.get_start_method(allow_none=True) in (None, *multiprocessing.get_all_start_methods())


def _file_identity(path: str) -> list[Any]:
    """A pretrained file's size and modification time (a changed file is a new artifact); nothing for a tag."""
    file = Path(path).expanduser()
    if not file.is_file():
        return []
    stat = file.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _recipe_about(recipe: Any, data: ImageSet | None) -> dict[str, Any]:
    """What an artifact's record says of its recipe and the data it learnt from."""
    return {"recipe": to_plain(recipe), "data": "the embedded world" if data is None else data.name}


def _clip_kwargs(assembly: Assembly, artifact: Artifact, perception: Perception) -> dict[str, Any]:
    """The train_listener arguments that make a CLIP artifact."""
    about, recipe = artifact.about, assembly.spec.listener_train
    return dict(
        model_name=about["model"],
        perception=perception,
        world=assembly.spec.world,
        recipe=recipe,
        seed=about["seed"],
        exclude=tuple(about["exclude"]),
        data=assembly.pretrain_images(recipe.pool_size),
        init=about["init"],
        device=assembly.device,
    )


def _train_clip(root: Path, artifact: Artifact, kwargs: dict, progress: bool, position: int) -> float | None:
    """Train one CLIP into the cache at `root` on one torch thread (a worker process); returns its wall seconds, or
    None when another process built it meanwhile."""
    torch.set_num_threads(1)
    register_model_configs()
    cache = ArtifactCache(root)
    build = lambda tmp: save_listener(train_listener(progress=progress, position=position, **kwargs), tmp)  # noqa: E731
    cache.get_or_build(artifact.kind, artifact.key, artifact.name, build, artifact.about)
    return cache.wall_s.get(artifact.kind)

"""Pretraining stages (listeners, the speaker's vision, the LM, the captioning adapter), cached by config."""
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import hydra
import open_clip
import torch
from omegaconf import DictConfig, OmegaConf

from listener_sub.cache import atomic_path, cache_root, config_key
from listener_sub.data import SyntheticCaptions
from listener_sub.errors import UserError
from listener_sub.models.listener import Listener, load_listener, register_model_configs
from listener_sub.models.lm import LMConfig, load_lm
from listener_sub.models.speaker import Speaker
from listener_sub.pretrain.listeners import save_listener, train_listener
from listener_sub.pretrain.lm import train_lm
from listener_sub.pretrain.speaker import train_captioner
from listener_sub.world import CaptionConfig, WorldConfig

RECIPE_VERSION = 2  # bump when a training recipe changes, so cached artifacts are rebuilt
STAGES = ("listeners", "lm", "speaker", "all")


def pick_device(name: str) -> torch.device:
    """auto -> cuda when present, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available; use device=auto or device=cpu")
    return torch.device(name)


def needed_listeners(cfg: DictConfig) -> list[str]:
    """Listener names the experiment's reward uses (intended first), each defined under `listeners`."""
    names = [*cfg.reward.get("intended", {}), *cfg.reward.get("subtracted", {})]
    for name in names:
        if name not in cfg.listeners:
            raise UserError(
                f"the reward names listener {name!r}, which is not defined; define it with +listeners.{name}={{...}} "
                f"or use one of: {', '.join(cfg.listeners)}"
            )
    return list(dict.fromkeys(names))


def _plain(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)


class Pretrainer:
    """Finds or builds every pretrained artifact of a run config; records wall time per stage."""

    def __init__(self, cfg: DictConfig, progress: bool = True):
        self.cfg = cfg
        self.root = cache_root(cfg.get("cache_dir"))
        self.device = pick_device(cfg.get("device", "auto"))
        self.world: WorldConfig = hydra.utils.instantiate(cfg.world)
        self.captions: CaptionConfig = hydra.utils.instantiate(cfg.caption)
        self.progress = progress
        self.wall_s: dict[str, float] = {}
        self.built: list[str] = []  # artifacts trained by this process (the rest came from the cache)
        register_model_configs()

    def _build(self, stage: str, path: Path, build) -> Path:
        """Run build(tmp_path) into the cache unless `path` exists; time it under `stage`."""
        if not path.exists():
            start = time.perf_counter()
            with atomic_path(path) as tmp:
                build(tmp)
            self.wall_s[stage] = self.wall_s.get(stage, 0.0) + time.perf_counter() - start
            self.built.append(str(path))
        return path

    # ---------------------------------------------------------------- CLIPs

    def _clip_job(self, model: str, perception, exclude: list[str], seed: int) -> tuple[Path, dict]:
        """Where a locally trained CLIP is cached, and the train_listener arguments that make it."""
        recipe = _plain(self.cfg.listener_train)
        key = config_key(model, perception, exclude, seed, self.world, recipe, RECIPE_VERSION)
        path = self.root / "clips" / f"{model}-{key}" / "open_clip.pt"
        kwargs = dict(model_name=model, perception_spec=perception, world=self.world, seed=seed, exclude=exclude, **recipe)
        return path, kwargs

    def _clip(self, stage: str, model: str, pretrained: str | None, perception, exclude: list[str], seed: int) -> str:
        """A CLIP checkpoint: `pretrained` as given, else trained locally on the world and cached."""
        if pretrained:
            return str(pretrained)
        path, kwargs = self._clip_job(model, perception, exclude, seed)
        return str(self._build(stage, path, lambda tmp: save_listener(train_listener(progress=self.progress, **kwargs), tmp)))

    def _clip_jobs(self) -> list[tuple[str, Path, dict]]:
        """(stage, path, kwargs) of every CLIP the experiment needs that is neither given nor cached."""
        jobs = []
        for name in needed_listeners(self.cfg):
            lc = self.cfg.listeners[name]
            if not lc.pretrained:
                jobs.append(("listeners", *self._clip_job(lc.model, _plain_value(lc.perception), list(lc.knowledge.exclude), lc.seed)))
        vc = self.cfg.speaker.vision
        if not vc.pretrained:
            jobs.append(("speaker_vision", *self._clip_job(vc.model, "full", [], vc.seed)))
        return [job for job in dict((str(job[1]), job) for job in jobs).values() if not job[1].exists()]

    def build_clips(self) -> None:
        """Train every missing CLIP of the experiment, `clip_workers` at a time in processes of one torch thread each.

        Tiny CLIPs use two cores better side by side than one after another on two threads each. The
        stages' wall times then overlap; the run's total pretraining time is the real one.
        """
        jobs = self._clip_jobs()
        workers = min(int(self.cfg.get("clip_workers", 1)), len(jobs))
        if workers < 2:
            return  # built one at a time, on first use
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_train_clip, path, kwargs, self.progress, i) for i, (_, path, kwargs) in enumerate(jobs)]
            for (stage, path, _), future in zip(jobs, futures):
                self.wall_s[stage] = self.wall_s.get(stage, 0.0) + future.result()
                self.built.append(str(path))

    def listener_checkpoint(self, name: str) -> str:
        lc = self.cfg.listeners[name]
        return self._clip("listeners", lc.model, lc.pretrained, _plain_value(lc.perception), list(lc.knowledge.exclude), lc.seed)

    def listener(self, name: str) -> Listener:
        lc = self.cfg.listeners[name]
        return load_listener(name, lc.model, self.listener_checkpoint(name), _plain_value(lc.perception), self.device)

    def vision_checkpoint(self) -> str:
        vc = self.cfg.speaker.vision
        return self._clip("speaker_vision", vc.model, vc.pretrained, "full", [], vc.seed)

    # ---------------------------------------------------------------- LM

    def lm_dir(self) -> str:
        """The LM: a given HF name / directory, else the small GPT-2 trained locally and cached."""
        lc = self.cfg.lm
        if lc.name:
            return str(lc.name)
        model_cfg = LMConfig(**_plain(lc.model))
        recipe = _plain(lc.train)
        key = config_key(model_cfg, recipe, self.world, self.captions, RECIPE_VERSION)
        path = self.root / "lm" / f"gpt2-{key}"

        def build(tmp: Path) -> None:
            train_lm(model_cfg, self.world, self.captions, tmp, progress=self.progress, **recipe)

        return str(self._build("lm", path, build))

    # ---------------------------------------------------------------- speaker

    def base_speaker(self) -> Speaker:
        """Vision tower + LM + a freshly initialised adapter (no captioning training)."""
        vc, ac = self.cfg.speaker.vision, _plain(self.cfg.speaker.adapter)
        clip, _, _ = open_clip.create_model_and_transforms(vc.model, pretrained=self.vision_checkpoint())
        lm, tokenizer = load_lm(self.lm_dir(), self.device)
        torch.manual_seed(self.cfg.seed)
        return Speaker.build(clip, lm, tokenizer, **ac).to(self.device)

    def adapter_path(self) -> str:
        """The captioning adapter: speaker.checkpoint as given, else trained locally and cached."""
        sc = self.cfg.speaker
        if sc.checkpoint:
            if not Path(sc.checkpoint).exists():
                raise UserError(f"speaker.checkpoint {sc.checkpoint} does not exist; fix the path or set it to null")
            return str(sc.checkpoint)
        recipe = _plain(sc.captioner)
        key = config_key(self.vision_checkpoint(), self.lm_dir(), _plain(sc.adapter), recipe, self.captions, RECIPE_VERSION)
        path = self.root / "speaker" / key / "adapter.safetensors"

        def build(tmp: Path) -> None:
            speaker = self.base_speaker()
            data = SyntheticCaptions(self.world, self.captions, "train", recipe["scenes"], recipe["per_scene"], recipe["seed"], self.root)
            train_captioner(
                speaker,
                data.images,
                data.captions,
                steps=recipe["steps"],
                batch_size=recipe["batch_size"],
                lr=recipe["lr"],
                seed=recipe["seed"],
                warmup=recipe["warmup"],
                progress=self.progress,
            )
            tmp.mkdir()
            speaker.save_adapter(tmp / path.name)

        return str(self._build("speaker", path.parent, build) / path.name)

    def speaker(self) -> Speaker:
        """The captioning speaker (base speaker with the captioning adapter loaded)."""
        path = self.adapter_path()
        speaker = self.base_speaker()
        speaker.load_adapter(path)
        return speaker.to(self.device)


def _train_clip(path: Path, kwargs: dict, progress: bool, position: int) -> float:
    """Train one CLIP into `path` atomically on one torch thread (a worker process); returns its wall seconds."""
    torch.set_num_threads(1)
    register_model_configs()
    start = time.perf_counter()
    with atomic_path(path) as tmp:
        save_listener(train_listener(progress=progress, position=position, **kwargs), tmp)
    return time.perf_counter() - start


def _plain_value(value):
    """A config value as plain Python (a perception may be a name or a mapping)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


"""A listener: a frozen open_clip CLIP that sees board images through its perception and reads captions.

`create_listener(name, model, pretrained, perception)` loads any open_clip model name with a pretrained tag or a
local checkpoint file. The game core (`listener_sub.game.listen`) turns a listener's features into P(image | caption).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from listener_sub.errors import UserError
from listener_sub.images import Images, model_input
from listener_sub.models.checkpoints import checkpoint_shapes, module_shapes, shape_problem
from listener_sub.models.precision import autocast
from listener_sub.models.vision import clip_preprocess
from listener_sub.perception import Perception, make_perception, perception_key

if TYPE_CHECKING:
    import open_clip  # noqa: F401

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"  # small CLIP configs shipped with the package
TEXT_CHUNK = 1024  # captions per text-encoder pass
TEXT_MEMO = 1 << 16  # text features a listener remembers (captions repeat from step to step); past it, it starts afresh
_registered: set[Path] = set()


def known_models() -> list[str]:
    """The model names open_clip.list_models() gives once ours are registered: the stems of its model-config JSONs
    and ours, read without importing open_clip (checked against it by a test)."""
    spec = importlib.util.find_spec("open_clip")
    builtin = Path(spec.origin).parent / "model_configs"
    return sorted({p.stem for folder in (builtin, MODEL_CONFIG_DIR) for p in folder.glob("*.json")})


def register_model_configs(path: str | Path = MODEL_CONFIG_DIR) -> list[str]:
    """Register a directory (or file) of open_clip model-config JSONs once; returns the names it holds."""
    import open_clip  # imported on use: it takes seconds, and a config is checked before any model is needed

    path = Path(path).resolve()
    if path not in _registered:
        open_clip.add_model_config(path)
        _registered.add(path)
    files = [path] if path.is_file() else sorted(path.glob("*.json"))
    return [f.stem for f in files]


def clip_skeleton(model: str) -> nn.Module:
    """The open_clip model `model` built on the meta device: its tensors' names and shapes, no memory, no weights."""
    import open_clip

    register_model_configs()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns that a model built without weights is random
    try:
        with torch.device("meta"):  # device="meta" too, or open_clip moves it to the CPU
            return open_clip.create_model(model, pretrained=None, device="meta")
    finally:
        logging.disable(previous)


def checkpoint_problem(model: str, path: str | Path) -> str | None:
    """Why the file at `path` cannot hold `model`'s weights (None when it can): not a checkpoint, truncated, or tensors
    of another architecture. Cheap: the file's data is not read and the model is built on the meta device."""
    try:
        found = checkpoint_shapes(Path(path).expanduser())
    except (ValueError, OSError, UnicodeDecodeError, KeyError, TypeError) as error:
        return f"{path} is not a readable checkpoint: {error}"
    detail = shape_problem(module_shapes(clip_skeleton(model)), found, tolerate="positional_embedding")
    return None if detail is None else f"{path} is not a {model} checkpoint ({detail})"


class Listener(nn.Module):
    """A frozen CLIP + its tokenizer + a perception: unit-norm features of what it sees and reads, and its logit
    scale."""

    def __init__(self, name: str, clip: nn.Module, tokenizer: Any, perception: Perception, model_name: str = ""):
        super().__init__()
        self.name, self.model_name = name, model_name
        self.clip, self.tokenizer, self.perception = clip, tokenizer, perception
        self.image_size, mean, std = clip_preprocess(clip)  # (H, W)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self._texts: dict[str, torch.Tensor] = {}  # caption -> (D,) its unit-norm text features, as encoded once
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Listener:
        """Listeners stay frozen in eval mode."""
        return super().train(False)

    def _apply(self, fn: Any, recurse: bool = True) -> Listener:
        self.forget_texts()  # remembered features stay where the weights were
        return super()._apply(fn, recurse)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def view(self, images: Images) -> torch.Tensor:
        """What the listener's CLIP gets: perceived, resized and normalised (B, 3, S, S)."""
        return model_input(images, self.image_size, self.mean, self.std, self.perception)

    @torch.no_grad()
    def encode_images(self, images: Images) -> torch.Tensor:
        """(B, D) unit-norm image features."""
        with autocast(self.device):
            return F.normalize(self.clip.encode_image(self.view(images)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, D) unit-norm text features. Captions not read before are encoded (TEXT_CHUNK a pass, in order of first
        appearance) and remembered, so a caption is encoded once however often it comes back; `forget_texts` empties the
        memory (the RL trainer does at each checkpoint, so a resumed run encodes exactly what the straight run did)."""
        captions = list(captions)
        new = [c for c in dict.fromkeys(captions) if c not in self._texts]
        if len(self._texts) + len(new) > TEXT_MEMO:
            self._texts.clear()
        for start in range(0, len(new), TEXT_CHUNK):
            chunk = new[start : start + TEXT_CHUNK]
            self._texts.update(zip(chunk, self.read(chunk)))
        return torch.stack([self._texts[c] for c in captions])

    def forget_texts(self) -> None:
        """Drop the remembered text features."""
        self._texts.clear()

    @torch.no_grad()
    def read(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, D) unit-norm text features of the captions, tokenized and encoded in one pass as given (nothing
        remembered)."""
        tokens = self.tokenizer(list(captions)).to(self.device)  # (B, L)
        with autocast(self.device):
            return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of what decides the listener's image features: its model, weights and perception (class and
        settings)."""
        digest = hashlib.sha256(f"{self.model_name}|{perception_key(self.perception)}".encode())
        for name, tensor in sorted(self.clip.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:32]

    @property
    def logit_scale(self) -> torch.Tensor:
        """The CLIP's learned temperature, exp(logit_scale)."""
        return self.clip.logit_scale.exp().float()


def create_listener(
    name: str,
    model: str,
    pretrained: str | None,
    perception: str | Mapping[str, Any] | Perception = "full",
    device: str | torch.device = "cpu",
) -> Listener:
    """A frozen CLIP listener from any open_clip model name + pretrained tag or local checkpoint file, seeing every
    image through `perception`.

    name: what the game and the reward call it. model: an open_clip model name (`open_clip.list_models()`, with this
    package's small configs registered, e.g. `ls-rn-tiny-64`). pretrained: an open_clip tag (`openai`), a checkpoint
    file, or None (random weights). perception: a built-in name (`full`, `grayscale`, `blur`, `lowres`, `crop`), a
    spec (`{"name": "blur", "sigma": 1.5}`) or a `Perception`. device: where the model lives.

        gray = create_listener("gray", "ViT-B-32", "openai", perception="grayscale")
        files = Assembly(spec, ArtifactCache()).files()  # a locally trained one: where its file is
        full = create_listener("full", "ls-rn-tiny-64", files["listeners.full"])
    """
    import open_clip

    register_model_configs()
    if model not in open_clip.list_models():
        raise UserError(f"unknown open_clip model {model!r} for listener {name}; see open_clip.list_models()")
    if pretrained and Path(pretrained).suffix and not Path(pretrained).exists():
        raise UserError(
            f"listener {name}: checkpoint {pretrained} does not exist; train it with `listener-sub pretrain`"
        )
    try:
        clip, _, _ = open_clip.create_model_and_transforms(model, pretrained=pretrained or None, device=device)
    except pickle.UnpicklingError as error:  # torch.load(weights_only=True) refuses a pickle that would run code
        raise UserError(
            f"listener {name}: {pretrained} is not plain weights and was refused unread ({error}); "
            "use a safetensors or weights-only checkpoint"
        ) from None
    except RuntimeError as error:  # unknown tag, or weights that do not fit the model
        raise UserError(f"listener {name}: cannot load {model} with pretrained={pretrained}: {error}") from None
    return Listener(name, clip, open_clip.get_tokenizer(model), make_perception(perception), model).to(device)

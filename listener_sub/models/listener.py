"""A listener: a frozen open_clip CLIP that picks the board image a caption describes, through its perception."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from listener_sub.errors import UserError
from listener_sub.perception import Perception, make_perception, to_float_images

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"  # small CLIP configs shipped with the package
_registered: set[Path] = set()


def register_model_configs(path: str | Path = MODEL_CONFIG_DIR) -> list[str]:
    """Register a directory (or file) of open_clip model-config JSONs once; returns the names it holds."""
    path = Path(path).resolve()
    if path not in _registered:
        open_clip.add_model_config(path)
        _registered.add(path)
    files = [path] if path.is_file() else sorted(path.glob("*.json"))
    return [f.stem for f in files]


def image_normalizer(clip: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The CLIP's own (mean, std) as (1, 3, 1, 1) tensors, for perceived float images in [0, 1]."""
    cfg = open_clip.get_model_preprocess_cfg(clip)
    mean = torch.tensor(cfg.get("mean", OPENAI_DATASET_MEAN), dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", OPENAI_DATASET_STD), dtype=torch.float32).view(1, 3, 1, 1)
    return mean, std


def as_float_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1] -> float (B, 3, H, W)."""
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        return images
    return to_float_images(images)


class Listener(nn.Module):
    """A frozen CLIP + its tokenizer + a perception; `choose` gives P(image | caption) over a board."""

    def __init__(self, name: str, clip: nn.Module, tokenizer: Any, perception: Perception, model_name: str = ""):
        super().__init__()
        self.name, self.model_name = name, model_name
        self.clip, self.tokenizer, self.perception = clip, tokenizer, perception
        mean, std = image_normalizer(clip)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.image_size = int(np.atleast_1d(clip.visual.image_size)[0])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Listener":
        """Listeners stay frozen in eval mode."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def view(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """What the listener sees: perceived, resized and normalised (B, 3, S, S)."""
        x = self.perception(as_float_images(images).to(self.device))  # (B, 3, H, W)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def encode_images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, D) unit-norm image features."""
        return F.normalize(self.clip.encode_image(self.view(images)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, D) unit-norm text features."""
        tokens = self.tokenizer(list(captions)).to(self.device)  # (B, L)
        return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)

    @torch.no_grad()
    def logits(self, text_features: torch.Tensor, board_features: torch.Tensor) -> torch.Tensor:
        """(B, D) captions x (B, N, D) boards -> (B, N) scaled cosine similarities."""
        scale = self.clip.logit_scale.exp().float()
        return scale * torch.einsum("bd,bnd->bn", text_features, board_features)

    @torch.no_grad()
    def choose(self, captions: Sequence[str], boards: np.ndarray | torch.Tensor) -> torch.Tensor:
        """P(image | caption) over each board: captions (B,), boards (B, N, ...) -> (B, N)."""
        b, n = len(captions), boards.shape[1]
        flat = boards.reshape(b * n, *boards.shape[2:])
        features = self.encode_images(flat).view(b, n, -1)  # (B, N, D)
        return self.logits(self.encode_texts(captions), features).softmax(-1)


def load_listener(
    name: str,
    model: str,
    pretrained: str | None,
    perception: str | Mapping[str, Any] = "full",
    device: str | torch.device = "cpu",
) -> Listener:
    """A listener from any open_clip model name + pretrained tag or local checkpoint file."""
    register_model_configs()
    if model not in open_clip.list_models():
        raise UserError(f"unknown open_clip model {model!r} for listener {name}; see open_clip.list_models()")
    if pretrained and Path(pretrained).suffix and not Path(pretrained).exists():
        raise UserError(f"listener {name}: checkpoint {pretrained} does not exist; train it with `listener-sub pretrain`")
    try:
        clip, _, _ = open_clip.create_model_and_transforms(model, pretrained=pretrained or None, device=device)
    except RuntimeError as error:  # unknown tag, or weights that do not fit the model
        raise UserError(f"listener {name}: cannot load {model} with pretrained={pretrained}: {error}") from None
    return Listener(name, clip, open_clip.get_tokenizer(model), make_perception(perception), model).to(device)

"""An open_clip image tower read without changing it: pooled embedding and patch tokens, input size, normalisation.

For an open_clip `VisionTransformer` the tokens are the patch tokens (class token dropped) after `ln_post` and
before `proj` (width 768 for ViT-B-32), computed by the tower's own embedding, transformer and pooling steps, so
the caller's CLIP is never switched to `output_tokens`. For a `ModifiedResNet` they are the cells of the last
feature map plus the attention pool's positional embeddings (so they carry position); the pooled embedding is
the usual CLIP image embedding in both cases.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from listener_sub.images import Images, model_input


def clip_preprocess(model: nn.Module) -> tuple[tuple[int, int], torch.Tensor, torch.Tensor]:
    """(input (H, W), mean (1, 3, 1, 1), std (1, 3, 1, 1)) of an open_clip CLIP or image tower."""
    import open_clip  # imported on use: it takes seconds
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    visual = getattr(model, "visual", model)
    size = tuple(int(s) for s in np.broadcast_to(np.atleast_1d(visual.image_size), 2))
    cfg = open_clip.get_model_preprocess_cfg(visual)
    mean = torch.tensor(cfg.get("mean", OPENAI_DATASET_MEAN), dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", OPENAI_DATASET_STD), dtype=torch.float32).view(1, 3, 1, 1)
    return size, mean, std


class VisionTower(nn.Module):
    """A frozen view of an open_clip image tower: pixels -> (pooled (B, d_pooled), tokens (B, T, d_tokens))."""

    def __init__(self, model: nn.Module) -> None:
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        super().__init__()
        visual = getattr(model, "visual", model)
        if not isinstance(visual, (VisionTransformer, ModifiedResNet)):
            raise ValueError(
                f"expected an open_clip CLIP, VisionTransformer or ModifiedResNet, got {type(visual).__name__}"
            )
        self.visual = visual
        self.resnet = isinstance(visual, ModifiedResNet)
        self.image_size, mean, std = clip_preprocess(visual)  # (H, W)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.token_dim, self.pooled_dim = self.dims()

    def width_for(self, uses_tokens: bool) -> int:
        """The width of what an adapter reads from this tower: patch tokens (`uses_tokens`) or the pooled embedding."""
        return self.token_dim if uses_tokens else self.pooled_dim

    def pixels(self, images: Images) -> torch.Tensor:
        """Images -> normalised (B, 3, H, W) at the tower's input size (`listener_sub.images.model_input`)."""
        return model_input(images, self.image_size, self.mean, self.std)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        visual = self.visual
        if self.resnet:
            maps = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(pixels)))))  # (B, C, h, w)
            tokens = maps.flatten(2).transpose(1, 2) + visual.attnpool.positional_embedding[1:].to(
                maps.dtype
            )  # (B, h*w, C)
            return visual.attnpool(maps), tokens
        x = visual.transformer(visual._embeds(pixels))  # (B, 1 + T, width): the tower's own forward, tokens kept
        pooled, tokens = visual._pool(x)  # (B, width), (B, T, width)
        return (pooled @ visual.proj if visual.proj is not None else pooled), tokens

    @torch.no_grad()
    def dims(self) -> tuple[int, int]:
        """(patch-token width, pooled-embedding width), from one dry run."""
        param = next(self.visual.parameters())
        pooled, tokens = self(torch.zeros(1, 3, *self.image_size, device=param.device, dtype=param.dtype))
        return tokens.shape[-1], pooled.shape[-1]

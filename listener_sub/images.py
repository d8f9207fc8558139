"""Image tensors: uint8 <-> float conversion, what a perception shows, and the one preprocessing of model inputs.

Every model input (a listener's CLIP, the speaker's vision tower, listener pretraining) goes through
`model_input`; every picture of what a listener sees (report, preview, env observations) through `perceived`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Images = np.ndarray | torch.Tensor  # uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1]


def to_float_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) images -> float32 (B, 3, H, W) in [0, 1]."""
    tensor = torch.as_tensor(images)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)  # (1, H, W, 3)
    if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 images of shape (B, H, W, 3) or (H, W, 3), got {tuple(tensor.shape)} {tensor.dtype}"
        )
    return tensor.permute(0, 3, 1, 2).float().div(255)  # (B, 3, H, W)


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """Float (B, 3, H, W) images in [0, 1] -> uint8 numpy (B, H, W, 3), rounded to the nearest level."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    levels = images.detach().float().clamp(0, 1).mul(255).round()  # (B, 3, H, W)
    return levels.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()  # (B, H, W, 3)


def as_float_images(images: Images) -> torch.Tensor:
    """uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1] -> float (B, 3, H, W)."""
    tensor = torch.as_tensor(images)
    if tensor.is_floating_point():
        if tensor.ndim != 4 or tensor.shape[1] != 3:
            raise ValueError(f"expected float images of shape (B, 3, H, W), got {tuple(tensor.shape)}")
        return tensor
    return to_float_images(tensor)


def to_device(images: Images, device: torch.device) -> torch.Tensor:
    """Images onto `device` as they are (uint8 travels as uint8: 4x fewer bytes); to CUDA from pinned memory, without
    blocking the host."""
    tensor = torch.as_tensor(images)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@torch.no_grad()
def perceived(perception: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) uint8 images as the perception shows them to a person, same shape."""
    flat = images.reshape(-1, *images.shape[-3:])  # (B, H, W, 3)
    return to_uint8_images(perception(to_float_images(flat))).reshape(images.shape)


def model_input(
    images: Images,
    size: Sequence[int],
    mean: torch.Tensor,
    std: torch.Tensor,
    perception: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Images -> the (B, 3, h, w) input of a vision model: perceived, resized to `size`, normalised.

    The images move to mean's device; perception (if any) sees float (B, 3, H, W) in [0, 1] at their own size;
    a different size is met by antialiased bicubic resizing (clamped to [0, 1]); mean and std are (1, 3, 1, 1).
    """
    x = as_float_images(to_device(images, mean.device)).float()  # (B, 3, H, W)
    if perception is not None:
        x = perception(x)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return (x - mean) / std  # (B, 3, h, w)

"""Draws from categorical distributions by inverse CDF, one uniform number per row.

A row's draw depends only on its own probabilities and its own number, never on the other rows of the batch: the same
random numbers give the same captions and picks whether a batch is played whole or split across ranks, and whether
it is played before or after a resume.
"""

from __future__ import annotations

import torch


def uniforms(rows: int, columns: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """(rows, columns) numbers uniform in [0, 1) from `generator`."""
    return torch.rand(rows, columns, generator=generator, device=device)


def categorical(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """(N, V) probabilities (any positive scale) and (N,) uniform numbers -> (N,) int64 draws: the first index whose
    cumulative probability exceeds uniform x the row's total (zero-probability entries are never drawn)."""
    cdf = probs.float().cumsum(-1)  # (N, V)
    threshold = (uniform.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)  # (N, 1)
    return torch.searchsorted(cdf, threshold, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)

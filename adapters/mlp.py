"""ClipCap-style MLP adapter: the pooled image embedding -> an LM soft prefix."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MLPAdapterConfig:
    """Sizes of the MLP adapter; d_vision and d_lm come from the vision tower and the LM."""

    d_vision: int = 512  # width of the pooled image embedding (input)
    d_lm: int = 768  # width of the LM input embeddings (output)
    n_latents: int = 8  # M: soft-prefix length
    hidden: int | None = None  # hidden width; None = M * d_lm // 2 (as in ClipCap)
    dropout: float = 0.0  # dropout after the hidden layer


class MLPAdapter(nn.Module):
    """Pooled embedding (B, d_vision) -> Linear, tanh, Linear -> soft prefix (B, M, d_lm)."""

    kind = "mlp"
    uses_tokens = False  # consumes the pooled image embedding, not patch tokens

    def __init__(self, cfg: MLPAdapterConfig) -> None:
        super().__init__()
        self.config = cfg
        hidden = cfg.hidden or cfg.n_latents * cfg.d_lm // 2
        self.net = nn.Sequential(
            nn.Linear(cfg.d_vision, hidden),
            nn.Tanh(),
            nn.Dropout(cfg.dropout),
            nn.Linear(hidden, cfg.n_latents * cfg.d_lm),
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if pooled.ndim != 2 or pooled.shape[-1] != self.config.d_vision:
            raise ValueError(f"expected a pooled embedding (B, {self.config.d_vision}), got {tuple(pooled.shape)}")
        return self.net(pooled).view(pooled.shape[0], self.config.n_latents, self.config.d_lm)  # (B, M, d_lm)

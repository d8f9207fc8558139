"""Perceiver-IO-style adapter: M learned latents cross-attend to vision patch tokens -> an LM soft prefix."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PerceiverAdapterConfig:
    """Sizes of the Perceiver adapter; d_vision and d_lm come from the vision tower and the LM."""

    d_vision: int = 768  # width of the vision patch tokens (input)
    d_lm: int = 768  # width of the LM input embeddings (output)
    n_latents: int = 8  # M: learned latent queries = soft-prefix length
    depth: int = 2  # blocks of [cross-attention, self-attention, MLP]
    width: int = 128  # latent width inside the adapter
    heads: int = 4  # attention heads (width must be divisible by heads)
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * width
    dropout: float = 0.0  # dropout on attention weights and residual branches


class Attention(nn.Module):
    """Multi-head attention of queries (B, Q, C) over a context (B, T, C)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"adapter width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, Q, C = x.shape
        T = context.shape[1]
        q = self.q(x).view(B, Q, self.heads, C // self.heads).transpose(1, 2)  # (B, h, Q, C/h)
        k, v = self.kv(context).split(C, dim=-1)  # 2 x (B, T, C)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, h, T, C/h)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, h, T, C/h)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)  # (B, h, Q, C/h)
        y = y.transpose(1, 2).reshape(B, Q, C)  # (B, Q, C)
        return self.resid_drop(self.out(y))


class MLP(nn.Module):
    """Two-layer GELU MLP."""

    def __init__(self, width: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(mlp_ratio * width)
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm residual block: latents <- cross-attention to tokens, self-attention, MLP."""

    def __init__(self, cfg: PerceiverAdapterConfig) -> None:
        super().__init__()
        self.ln_q = nn.LayerNorm(cfg.width)
        self.ln_kv = nn.LayerNorm(cfg.width)
        self.cross = Attention(cfg.width, cfg.heads, cfg.dropout)
        self.ln_self = nn.LayerNorm(cfg.width)
        self.self_attn = Attention(cfg.width, cfg.heads, cfg.dropout)
        self.ln_mlp = nn.LayerNorm(cfg.width)
        self.mlp = MLP(cfg.width, cfg.mlp_ratio, cfg.dropout)

    def forward(self, latents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        latents = latents + self.cross(self.ln_q(latents), self.ln_kv(tokens))  # (B, M, C)
        h = self.ln_self(latents)
        latents = latents + self.self_attn(h, h)  # (B, M, C)
        return latents + self.mlp(self.ln_mlp(latents))  # (B, M, C)


class PerceiverAdapter(nn.Module):
    """Vision patch tokens (B, T, d_vision) -> soft prefix (B, M, d_lm) through M learned latent queries."""

    kind = "perceiver"
    uses_tokens = True  # consumes patch tokens, not the pooled image embedding

    def __init__(self, cfg: PerceiverAdapterConfig) -> None:
        super().__init__()
        self.config = cfg
        self.latents = nn.Parameter(torch.randn(cfg.n_latents, cfg.width) * 0.02)  # (M, C)
        self.proj_in = nn.Linear(cfg.d_vision, cfg.width) if cfg.d_vision != cfg.width else nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.proj_out = nn.Linear(cfg.width, cfg.d_lm)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[-1] != self.config.d_vision:
            raise ValueError(f"expected tokens (B, T, {self.config.d_vision}), got {tuple(tokens.shape)}")
        tokens = self.proj_in(tokens)  # (B, T, C)
        latents = self.latents.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # (B, M, C)
        for block in self.blocks:
            latents = block(latents, tokens)  # (B, M, C)
        return self.proj_out(self.ln_f(latents))  # (B, M, d_lm)

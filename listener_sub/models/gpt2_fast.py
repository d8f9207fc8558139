"""transformers' GPT-2 computed in a handful of plain tensor ops: reading a prefix, extending it, decoding a token.

At the widths the speaker runs (the embedded LM: 2 layers of 64, 128 captions at once) the LM is overhead:
transformers' module calls, mask building and cache bookkeeping cost more than the arithmetic, and the CPU flash
attention kernel's backward is slow at these shapes. `FastGPT2` reads the LM's own weights and computes the same
function -- layer norm, fused QKV, causal attention (over a shared prefix's keys and values, repeated per caption),
the tanh GELU MLP, the tied head -- with autograd through every op, so gradients reach a soft prefix as through the
LM's forward. Decoding writes each new key and value into a buffer of the final length (`decoder`) instead of
growing a cache. `FastGPT2.fits` says which LMs it computes exactly; every other causal LM runs its own forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # GPT-2's activation, written two ways by transformers
KeysValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (N, H, S, d_head)
# per layer i: the new keys and values (N, H, T, d_head) -> that layer's keys and values so far (N, H, S, d_head)
Attend = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class FastGPT2:
    """A GPT2LMHeadModel's forward in plain tensor ops; logits cut to the first `vocab_size` entries."""

    def __init__(self, lm: nn.Module, vocab_size: int) -> None:
        cfg = lm.config
        self.body, self.head = lm.transformer, lm.lm_head.weight  # head (V', D)
        self.n_head, self.width, self.vocab_size = cfg.n_head, cfg.n_embd, vocab_size
        self.scale = (cfg.n_embd // cfg.n_head) ** -0.5 if cfg.scale_attn_weights else 1.0

    @staticmethod
    def fits(lm: nn.Module) -> bool:
        """Whether `lm` is a plain GPT2LMHeadModel this computes exactly: in eval mode (no dropout here), its
        projections transformers' own (no LoRA or other adapter layers in their place), no hook on it or its modules
        (none of their forwards runs), the default attention scaling, a tanh GELU."""
        if type(lm) is not GPT2LMHeadModel or lm.training or has_hooks(lm):
            return False
        projections = [m for b in lm.transformer.h for m in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj)]
        cfg = lm.config
        return (
            all(type(m) is Conv1D for m in projections)
            and cfg.activation_function in TANH_GELUS
            and not cfg.scale_attn_by_inverse_layer_idx
            and not cfg.reorder_and_upcast_attn
            and not cfg.add_cross_attention
        )

    def read(self, prefix: torch.Tensor, k: int) -> tuple[torch.Tensor, KeysValues]:
        """Each soft prefix (B, M, D) read once: the logits of its last position (B*k, 1, V) and its keys and values
        (B*k, H, M, d_head) per layer, both repeated for k rows (row b * k + j is prefix b)."""
        layers: KeysValues = []

        def keep(i: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            layers.append((keys, values))
            return keys, values

        x = prefix.to(self.head.dtype) + self.body.wpe.weight[: prefix.shape[1]]  # (B, M, D)
        logits = self._forward(x, 0, keep, last_only=True)  # (B, 1, V)
        repeated = [(keys.repeat_interleave(k, 0), values.repeat_interleave(k, 0)) for keys, values in layers]
        return logits.repeat_interleave(k, 0), repeated

    def extend(self, tokens: torch.Tensor, past: KeysValues) -> torch.Tensor:
        """The logits (N, T, V) of tokens (N, T) read after the positions in `past` (N, H, S, d_head per layer)."""
        start = past[0][0].shape[2]

        def append(i: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.cat([past[i][0], keys], 2), torch.cat([past[i][1], values], 2)  # (N, H, S + T, d_head)

        return self._forward(self._embed(tokens, start), start, append)

    def decoder(self, past: KeysValues, max_new_tokens: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """step(token (N,), t) -> the (N, V) logits after the t-th new token, for `decode_with_cache`: each layer's
        keys and values in a buffer of the final length (N, H, S + max_new_tokens, d_head), written in place."""
        start = past[0][0].shape[2]
        buffers = []
        for keys, values in past:
            N, H, S, d_head = keys.shape
            buffer = keys.new_empty(2, N, H, S + max_new_tokens, d_head)
            buffer[0, :, :, :S], buffer[1, :, :, :S] = keys, values
            buffers.append(buffer)

        def step(token: torch.Tensor, t: int) -> torch.Tensor:
            position = start + t

            def write(i: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                buffer = buffers[i]
                buffer[0, :, :, position], buffer[1, :, :, position] = keys[:, :, 0], values[:, :, 0]
                return buffer[0, :, :, : position + 1], buffer[1, :, :, : position + 1]  # (N, H, position + 1, d_head)

            return self._forward(self._embed(token[:, None], position), position, write)[:, 0].float()  # (N, V)

        return step

    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Token (N, T) and position embeddings, the tokens at positions start..start+T-1: (N, T, D)."""
        return self.body.wte.weight[tokens] + self.body.wpe.weight[start : start + tokens.shape[1]]

    def _forward(self, x: torch.Tensor, start: int, attend: Attend, last_only: bool = False) -> torch.Tensor:
        """The blocks, final norm and head over hidden states x (N, T, D) at positions start..start+T-1, each layer's
        keys and values so far from `attend`; the logits (N, T, V), or (N, 1, V) of the last position."""
        N, T, D = x.shape
        H = self.n_head
        causal = None
        if T > 1:  # query t (position start + t) reads keys 0..start + t
            later = torch.ones(T, start + T, dtype=torch.bool, device=x.device).triu(start + 1)  # (T, S)
            causal = torch.zeros(T, start + T, device=x.device).masked_fill(later, float("-inf"))
        for i, block in enumerate(self.body.h):
            attn, mlp = block.attn, block.mlp
            h = F.layer_norm(x, (D,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps).view(N * T, D)
            qkv = torch.addmm(attn.c_attn.bias, h, attn.c_attn.weight).view(N, T, 3, H, D // H)
            q, new_keys, new_values = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, H, T, d_head)
            keys, values = attend(i, new_keys, new_values)  # (N, H, S, d_head), S = start + T
            scores = q @ keys.transpose(-1, -2) * self.scale  # (N, H, T, S)
            if causal is not None:
                scores = scores + causal
            read = (scores.softmax(-1) @ values).transpose(1, 2).reshape(N * T, D)  # (N*T, D)
            x = x + torch.addmm(attn.c_proj.bias, read, attn.c_proj.weight).view(N, T, D)
            h = F.layer_norm(x, (D,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps).view(N * T, D)
            inner = F.gelu(torch.addmm(mlp.c_fc.bias, h, mlp.c_fc.weight), approximate="tanh")  # (N*T, 4D)
            x = x + torch.addmm(mlp.c_proj.bias, inner, mlp.c_proj.weight).view(N, T, D)
        if last_only:
            x = x[:, -1:]
        x = F.layer_norm(x, (D,), self.body.ln_f.weight, self.body.ln_f.bias, self.body.ln_f.eps)
        return x @ self.head[: self.vocab_size].T  # (N, T or 1, V)


HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def has_hooks(model: nn.Module) -> bool:
    """Whether a forward or backward hook would run in `model`'s forward: on any of its modules, or on every module."""
    hooked = any(getattr(m, hook) for m in model.modules() for hook in HOOKS)
    return hooked or any(getattr(nn.modules.module, f"_global{hook}") for hook in HOOKS)

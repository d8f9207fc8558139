"""One decoding step of a transformers GPT-2 with a static KV cache, in a handful of tensor ops.

At the widths the speaker decodes (the embedded LM: 2 layers of 64, 128 captions at once) a token step is overhead:
transformers' module calls, mask building and cache concatenation cost more than the arithmetic. `GPT2Step` reads the
same weights and computes the same function -- layer norm, fused QKV, attention over the cached positions, the tanh
GELU MLP, the tied head -- writing each new key and value into a buffer of the final length instead of growing the
cache. Every other causal LM decodes through its own forward (`GPT2Step.fits` says which).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2LMHeadModel

TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # GPT-2's activation, written two ways by transformers


class GPT2Step:
    """step(token, t) -> the (N, V) logits after the t-th new token, every row having read its M-position prefix into
    `cache` (transformers' DynamicCache of the prefix pass, N rows) and tokens 0..t-1 through earlier steps."""

    def __init__(self, lm: nn.Module, cache: Any, max_new_tokens: int, vocab_size: int) -> None:
        cfg, body = lm.config, lm.transformer
        self.n_head, self.width, self.vocab_size = cfg.n_head, cfg.n_embd, vocab_size
        self.body, self.head = body, lm.lm_head.weight  # (V', D)
        self.scale = (cfg.n_embd // cfg.n_head) ** -0.5 if cfg.scale_attn_weights else 1.0
        self.keys, self.values = [], []  # per layer (N, H, M + max_new_tokens, d_head)
        for layer in cache.layers:
            N, H, M, d_head = layer.keys.shape
            keys = layer.keys.new_empty(N, H, M + max_new_tokens, d_head)
            values = torch.empty_like(keys)
            keys[:, :, :M], values[:, :, :M] = layer.keys, layer.values
            self.keys.append(keys)
            self.values.append(values)
        self.prefix_len = M

    @staticmethod
    def fits(lm: nn.Module) -> bool:
        """Whether `lm` is a plain GPT2LMHeadModel this step computes exactly: in eval mode (the step has no dropout),
        no adapter or forward hook on it or its modules (the step calls none of their forwards), the default attention
        scaling, a tanh GELU."""
        if type(lm) is not GPT2LMHeadModel or lm.training or has_hooks(lm):
            return False
        cfg = lm.config
        return (
            cfg.activation_function in TANH_GELUS
            and not cfg.scale_attn_by_inverse_layer_idx
            and not cfg.reorder_and_upcast_attn
            and not cfg.add_cross_attention
        )

    def __call__(self, token: torch.Tensor, t: int) -> torch.Tensor:
        position = self.prefix_len + t
        N, H, D = len(token), self.n_head, self.width
        body = self.body
        x = body.wte.weight[token] + body.wpe.weight[position]  # (N, D)
        for block, keys, values in zip(body.h, self.keys, self.values):
            attn, mlp = block.attn, block.mlp
            h = F.layer_norm(x, (D,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
            q, k, v = torch.addmm(attn.c_attn.bias, h, attn.c_attn.weight).view(N, 3, H, D // H).unbind(1)  # (N, H, dh)
            keys[:, :, position], values[:, :, position] = k, v
            seen = slice(0, position + 1)
            scores = q[:, :, None] @ keys[:, :, seen].transpose(-1, -2) * self.scale  # (N, H, 1, position + 1)
            read = (scores.softmax(-1) @ values[:, :, seen]).view(N, D)  # (N, D)
            x = x + torch.addmm(attn.c_proj.bias, read, attn.c_proj.weight)
            h = F.layer_norm(x, (D,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
            inner = F.gelu(torch.addmm(mlp.c_fc.bias, h, mlp.c_fc.weight), approximate="tanh")  # (N, 4D)
            x = x + torch.addmm(mlp.c_proj.bias, inner, mlp.c_proj.weight)
        x = F.layer_norm(x, (D,), body.ln_f.weight, body.ln_f.bias, body.ln_f.eps)
        return (x @ self.head[: self.vocab_size].T).float()  # (N, V)


def has_hooks(model: nn.Module) -> bool:
    """Whether a forward hook would run in `model`'s forward: on any of its modules, or on every module."""
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    return hooked or bool(nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)

"""Mixed precision: on CUDA the frozen models (vision towers, the LM, the listeners) run under bf16 autocast."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (matmuls in bf16, parameters -- the adapter's fp32 master weights among them -- untouched);
    nothing on the CPU, where fp32 is as fast and bit-reproducible."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()

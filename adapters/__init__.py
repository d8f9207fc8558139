"""Vision-to-language adapters: the Perceiver-IO cross-attention adapter and an MLP baseline."""
from __future__ import annotations

from typing import Any

from torch import nn

from listener_sub.adapters.mlp import MLPAdapter, MLPAdapterConfig
from listener_sub.adapters.perceiver import PerceiverAdapter, PerceiverAdapterConfig

ADAPTERS: dict[str, tuple[type[nn.Module], type]] = {
    PerceiverAdapter.kind: (PerceiverAdapter, PerceiverAdapterConfig),
    MLPAdapter.kind: (MLPAdapter, MLPAdapterConfig),
}


def adapter_class(kind: str) -> type[nn.Module]:
    """The adapter class of `kind`; its `uses_tokens` says whether it reads patch tokens or the pooled embedding."""
    if kind not in ADAPTERS:
        raise ValueError(f"unknown adapter kind {kind!r}; choose one of: {', '.join(ADAPTERS)}")
    return ADAPTERS[kind][0]


def create_adapter(kind: str, **cfg: Any) -> nn.Module:
    """Build an adapter of `kind` ("perceiver" | "mlp") from its config fields."""
    cls, config_cls = adapter_class(kind), ADAPTERS[kind][1]
    try:
        config = config_cls(**cfg)
    except TypeError as err:
        raise ValueError(f"bad config for adapter {kind!r}: {err}") from err
    return cls(config)


__all__ = [
    "ADAPTERS",
    "MLPAdapter",
    "MLPAdapterConfig",
    "PerceiverAdapter",
    "PerceiverAdapterConfig",
    "adapter_class",
    "create_adapter",
]

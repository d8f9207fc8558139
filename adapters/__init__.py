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


def register_adapter(cls: type[nn.Module], config_cls: type) -> None:
    """Make an adapter of your own a choice of `create_adapter` (and of speaker/adapter once its config node is stored).

    cls: an nn.Module with class attributes `kind` (its name) and `uses_tokens` (patch tokens, or the pooled
    embedding), built as cls(config) and mapping vision features to a (B, M, d_lm) prefix. config_cls: a dataclass
    with at least d_vision, d_lm and n_latents.
    """
    missing = [f for f in ("d_vision", "d_lm", "n_latents") if f not in getattr(config_cls, "__dataclass_fields__", {})]
    if missing or not hasattr(cls, "kind") or not hasattr(cls, "uses_tokens"):
        raise ValueError(
            "an adapter needs class attributes kind and uses_tokens, and a config dataclass with d_vision, d_lm, "
            f"n_latents (missing: {missing})"
        )
    ADAPTERS[cls.kind] = (cls, config_cls)


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
    "register_adapter",
]

"""Adapters: output shapes, initialisation, the factory and which vision features each consumes."""

import pytest
import torch

from listener_sub.adapters import (
    MLPAdapter,
    MLPAdapterConfig,
    PerceiverAdapter,
    PerceiverAdapterConfig,
    adapter_class,
    create_adapter,
)


def test_perceiver_shapes_with_input_projection():
    torch.manual_seed(0)
    adapter = create_adapter("perceiver", d_vision=48, d_lm=40, n_latents=5, depth=3, width=32, heads=4)
    assert isinstance(adapter, PerceiverAdapter) and adapter.uses_tokens
    out = adapter(torch.randn(3, 17, 48))
    assert out.shape == (3, 5, 40)
    assert isinstance(adapter.proj_in, torch.nn.Linear) and len(adapter.blocks) == 3


def test_perceiver_without_projection_when_widths_match():
    adapter = PerceiverAdapter(PerceiverAdapterConfig(d_vision=32, d_lm=16, width=32, heads=2))
    assert isinstance(adapter.proj_in, torch.nn.Identity)
    assert adapter(torch.randn(2, 9, 32)).shape == (2, 8, 16)  # default M = 8


def test_perceiver_latents_init_std():
    torch.manual_seed(0)
    adapter = PerceiverAdapter(PerceiverAdapterConfig(n_latents=64, width=256))
    latents = adapter.latents.detach()
    assert latents.shape == (64, 256)
    assert abs(latents.std().item() - 0.02) < 0.001
    assert abs(latents.mean().item()) < 0.001


def test_perceiver_latents_read_the_tokens():
    """Each image gets its own prefix, and the prefix does not depend on other batch members."""
    torch.manual_seed(0)
    adapter = create_adapter("perceiver", d_vision=16, d_lm=8, width=16, heads=2).eval()
    tokens = torch.randn(2, 6, 16)
    out = adapter(tokens)
    assert not torch.allclose(out[0], out[1])
    torch.testing.assert_close(adapter(tokens[1:]), out[1:])
    torch.testing.assert_close(adapter(tokens.flip(1)), out, atol=1e-5, rtol=1e-5)  # a set, no order


def test_mlp_shapes_and_hidden_default():
    adapter = create_adapter("mlp", d_vision=12, d_lm=10, n_latents=4)
    assert isinstance(adapter, MLPAdapter) and not adapter.uses_tokens
    assert adapter.net[0].out_features == 4 * 10 // 2  # ClipCap hidden width
    assert adapter(torch.randn(5, 12)).shape == (5, 4, 10)
    assert MLPAdapter(MLPAdapterConfig(d_vision=12, d_lm=10, hidden=7)).net[0].out_features == 7


def test_wrong_input_shapes_are_rejected():
    with pytest.raises(ValueError, match="tokens"):
        create_adapter("perceiver", d_vision=16, d_lm=8, width=16, heads=2)(torch.randn(2, 16))
    with pytest.raises(ValueError, match="pooled"):
        create_adapter("mlp", d_vision=12, d_lm=10)(torch.randn(2, 3, 12))


def test_factory_errors_name_the_valid_kinds():
    with pytest.raises(ValueError, match="perceiver, mlp"):
        create_adapter("qformer", d_vision=8, d_lm=8)
    with pytest.raises(ValueError, match="perceiver, mlp"):
        adapter_class("qformer")
    with pytest.raises(ValueError, match="bad config"):
        create_adapter("mlp", d_vision=8, d_lm=8, depth=2)
    with pytest.raises(ValueError, match="divisible"):
        create_adapter("perceiver", d_vision=8, d_lm=8, width=30, heads=4)


SMALL = {"perceiver": {"d_vision": 16, "d_lm": 8, "width": 16, "heads": 2}, "mlp": {"d_vision": 16, "d_lm": 8}}


@pytest.mark.parametrize("kind", SMALL)
def test_gradients_reach_every_adapter_parameter(kind):
    torch.manual_seed(0)
    adapter = create_adapter(kind, **SMALL[kind])
    x = torch.randn(2, 5, 16) if adapter.uses_tokens else torch.randn(2, 16)
    adapter(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())

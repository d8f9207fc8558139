"""Tests for listener perceptions: what each one hides, batch consistency, and the factory."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from listener_sub.images import to_float_images, to_uint8_images
from listener_sub.perception import (
    PERCEPTIONS,
    Blur,
    Crop,
    Cvd,
    Full,
    Grayscale,
    LowRes,
    confusable_colours,
    make_perception,
    perceived_distances,
)
from listener_sub.world import PALETTE, WORLD_VOCAB
from listener_sub.world.render import render
from listener_sub.world.scene import WorldConfig, sample_scenes

ALL = [
    Full(),
    Grayscale(),
    Blur(),
    Blur(0.7),
    LowRes(),
    LowRes(2),
    Crop("left"),
    Crop((0.1, 0.2, 0.6, 0.9)),
    Cvd(),
    Cvd("tritan", 0.5),
]


@pytest.fixture(scope="module")
def scenes():
    return sample_scenes(WorldConfig(), "train", 0, 8)


def _render_with(scenes, column: int, values: np.ndarray) -> torch.Tensor:
    """Render a copy of `scenes` whose object 0 has attribute `column` set to `values`."""
    changed = copy.deepcopy(scenes)
    changed.attrs[:, 0, column] = values
    return to_float_images(render(changed, image_size=64))  # (B, 3, 64, 64)


def test_grayscale_is_luma_replicated():
    images = torch.rand(4, 3, 8, 8)
    out = Grayscale()(images)
    luma = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]  # (B, H, W)
    assert out.shape == images.shape
    for c in range(3):
        torch.testing.assert_close(out[:, c], luma, atol=1e-6, rtol=0)


def test_grayscale_hides_colour_full_shows_it(scenes):
    base = to_float_images(render(scenes, image_size=64))
    recoloured = _render_with(scenes, 0, (scenes.attrs[:, 0, 0] + 3) % 6)
    # measured: 0.86/255 under grayscale, 0.80 under full
    assert (Grayscale()(base) - Grayscale()(recoloured)).abs().max() <= 1 / 255
    assert (Full()(base) - Full()(recoloured)).abs().max() > 0.2


def test_blur_and_lowres_hide_stripes(scenes):
    solid = _render_with(scenes, 3, 0)
    striped = _render_with(scenes, 3, 1)
    full = (solid - striped).abs()
    # measured: full mean 3.2e-3, max 0.102 (the 26/255 stripe offset)
    assert full.mean() > 2e-3 and full.max() > 0.09
    blurred = (Blur()(solid) - Blur()(striped)).abs()
    # measured: mean 1.1e-4, max 0.013
    assert blurred.mean() < 1e-3 and blurred.max() < 0.05
    low = (LowRes(2)(solid) - LowRes(2)(striped)).abs()
    # measured: mean 3.4e-4, max 0.049 (anti-aliased edge pixels)
    assert low.mean() < 1e-3 and low.max() < 0.07


@pytest.mark.parametrize("perception", ALL, ids=repr)
def test_batch_equals_single_images(perception):
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batched = perception(images)
    singles = torch.cat([perception(images[i : i + 1]) for i in range(len(images))])
    assert batched.shape == images.shape
    torch.testing.assert_close(batched, singles, atol=1e-6, rtol=0)


@pytest.mark.parametrize("perception", ALL, ids=repr)
def test_dtype_preserved_and_autograd_flows(perception):
    images = torch.rand(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    out = perception(images)
    assert out.dtype == torch.float64
    out.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_blur_keeps_constant_mean_and_range():
    constant = torch.full((1, 3, 20, 20), 0.37)
    torch.testing.assert_close(Blur(2.0)(constant), constant, atol=1e-6, rtol=0)
    images = torch.rand(3, 3, 24, 24)
    out = Blur()(images)
    assert out.min() >= images.min() - 1e-6 and out.max() <= images.max() + 1e-6
    assert out.std() < 0.5 * images.std()  # it does smooth
    with pytest.raises(ValueError, match="sigma"):
        Blur(0.0)
    with pytest.raises(ValueError, match="larger"):
        Blur(3.0)(torch.rand(1, 3, 8, 8))


def test_lowres_is_blockwise_constant():
    images = torch.rand(2, 3, 12, 16)
    out = LowRes(4)(images)
    blocks = out.view(2, 3, 3, 4, 4, 4)  # (B, 3, H / 4, 4, W / 4, 4)
    assert (blocks == blocks[:, :, :, :1, :, :1]).all()
    torch.testing.assert_close(blocks[:, :, :, 0, :, 0], images.view(2, 3, 3, 4, 4, 4).mean((3, 5)))
    with pytest.raises(ValueError, match="divide"):
        LowRes(5)(images)


def test_crop_left_of_red_left_third():
    images = torch.zeros(1, 3, 30, 30)
    images[:, 0, :, :10] = 1.0  # left third red, the rest black
    out = Crop("left")(images)
    assert out[:, 0].min() > 0.99 and out[:, 1:].abs().max() == 0
    right = Crop("right")(images)
    assert right.abs().max() == 0


def test_crop_validates_box():
    for bad in [(0.5, 0.0, 0.4, 1.0), (0.0, 0.0, 1.2, 1.0), (-0.1, 0.0, 0.5, 1.0), (0.0, 0.5, 1.0, 0.5)]:
        with pytest.raises(ValueError, match="x0 < x1"):
            Crop(bad)
    with pytest.raises(ValueError, match="left, center, right, top, bottom"):
        Crop("middle")


def test_uint8_round_trip():
    uint8 = np.random.default_rng(0).integers(0, 256, size=(2, 5, 7, 3), dtype=np.uint8)
    floats = to_float_images(uint8)
    assert floats.shape == (2, 3, 5, 7) and floats.dtype == torch.float32
    assert floats.min() >= 0 and floats.max() <= 1
    np.testing.assert_array_equal(to_uint8_images(floats), uint8)
    np.testing.assert_array_equal(to_uint8_images(to_float_images(torch.from_numpy(uint8[0]))), uint8[:1])
    assert to_uint8_images(torch.full((1, 3, 1, 1), 0.5 / 255 + 1e-4))[0, 0, 0, 0] == 1  # rounds, not floors
    with pytest.raises(ValueError, match="uint8"):
        to_float_images(uint8.astype(np.float32))


def test_make_perception_specs():
    assert isinstance(make_perception("grayscale"), Grayscale)
    blur = make_perception({"name": "blur", "sigma": 2.0})
    assert isinstance(blur, Blur) and blur.sigma == 2.0 and repr(blur) == "Blur(sigma=2.0)"
    assert set(PERCEPTIONS) == {"full", "grayscale", "blur", "lowres", "crop", "cvd"}
    omegaconf = pytest.importorskip("omegaconf")
    crop = make_perception(omegaconf.OmegaConf.create({"name": "crop", "box": [0.0, 0.0, 0.5, 1.0]}))
    assert isinstance(crop, Crop) and crop.box == (0.0, 0.0, 0.5, 1.0)


def test_make_perception_errors():
    valid = "choose one of: full, grayscale, blur, lowres, crop, cvd"
    with pytest.raises(ValueError, match=f"unknown perception 'grey'; {valid}"):
        make_perception("grey")
    with pytest.raises(ValueError, match="sgima.*valid parameters: sigma"):
        make_perception({"name": "blur", "sgima": 2.0})
    with pytest.raises(ValueError, match="sigma must be > 0"):
        make_perception({"name": "blur", "sigma": -1.0})
    with pytest.raises(ValueError, match="positive integer"):
        make_perception({"name": "lowres", "factor": 2.5})


@pytest.mark.parametrize("kind", Cvd.KINDS)
def test_cvd_is_the_colour_science_librarys_machado_2009(kind):
    """The cvd perception against daltonlens's own Machado 2009 simulator (sRGB uint8 in and out), at severities
    between its tabulated steps too: within one level of 255."""
    from daltonlens.simulate import Deficiency, Simulator_Machado2009

    image = np.random.default_rng(0).integers(0, 256, (1, 24, 24, 3), dtype=np.uint8)
    deficiency = {"protan": Deficiency.PROTAN, "deutan": Deficiency.DEUTAN, "tritan": Deficiency.TRITAN}[kind]
    for severity in (0.0, 0.35, 0.7, 1.0):
        expected = Simulator_Machado2009().simulate_cvd(image[0], deficiency, severity).astype(int)
        seen = to_uint8_images(Cvd(kind, severity)(to_float_images(image)))[0].astype(int)
        assert np.abs(seen - expected).max() <= 1, (kind, severity)


def test_a_deuteranope_confuses_red_and_green_a_tritanope_blue_and_green():
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]).T[None, :, :, None]  # (1, 3, 3, 1) red green blue
    seen = {kind: Cvd(kind)(colours)[0, :, :, 0].T for kind in ("deutan", "tritan")}  # (3 colours, RGB)
    apart = float((colours[0, :, 0, 0] - colours[0, :, 1, 0]).norm())  # any two of them, in full colour
    distance = {kind: lambda i, j, k=kind: float((seen[k][i] - seen[k][j]).norm()) for kind in seen}
    assert distance["deutan"](0, 1) < 0.4 * apart and distance["deutan"](2, 1) > 0.9 * apart
    assert distance["tritan"](2, 1) < 0.5 * apart and distance["tritan"](0, 1) > apart
    assert make_perception({"name": "cvd", "kind": "protan", "severity": 0.5}).severity == 0.5
    with pytest.raises(ValueError, match="kind='achromat'; choose one of: protan, deutan, tritan"):
        make_perception({"name": "cvd", "kind": "achromat"})
    with pytest.raises(ValueError, match="severity=1.5"):
        make_perception({"name": "cvd", "severity": 1.5})


def test_which_of_the_worlds_colours_each_listener_confuses():
    names = WORLD_VOCAB.values["color"]

    def confused(spec) -> set[tuple[str, str]]:
        close = confusable_colours(make_perception(spec), PALETTE)
        assert (close == close.T).all() and not close.diagonal().any()
        return {(names[i], names[j]) for i, j in zip(*np.nonzero(np.triu(close)))}

    assert confused("full") == set() and confused({"name": "blur", "sigma": 1.5}) == set()
    assert len(confused("grayscale")) == 15  # the palette is isoluminant: every pair of its six colours
    assert confused({"name": "cvd", "kind": "deutan"}) == {("brown", "green"), ("blue", "purple")}
    assert confused({"name": "cvd", "kind": "tritan"}) == {("cyan", "blue")}
    assert confused({"name": "cvd", "kind": "deutan", "severity": 0.0}) == set()  # normal vision
    distances = perceived_distances(make_perception({"name": "cvd", "kind": "deutan"}), PALETTE)
    assert distances[names.index("blue"), names.index("purple")] == pytest.approx(7.5, abs=0.1)

"""The embedded world: palette, sampling, rendering, grammar, parser, splits."""

import copy
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener_sub.world import (
    ATTRIBUTES,
    PALETTE,
    PRETRAIN_SPLIT,
    STYLES,
    WORLD_VOCAB,
    CaptionConfig,
    WorldConfig,
    canonical_caption,
    caption_scenes,
    luma,
    parse,
    realize,
    render,
    sample_scenes,
    sample_spec,
    truthful,
)
from listener_sub.world.scene import RELATIVE_RADIUS

DEFAULT_BACKGROUND = STYLES["default"].background[0]


def test_palette_is_isoluminant_and_distinct():
    lum = luma(PALETTE)
    assert len(PALETTE) >= 6
    assert lum.max() - lum.min() <= 2.0, lum
    dists = [np.abs(a.astype(int) - b.astype(int)).sum() for a, b in itertools.combinations(PALETTE, 2)]
    assert min(dists) > 60  # hues are far apart in RGB even though luma is equal


def test_vocabulary_sizes():
    sizes = WORLD_VOCAB.sizes()
    assert sizes["color"] >= 6 and sizes["shape"] >= 5 and sizes["size"] >= 2
    assert WORLD_VOCAB.values["fill"] == ("solid", "striped", "outlined") and sizes["position"] >= 3


def test_sampling_is_deterministic_and_prefix_stable():
    cfg = WorldConfig(seed=3)
    whole = sample_scenes(cfg, "train", 0, 2500)
    parts = [sample_scenes(cfg, "train", s, n) for s, n in [(0, 1000), (1000, 1100), (2100, 400)]]
    assert np.array_equal(whole.attrs, np.concatenate([p.attrs for p in parts]))
    assert np.array_equal(whole.xy, np.concatenate([p.xy for p in parts]))
    other_seed = sample_scenes(WorldConfig(seed=4), "train", 0, 2500)
    assert not np.array_equal(whole.attrs, other_seed.attrs)


def test_sampling_never_touches_global_rng():
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = sample_scenes(WorldConfig(), "val", 0, 50)
    assert np.array_equal(np.random.get_state()[1], state)
    np.random.seed(999)
    b = sample_scenes(WorldConfig(), "val", 0, 50)
    assert np.array_equal(a.attrs, b.attrs) and np.array_equal(a.xy, b.xy)


def test_every_attribute_value_occurs_and_stays_in_range():
    scenes = sample_scenes(WorldConfig(), "train", 0, 4000)
    for i, attr in enumerate(ATTRIBUTES):
        values = np.unique(scenes.attrs[:, 0, i])
        assert list(values) == list(range(len(WORLD_VOCAB.values[attr]))), attr


def test_multi_object_scenes_never_overlap():
    cfg = WorldConfig(min_objects=2, max_objects=3)
    scenes = sample_scenes(cfg, "train", 0, 300)
    assert set(scenes.present.sum(1)) == {2, 3}
    masks = []
    for k in range(3):
        alone = copy.deepcopy(scenes)
        keep = np.arange(3) == k
        alone.attrs[:, ~keep] = -1
        masks.append((render(alone) != DEFAULT_BACKGROUND).any(-1))  # (B, H, W)
    for i, j in itertools.combinations(range(3), 2):
        assert not (masks[i] & masks[j]).any()


def test_render_shape_antialiasing_and_background():
    scenes = sample_scenes(WorldConfig(), "train", 0, 64)
    images = render(scenes)
    assert images.shape == (64, 64, 64, 3) and images.dtype == np.uint8
    assert (images[:, 0, 0] == DEFAULT_BACKGROUND).all()
    # anti-aliased edges: pixels strictly between the background and the object's luma
    lum = luma(images)
    edge = (lum > DEFAULT_BACKGROUND + 5) & (lum < 95)
    assert edge.sum(axis=(1, 2)).min() > 0


def test_render_matches_object_colour_and_size():
    scenes = sample_scenes(WorldConfig(), "train", 0, 200)
    scenes.attrs[:, 0, 3] = 0  # solid
    images = render(scenes)
    for b in range(20):
        centre = (scenes.xy[b, 0] * 64).astype(int)
        assert np.abs(images[b, centre[1], centre[0]].astype(int) - PALETTE[scenes.attrs[b, 0, 0]]).max() <= 1
    area = (images != DEFAULT_BACKGROUND).any(-1).sum(axis=(1, 2))
    small, large = area[scenes.attrs[:, 0, 2] == 0], area[scenes.attrs[:, 0, 2] == 1]
    assert large.min() > small.max() * 0.9 and large.mean() > 2 * small.mean()


def test_stripes_alternate_and_average_to_the_solid_colour():
    scenes = sample_scenes(WorldConfig(), "train", 0, 30)
    scenes.attrs[:, 0, 1] = 1  # square
    scenes.attrs[:, 0, 2] = 1  # large
    solid, striped = copy.deepcopy(scenes), copy.deepcopy(scenes)
    solid.attrs[:, 0, 3], striped.attrs[:, 0, 3] = 0, 1
    a, b = render(solid).astype(float), render(striped).astype(float)
    cx, cy = (scenes.xy[0, 0] * 64).astype(int)
    rows = b[0, cy - 2 : cy + 2, cx]  # four rows through the centre: + - + - around the colour
    assert np.abs(rows[0] - rows[1]).max() > 40
    assert np.abs(rows.mean(0) - a[0, cy, cx]).max() <= 1


def test_shifted_style_differs():
    cfg = WorldConfig()
    shifted = sample_scenes(cfg, "shifted", 0, 20)
    assert (render(shifted)[:, 0, 0] == STYLES["shifted"].background[0]).all()
    assert np.allclose(np.unique(shifted.radius[:, 0]), [0.8 * r for r in RELATIVE_RADIUS.values()])


def test_pretraining_sees_every_combination_in_the_broad_style():
    cfg = WorldConfig()
    scenes = sample_scenes(cfg, PRETRAIN_SPLIT, 0, 4000)
    combos = set(map(tuple, scenes.attrs[:, 0, :2].tolist()))
    assert len(combos) == 30 and set(cfg.heldout()) <= combos  # held-out combinations included
    level, amplitude = scenes.backdrop[:, 0], scenes.backdrop[:, 1]
    broad = STYLES["broad"]
    for lo, hi in broad.avoid:  # never a held-out style's grey level, nor the objects' luma
        assert not ((level > lo) & (level < hi)).any()
    assert level.min() < 20 and level.max() > 235 and ((level > 115) & (level < 150)).any()
    assert amplitude.max() > 35 and (amplitude < 5).any()
    scale = scenes.radius[:, 0] / np.array(list(RELATIVE_RADIUS.values()))[scenes.attrs[:, 0, 2]]
    assert 0.7 <= scale.min() < 0.72 and 1.08 < scale.max() <= 1.1
    corner = render(scenes[:200])[:, 0, 0, 0].astype(float)  # the backdrop at pixel (0, 0)
    assert (
        np.abs(
            corner
            - np.clip(
                level[:200]
                + amplitude[:200]
                * np.sin(2 * np.pi * scenes.backdrop[:200, 2:4] @ [0.5 / 64, 0.5 / 64] + scenes.backdrop[:200, 4]),
                0,
                255,
            )
        ).max()
        <= 0.51
    )


def test_a_style_changes_pixels_not_scenes():
    """Drawing a split in another style keeps its objects (attributes, positions); the waves style is a sine
    backdrop."""
    cfg, waves = WorldConfig(), WorldConfig(styles={"shifted": "waves"})
    a, b = sample_scenes(cfg, "shifted", 0, 100), sample_scenes(waves, "shifted", 0, 100)
    assert np.array_equal(a.attrs, b.attrs) and np.array_equal(a.present, b.present)
    lum = luma(render(b))
    assert 175 < lum[:, :4, :4].min() and lum[:, :4, :4].max() < 245  # 210 +- 30 away from the object
    assert (b.radius[:, 0] > a.radius[:, 0] * 1.3).all()  # 1.1x against 0.8x
    with pytest.raises(ValueError, match="not a style"):
        sample_scenes(WorldConfig(styles={"shifted": "neon"}), "shifted", 0, 2)


def test_broad_multi_object_scenes_never_overlap():
    scenes = sample_scenes(WorldConfig(min_objects=3, max_objects=3), PRETRAIN_SPLIT, 0, 300)
    scenes.backdrop[:] = [DEFAULT_BACKGROUND, 0, 0, 0, 0]
    masks = []
    for k in range(3):
        alone = copy.deepcopy(scenes)
        alone.attrs[:, np.arange(3) != k] = -1
        masks.append((render(alone) != DEFAULT_BACKGROUND).any(-1))  # (B, H, W)
    for i, j in itertools.combinations(range(3), 2):
        assert not (masks[i] & masks[j]).any()


def test_splits_are_disjoint_by_seed_and_heldout_combos():
    cfg = WorldConfig()
    heldout = set(cfg.heldout())
    assert len({c for c, _ in heldout}) == 6 and len({s for _, s in heldout}) == 5  # every value still trains
    splits = {s: sample_scenes(cfg, s, 0, 3000) for s in ("train", "val", "test", "shifted")}
    for a, b in itertools.combinations(["train", "val", "test"], 2):
        assert not np.array_equal(splits[a].xy, splits[b].xy)
        same = (splits[a].attrs == splits[b].attrs).all(axis=(1, 2)) & np.isclose(splits[a].xy, splits[b].xy).all(
            axis=(1, 2)
        )
        assert not same.any()
    for name, scenes in splits.items():
        combos = set(map(tuple, scenes.attrs[:, 0, :2].tolist()))
        if name == "shifted":
            assert combos == heldout
        else:
            assert not combos & heldout
            assert len(combos) == 30 - len(heldout)


def test_custom_heldout_combos_and_validation():
    cfg = WorldConfig(heldout_combos=[("red", "circle")])
    assert cfg.heldout() == [(0, 0)]
    train = sample_scenes(cfg, "train", 0, 2000)
    assert not ((train.attrs[:, 0, 0] == 0) & (train.attrs[:, 0, 1] == 0)).any()
    with pytest.raises(ValueError, match="unknown colour or shape"):
        WorldConfig(heldout_combos=[("pink", "circle")]).heldout()
    with pytest.raises(ValueError, match="unknown split"):
        sample_scenes(cfg, "dev", 0, 2)
    with pytest.raises(ValueError, match="position regions"):
        sample_scenes(WorldConfig(max_objects=4), "train", 0, 2)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    k=st.integers(1, 3),
    probs=st.lists(st.floats(0.05, 1.0), min_size=5, max_size=5),
)
def test_generated_captions_parse_back_exactly_and_are_truthful(seed, k, probs):
    cfg = CaptionConfig(mention=dict(zip(ATTRIBUTES, probs)), relation_prob=0.5)
    scenes = sample_scenes(WorldConfig(seed=seed % 1000, max_objects=k), "train", seed % 5000, 8)
    rng = np.random.default_rng(seed)
    for b in range(len(scenes)):
        objects, x = scenes.objects(b), scenes.x(b)
        spec = sample_spec(rng, objects, cfg, x)
        text = realize(spec)
        parsed = parse(text)
        assert parsed.grammatical and not parsed.unknown, text
        assert parsed.spec == spec, text
        assert truthful(text, objects, x), text


def test_corpus_rates_and_generic_noun():
    scenes = sample_scenes(WorldConfig(), "train", 0, 2000)
    captions = [c for cs in caption_scenes(scenes, CaptionConfig(), per_scene=3) for c in cs]
    mentions = [parse(c).mentioned() for c in captions]
    colour_rate = np.mean(["color" in m for m in mentions])
    assert 0.45 < colour_rate < 0.6  # about half, as the default config asks
    assert all(m for m in mentions)  # never an empty caption
    for caption, m in zip(captions, mentions):
        assert ("shape" in m) != (" object" in caption), caption
        assert caption.endswith(".")


def test_relations_appear_for_multi_object_scenes():
    cfg = WorldConfig(min_objects=2, max_objects=3)
    scenes = sample_scenes(cfg, "train", 0, 300)
    captions = caption_scenes(scenes, CaptionConfig(relation_prob=0.5), per_scene=2)
    relations = [(b, c) for b, cs in enumerate(captions) for c in cs if " left of " in c or " right of " in c]
    assert 0.35 < len(relations) / 600 < 0.65
    for b, c in relations:
        assert parse(c).spec.relation in ("left", "right")
        assert truthful(c, scenes.objects(b), scenes.x(b))
        flipped = c.replace("left of", "TMP").replace("right of", "left of").replace("TMP", "right of")
        assert not truthful(flipped, scenes.objects(b), scenes.x(b)) or scenes.present[b].sum() == 3


@pytest.mark.parametrize(
    "text",
    [
        "a red red circle.",  # attribute twice
        "an red circle.",  # wrong article
        "a circle red.",  # adjective after the noun
        "a red circle",  # no ending
        "a large red circle on the left to the left of a square.",  # position and relation
        "red circle.",  # no article
        "a striped red circle.",  # adjective order
        "a big red circle.",  # unknown word
    ],
)
def test_ungrammatical_captions_are_rejected(text):
    assert not parse(text).grammatical


def test_parser_mentions_unknown_words_and_truth():
    obj = {"color": "red", "shape": "circle", "size": "small", "fill": "solid", "position": "left"}
    parsed = parse("a big red thing.")
    assert not parsed.grammatical and set(parsed.unknown) == {"big", "thing"}
    assert parsed.spec.objects[0] == {"color": "red"}
    assert truthful("a red circle.", [obj]) and not truthful("a blue circle.", [obj])
    assert truthful("there is a small object on the left.", [obj])
    assert not truthful("a small object on the right.", [obj])
    assert truthful("a big red thing.", [obj])  # ungrammatical but true: judged by its value words
    for subset in [("color",), ("shape", "position"), ATTRIBUTES]:
        caption = canonical_caption(obj, subset)
        assert parse(caption).mentioned() == set(subset) and truthful(caption, [obj])
    assert canonical_caption(obj, ("fill",)) == "a solid object."
    assert canonical_caption({**obj, "fill": "outlined"}, ("fill",)) == "an outlined object."


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=80)
    | st.lists(
        st.sampled_from(["a", "the", "red", "circle", "left", "of", ".", "and", "small", "striped", "square", "", " "]),
        max_size=14,
    ).map(" ".join)
)
def test_the_parser_takes_any_text(text):
    parsed = parse(text)  # never raises
    assert isinstance(parsed.grammatical, bool) and parse(text) == parsed

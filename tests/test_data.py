"""Tests for the caption datasets: synthetic cache and splits, COCO and CLEVR folders, bad data, the factory."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

import listener_sub.data as data
from listener_sub.data import ClevrCaptions, CocoCaptions, Example, SyntheticCaptions, make_dataset
from listener_sub.errors import DataError, UserError
from listener_sub.world import CLEVR_VOCAB, CaptionConfig, WorldConfig, parse, render, truthful

WORLD = WorldConfig(max_objects=3)


def _synthetic(tmp_path, split="train", size=12, world=WORLD) -> SyntheticCaptions:
    return SyntheticCaptions(world, CaptionConfig(), split, size, per_scene=4, seed=1, cache_dir=tmp_path)


def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "listener_sub.data" and r.levelno == logging.WARNING]


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic(tmp_path):
    a, b = _synthetic(tmp_path / "a"), _synthetic(tmp_path / "b")
    assert len(a) == len(b) == 12
    assert a.images.shape == (12, 64, 64, 3) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    assert a.captions == b.captions
    assert all(len(c) == 4 for c in a.captions)


def test_synthetic_cache_is_created_and_reused(tmp_path, monkeypatch):
    first = _synthetic(tmp_path)
    path = first.cache_path
    assert path.parent == tmp_path / "scenes" and path.name.startswith("train-12-") and path.suffix == ".npy"
    np.testing.assert_array_equal(np.load(path), first.images)
    assert _synthetic(tmp_path, size=5).cache_path.name.startswith("train-5-")  # another size, another file

    def no_render(*args, **kwargs):
        raise AssertionError("render called although the cache holds the images")

    monkeypatch.setattr(data, "render", no_render)
    second = _synthetic(tmp_path)
    np.testing.assert_array_equal(second.images, first.images)


@pytest.mark.parametrize("corruption", ["garbage", "wrong_shape"])
def test_synthetic_corrupt_cache_is_replaced(tmp_path, caplog, corruption):
    path = _synthetic(tmp_path).cache_path
    expected = np.load(path)
    if corruption == "garbage":
        path.write_bytes(b"not a numpy file")
    else:
        np.save(path, np.zeros((3, 8, 8, 3), np.uint8))
    with caplog.at_level(logging.WARNING, logger="listener_sub.data"):
        again = _synthetic(tmp_path)
    np.testing.assert_array_equal(again.images, expected)
    np.testing.assert_array_equal(np.load(path), expected)
    assert len(_warnings(caplog)) == 1 and str(path) in _warnings(caplog)[0].getMessage()


def test_synthetic_items_are_grammatical_truthful_and_have_objects(tmp_path):
    ds = _synthetic(tmp_path, size=30)
    relations = 0
    for i in range(len(ds)):
        ex = ds[i]
        assert isinstance(ex, Example)
        assert ex.image.shape == (64, 64, 3) and ex.image.dtype == np.uint8
        np.testing.assert_array_equal(ex.image, ds.images[i])
        assert 1 <= len(ex.objects) <= 3 and len(ex.x) == len(ex.objects)
        assert set(ex.objects[0]) == {"color", "shape", "size", "fill", "position"}
        for caption in ex.captions:
            parsed = parse(caption)
            assert parsed.grammatical, caption
            assert truthful(caption, ex.objects, ex.x), (caption, ex.objects)
            relations += parsed.spec.relation is not None
    assert relations > 0  # multi-object scenes exercise relation captions
    assert ds.vocab is not None and "red" in ds.vocab.values["color"]


def test_synthetic_chunked_rendering_matches(tmp_path, monkeypatch):
    whole = _synthetic(tmp_path / "whole", size=11)
    monkeypatch.setattr(data, "PROGRESS_MIN", 5)
    monkeypatch.setattr(data, "RENDER_CHUNK", 4)
    np.testing.assert_array_equal(_synthetic(tmp_path / "chunked", size=11).images, whole.images)


def test_synthetic_train_and_test_differ(tmp_path):
    train, test = _synthetic(tmp_path, "train"), _synthetic(tmp_path, "test")
    np.testing.assert_array_equal(train.scenes.index, test.scenes.index)
    assert not np.array_equal(train.images, test.images)
    assert train.cache_path != test.cache_path


def test_synthetic_shifted_holds_only_heldout_combos(tmp_path):
    world = WorldConfig()
    heldout = set(world.heldout())
    train, shifted = _synthetic(tmp_path, "train", 200, world), _synthetic(tmp_path, "shifted", 200, world)

    def combos(ds):
        attrs = ds.scenes.attrs[ds.scenes.present]  # (n_objects, A)
        return {(int(c), int(s)) for c, s in attrs[:, :2]}

    assert combos(shifted) <= heldout and combos(shifted)
    assert not combos(train) & heldout
    assert shifted.images[0, 0, 0, 0] != train.images[0, 0, 0, 0]  # a different background style


def test_synthetic_bad_split_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="shifted"):
        _synthetic(tmp_path, "dev")


# ---------------------------------------------------------------- COCO


def _image(path, size=(40, 30), colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _coco(root, extra_annotations=()) -> None:
    """3 images in the three supported places, 5 captions; split train2017."""
    _image(root / "train2017" / "a.jpg", colour=(250, 0, 0))
    _image(root / "images" / "b.png", colour=(0, 250, 0))
    _image(root / "c.png", size=(40, 20))
    c = np.zeros((20, 40, 3), np.uint8)
    c[:, :20], c[:, 20:] = (255, 0, 0), (0, 0, 255)  # left half red, right half blue
    Image.fromarray(c).save(root / "c.png")
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.png"}, {"id": 3, "file_name": "c.png"},
              {"id": 4, "file_name": "uncaptioned.png"}]
    annotations = [
        {"id": 10, "image_id": 1, "caption": "A red picture. "},
        {"id": 11, "image_id": 2, "caption": "Something green."},
        {"id": 12, "image_id": 1, "caption": "Red again."},
        {"id": 13, "image_id": 3, "caption": "Red and blue."},
        {"id": 14, "image_id": 2, "caption": "Green again."},
        *extra_annotations,
    ]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    index = {"images": images, "annotations": annotations}
    (root / "annotations" / "captions_train2017.json").write_text(json.dumps(index))


def test_coco_loads_images_with_grouped_captions(tmp_path):
    _coco(tmp_path)
    ds = CocoCaptions(tmp_path)
    assert len(ds) == 3 and ds.vocab is None and ds.skipped == []
    items = [ds[i] for i in range(3)]
    assert [ex.captions for ex in items] == [
        ["A red picture.", "Red again."], ["Something green.", "Green again."], ["Red and blue."]
    ]
    assert items[0].image.shape == (30, 40, 3) and items[0].image.dtype == np.uint8
    assert items[0].image[..., 0].mean() > 200 and items[1].image[..., 1].mean() > 200
    assert items[0].objects is None and items[0].x is None


def test_coco_image_size_resizes_and_centre_crops(tmp_path):
    _coco(tmp_path)
    ds = CocoCaptions(tmp_path, image_size=16)
    assert all(ds[i].image.shape == (16, 16, 3) for i in range(3))
    crop = ds[2].image  # c.png: 40x20, centre square spans x 10..30 -> half red, half blue
    assert crop[8, 2].tolist() == [255, 0, 0] and crop[8, 13].tolist() == [0, 0, 255]


def test_coco_malformed_json_names_file_and_position(tmp_path):
    _coco(tmp_path)
    (tmp_path / "annotations" / "captions_train2017.json").write_text('{"images": [\n  {"id": 1,,}]}')
    with pytest.raises(DataError, match=r"captions_train2017\.json: malformed JSON at line 2, column"):
        CocoCaptions(tmp_path)


def test_coco_missing_annotations_file_lists_path_and_alternatives(tmp_path):
    _coco(tmp_path)
    with pytest.raises(DataError, match=r"captions_val2017\.json.*found captions_train2017\.json"):
        CocoCaptions(tmp_path, split="val2017")


def test_coco_missing_keys(tmp_path):
    _coco(tmp_path)
    (tmp_path / "annotations" / "captions_train2017.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="'annotations' list"):
        CocoCaptions(tmp_path)


def test_coco_annotation_pointing_nowhere(tmp_path, caplog):
    _coco(tmp_path, [{"id": 17, "image_id": 999, "caption": "lost"}])
    with pytest.raises(DataError, match="annotation 17 points to image_id 999 which is not in images.*skip_bad"):
        CocoCaptions(tmp_path)
    with caplog.at_level(logging.WARNING, logger="listener_sub.data"):
        ds = CocoCaptions(tmp_path, skip_bad=True)
    assert len(ds) == 3 and len(ds.skipped) == 1 and len(_warnings(caplog)) == 1


def test_coco_missing_image_file(tmp_path, caplog):
    _coco(tmp_path)
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(DataError, match=r"'b\.png' \(image id 2\) not found; tried"):
        CocoCaptions(tmp_path)
    with caplog.at_level(logging.WARNING, logger="listener_sub.data"):
        ds = CocoCaptions(tmp_path, skip_bad=True)
    assert len(ds) == 2
    assert len(ds.skipped) == 1 and "b.png" in ds.skipped[0]
    records = _warnings(caplog)
    assert len(records) == 1 and "skipped 1 bad item" in records[0].getMessage() and "b.png" in records[0].getMessage()
    assert [ds[i].captions[0] for i in range(2)] == ["A red picture.", "Red and blue."]


def test_coco_unreadable_image(tmp_path, caplog):
    _coco(tmp_path)
    (tmp_path / "train2017" / "a.jpg").write_bytes(b"this is not a jpeg")
    ds = CocoCaptions(tmp_path)  # existence is checked up front, decoding on access
    assert len(ds) == 3
    with pytest.raises(DataError, match=r"cannot read image .*a\.jpg"):
        ds[0]
    with caplog.at_level(logging.WARNING, logger="listener_sub.data"):
        ds = CocoCaptions(tmp_path, skip_bad=True)
    assert len(ds) == 2 and len(ds.skipped) == 1 and "a.jpg" in ds.skipped[0]
    assert len(_warnings(caplog)) == 1


def test_coco_nothing_usable_is_an_error(tmp_path):
    _coco(tmp_path)
    for name in ("train2017/a.jpg", "images/b.png", "c.png"):
        (tmp_path / name).unlink()
    with pytest.raises(DataError, match=r"no usable items \(3 bad item\(s\) skipped\)"):
        CocoCaptions(tmp_path, skip_bad=True)


# ---------------------------------------------------------------- CLEVR


def _obj(color, shape, x, size="large", material="rubber") -> dict:
    return {"color": color, "shape": shape, "size": size, "material": material,
            "3d_coords": [0.0, 0.0, 0.7], "pixel_coords": [x, 16, 10.0], "rotation": 12.0}


def _clevr(root, first_colour="red") -> None:
    """2 scenes with 48x32 images: 3 objects (left, center, right) and 1 object."""
    scenes = [
        {"image_index": 0, "image_filename": "CLEVR_val_000000.png", "split": "val",
         "objects": [
             _obj(first_colour, "cube", 5), _obj("blue", "sphere", 24, "small", "metal"), _obj("gray", "cylinder", 40)
         ],
         "relationships": {}},
        {"image_index": 1, "image_filename": "CLEVR_val_000001.png", "split": "val",
         "objects": [_obj("yellow", "sphere", 30, "small", "metal")], "relationships": {}},
    ]
    for scene in scenes:
        _image(root / "images" / "val" / scene["image_filename"], size=(48, 32), colour=(120, 120, 120))
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    (root / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"info": {}, "scenes": scenes}))


def test_clevr_items_and_captions(tmp_path):
    _clevr(tmp_path)
    ds = ClevrCaptions(tmp_path, per_scene=20, seed=3)
    assert len(ds) == 2 and ds.vocab is CLEVR_VOCAB and ds.skipped == []
    ex = ds[0]
    assert ex.image.shape == (32, 48, 3)
    assert ex.objects == [
        {"color": "red", "shape": "cube", "size": "large", "fill": "rubber", "position": "left"},
        {"color": "blue", "shape": "sphere", "size": "small", "fill": "metal", "position": "center"},
        {"color": "gray", "shape": "cylinder", "size": "large", "fill": "rubber", "position": "right"},
    ]
    assert ex.x == pytest.approx([5 / 48, 24 / 48, 40 / 48])
    relations = 0
    for item in (ex, ds[1]):
        assert len(item.captions) == 20
        for caption in item.captions:
            parsed = parse(caption, CLEVR_VOCAB)
            assert parsed.grammatical, caption
            assert truthful(caption, item.objects, item.x, CLEVR_VOCAB), caption
            relations += parsed.spec.relation is not None
    assert relations > 0
    assert ds[0].captions == ex.captions  # deterministic per scene
    assert ClevrCaptions(tmp_path, image_size=16)[1].image.shape == (16, 16, 3)


def test_clevr_unknown_colour(tmp_path):
    _clevr(tmp_path, first_colour="pink")
    expected = r"CLEVR_val_scenes\.json: scene 0 \(CLEVR_val_000000\.png\) object 0 has color 'pink'"
    with pytest.raises(DataError, match=expected):
        ClevrCaptions(tmp_path)


def test_clevr_missing_image_skipped(tmp_path, caplog):
    _clevr(tmp_path)
    (tmp_path / "images" / "val" / "CLEVR_val_000000.png").unlink()
    with pytest.raises(DataError, match=r"CLEVR_val_000000\.png not found"):
        ClevrCaptions(tmp_path)
    with caplog.at_level(logging.WARNING, logger="listener_sub.data"):
        ds = ClevrCaptions(tmp_path, skip_bad=True)
    assert len(ds) == 1 and len(ds.skipped) == 1 and len(_warnings(caplog)) == 1
    assert ds[0].objects[0]["color"] == "yellow"


def test_clevr_missing_scenes_file(tmp_path):
    _clevr(tmp_path)
    with pytest.raises(DataError, match=r"CLEVR_train_scenes\.json.*found CLEVR_val_scenes\.json"):
        ClevrCaptions(tmp_path, split="train")


# ---------------------------------------------------------------- factory


def test_make_dataset_dispatch(tmp_path):
    _coco(tmp_path / "coco")
    _clevr(tmp_path / "clevr")
    synthetic_cfg = {"kind": "synthetic", "split": "val", "size": 4, "image_size": 32}
    synthetic = make_dataset(synthetic_cfg, WORLD, cache_dir=tmp_path)
    assert isinstance(synthetic, SyntheticCaptions) and len(synthetic) == 4 and synthetic[0].image.shape == (32, 32, 3)
    coco_cfg = OmegaConf.create({"kind": "coco", "root": str(tmp_path / "coco"), "split": None, "image_size": 8})
    coco = make_dataset(coco_cfg)
    assert isinstance(coco, CocoCaptions) and len(coco) == 3 and coco[0].image.shape == (8, 8, 3)
    clevr = make_dataset({"kind": "clevr", "root": tmp_path / "clevr", "skip_bad": False, "per_scene": 2})
    assert isinstance(clevr, ClevrCaptions) and len(clevr) == 2 and len(clevr[0].captions) == 2


def test_make_dataset_errors(tmp_path):
    with pytest.raises(UserError, match="unknown data.kind 'imagenet'; choose one of: synthetic, coco, clevr"):
        make_dataset({"kind": "imagenet"})
    with pytest.raises(UserError, match="data.root is required for data.kind=coco"):
        make_dataset({"kind": "coco"})
    with pytest.raises(UserError, match="data.size is required"):
        make_dataset({"kind": "synthetic"}, cache_dir=tmp_path)
    with pytest.raises(DataError, match="is not a directory"):
        make_dataset({"kind": "clevr", "root": tmp_path / "nowhere"})


def test_render_is_the_module_renderer():
    assert data.render is render  # the synthetic cache test patches data.render

"""Image sets: the embedded world, CLEVR / COCO / plain folders, the decoded-image store, bad data, export, metrics."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from folders import clevr, coco, image, plain_folder
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import listener_sub.data.folders as folders
import listener_sub.data.synthetic as synthetic
from listener_sub.data import KINDS, DataConfig, DataSource, StoredImages
from listener_sub.data.export import export_world
from listener_sub.errors import DataError, UserError
from listener_sub.game import create_game
from listener_sub.metrics import caption_metrics, caption_values
from listener_sub.rewards import Reward
from listener_sub.world import CLEVR_VOCAB, WORLD_VOCAB, CaptionConfig, WorldConfig, parse, truthful

WORLD = WorldConfig(max_objects=3)


def load(kind: str, root, split: str, size: int | None = None, **settings) -> object:
    return DataSource(DataConfig(kind=kind, root=str(root), **settings)).load(split, size)


def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("listener_sub.data") and r.levelno == logging.WARNING]


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_grammatical():
    a, b = DataSource(world=WORLD).load("train", 30), DataSource(world=WORLD).load("train", 30)
    assert a.images.shape == (30, 64, 64, 3) and a.images.dtype == np.uint8 and a.key == b.key
    np.testing.assert_array_equal(a.images, b.images)
    captions = a.caption_texts(CaptionConfig(), 4, seed=1)
    assert captions == b.caption_texts(CaptionConfig(), 4, seed=1) and all(len(c) == 4 for c in captions)
    relations = 0
    for i, texts in enumerate(captions):
        for caption in texts:
            parsed = parse(caption)
            assert parsed.grammatical and truthful(caption, a.scenes.objects(i), a.scenes.x(i)), caption
            relations += parsed.spec.relation is not None
    assert relations > 0  # multi-object scenes exercise relation captions
    assert a.scenes.vocab is WORLD_VOCAB and a.attributes == WORLD_VOCAB.attributes
    assert a.describe(0) == a.describe(0) and a.describe(0).endswith(".")


def test_synthetic_chunked_rendering_matches(monkeypatch):
    whole = DataSource(world=WORLD).load("val", 11)
    monkeypatch.setattr(synthetic, "PROGRESS_MIN", 5)
    monkeypatch.setattr(synthetic, "RENDER_CHUNK", 4)
    np.testing.assert_array_equal(DataSource(world=WORLD).load("val", 11).images, whole.images)


def test_synthetic_splits_differ_and_shifted_holds_only_heldout_combos():
    world = WorldConfig()
    heldout = set(world.heldout())
    train, shifted = DataSource(world=world).load("train", 200), DataSource(world=world).load("shifted", 200)
    assert train.key != shifted.key and not np.array_equal(train.images, shifted.images)

    def combos(images):
        attrs = images.scenes.attrs[images.scenes.present]  # (n_objects, A)
        return {(int(c), int(s)) for c, s in attrs[:, :2]}

    assert combos(shifted) <= heldout and combos(shifted)
    assert not combos(train) & heldout
    assert shifted.images[0, 0, 0, 0] != train.images[0, 0, 0, 0]  # a different background style


def test_synthetic_errors():
    with pytest.raises(UserError, match="shifted"):
        DataSource().load("dev", 4)
    with pytest.raises(UserError, match="game.pool_size"):
        DataSource().load("test")
    assert DataSource(DataConfig(image_size=32)).load("test", 2).images.shape == (2, 32, 32, 3)


# ---------------------------------------------------------------- the store


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-7, 6), min_size=0, max_size=12), st.sampled_from([(-1,), (-1, 2), (2, -1)]))
def test_stored_images_index_like_numpy(tmp_path_factory, rows, shape):
    pixels = np.random.default_rng(0).integers(0, 256, (7, 3, 2, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("store") / "images.u8"
    path.write_bytes(pixels.tobytes())
    stored = StoredImages(path, pixels.shape)
    index = np.array(rows, dtype=np.int64)
    if index.size % 2 == 0:
        index = index.reshape(*shape)  # boards: (B, N) indices
    np.testing.assert_array_equal(stored[index], pixels[index])
    np.testing.assert_array_equal(stored[2:5], pixels[2:5])
    assert np.array_equal(stored[3], pixels[3]) and len(stored) == 7 and stored.shape == pixels.shape


def test_a_folder_is_decoded_once_then_read_from_the_store(tmp_path, monkeypatch):
    coco(tmp_path / "coco")
    first = load("coco", tmp_path / "coco", "train2017", image_size=16)
    monkeypatch.setattr(folders.Image, "open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    assert load("coco", tmp_path / "coco", "train2017", image_size=16) is first  # this process: loaded once
    folders._LOADED.clear()  # another process: the store, not the files
    again = load("coco", tmp_path / "coco", "train2017", image_size=16)
    assert again.key == first.key and isinstance(again.images, StoredImages)
    np.testing.assert_array_equal(again.images[np.arange(3)], first.images[np.arange(3)])
    monkeypatch.undo()
    image(tmp_path / "coco" / "c.png", size=(40, 20), colour=(1, 2, 3))  # a changed file: a new store
    changed = load("coco", tmp_path / "coco", "train2017", image_size=16)
    assert changed.key != first.key and changed.images[2][8, 8].tolist() == [1, 2, 3]


# ---------------------------------------------------------------- COCO


def test_coco_images_with_grouped_captions_resized_and_centre_cropped(tmp_path):
    coco(tmp_path)
    images = load("coco", tmp_path, "train2017", image_size=16)
    assert len(images) == 3 and images.scenes is None and images.skipped == []
    assert images.captions == [
        ["A red picture.", "Red again."],
        ["Something green.", "Green again."],
        ["Red and blue."],
    ]
    assert images.files == ["train2017/a.jpg", "images/b.png", "c.png"]
    assert images.images.shape == (3, 16, 16, 3)
    assert images.images[0][..., 0].mean() > 200 and images.images[1][..., 1].mean() > 200
    crop = images.images[2]  # c.png: 40x20, centre square spans x 10..30 -> half red, half blue
    assert crop[8, 2].tolist() == [255, 0, 0] and crop[8, 13].tolist() == [0, 0, 255]
    assert (
        images.describe(0) == "A red picture."
        and load("coco", tmp_path, "train2017", size=2, image_size=16).captions == images.captions[:2]
    )


def test_images_of_different_sizes_need_an_image_size(tmp_path):
    coco(tmp_path)
    with pytest.raises(DataError, match=r"c\.png is 40x20, the others 40x30; set data.image_size"):
        load("coco", tmp_path, "train2017")


def test_coco_malformed_json_names_file_and_position(tmp_path):
    coco(tmp_path)
    (tmp_path / "annotations" / "captions_train2017.json").write_text('{"images": [\n  {"id": 1,,}]}')
    with pytest.raises(DataError, match=r"captions_train2017\.json: malformed JSON at line 2, column"):
        load("coco", tmp_path, "train2017", image_size=8)


def test_coco_missing_annotations_file_lists_path_and_alternatives(tmp_path):
    coco(tmp_path)
    with pytest.raises(DataError, match=r"captions_val2017\.json.*found captions_train2017\.json"):
        load("coco", tmp_path, "val2017", image_size=8)
    with pytest.raises(DataError, match=r"captions_val2017\.json"):
        DataSource(DataConfig(kind="coco", root=str(tmp_path), splits={"test": "val2017"})).check_split("test")


def test_coco_missing_keys(tmp_path):
    coco(tmp_path)
    (tmp_path / "annotations" / "captions_train2017.json").write_text('{"images": []}')
    with pytest.raises(DataError, match="'annotations' list"):
        load("coco", tmp_path, "train2017", image_size=8)


def test_coco_annotation_pointing_nowhere(tmp_path, caplog):
    coco(tmp_path, [{"id": 17, "image_id": 999, "caption": "lost"}])
    with pytest.raises(DataError, match="annotation 17 points to image_id 999 which is not in images.*skip_bad"):
        load("coco", tmp_path, "train2017", image_size=8)
    with caplog.at_level(logging.WARNING):
        images = load("coco", tmp_path, "train2017", image_size=8, skip_bad=True)
    assert len(images) == 3 and len(images.skipped) == 1 and len(_warnings(caplog)) == 1


def test_coco_missing_image_file(tmp_path, caplog):
    coco(tmp_path)
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(DataError, match=r"'b\.png' \(image id 2\) not found; tried"):
        load("coco", tmp_path, "train2017", image_size=8)
    with caplog.at_level(logging.WARNING):
        images = load("coco", tmp_path, "train2017", image_size=8, skip_bad=True)
    assert len(images) == 2 and len(images.skipped) == 1 and "b.png" in images.skipped[0]
    records = _warnings(caplog)
    assert len(records) == 1 and "skipped 1 bad item" in records[0].getMessage() and "b.png" in records[0].getMessage()
    assert [c[0] for c in images.captions] == ["A red picture.", "Red and blue."]


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize("damage", ["garbage", "truncated png", "truncated jpeg"])
def test_unreadable_images_are_named_or_skipped_and_counted(tmp_path, caplog, damage):
    coco(tmp_path)
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    out = io.BytesIO()
    noisy.save(out, format="PNG" if damage == "truncated png" else "JPEG")
    bad = {
        "garbage": b"this is not an image",
        "truncated png": _truncated(out.getvalue()),
        "truncated jpeg": _truncated(out.getvalue()),
    }[damage]
    (tmp_path / "train2017" / "a.jpg").write_bytes(bad)
    with pytest.raises(DataError, match=r"cannot read image .*a\.jpg.*skip_bad=true"):
        load("coco", tmp_path, "train2017", image_size=8)
    with caplog.at_level(logging.WARNING):
        images = load("coco", tmp_path, "train2017", image_size=8, skip_bad=True)
    assert (
        len(images) == 2 and len(images.skipped) == 1 and "a.jpg" in images.skipped[0] and len(_warnings(caplog)) == 1
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert load("coco", tmp_path, "train2017", image_size=8, skip_bad=True) is images  # loaded once per process
    assert _warnings(caplog) == []
    folders._LOADED.clear()  # another process
    with caplog.at_level(logging.WARNING):
        again = load("coco", tmp_path, "train2017", image_size=8, skip_bad=True)  # from the store: still reported, once
    assert again.skipped == images.skipped and len(_warnings(caplog)) == 1


def test_coco_nothing_usable_is_an_error(tmp_path):
    coco(tmp_path)
    for name in ("train2017/a.jpg", "images/b.png", "c.png"):
        (tmp_path / name).unlink()
    with pytest.raises(DataError, match=r"no usable images \(3 bad item\(s\) skipped\)"):
        load("coco", tmp_path, "train2017", image_size=8, skip_bad=True)


# ---------------------------------------------------------------- CLEVR


def test_clevr_scenes_and_captions(tmp_path):
    clevr(tmp_path)
    images = load("clevr", tmp_path, "val")
    assert len(images) == 2 and images.scenes.vocab is CLEVR_VOCAB and images.skipped == []
    assert images.images.shape == (2, 32, 48, 3)
    assert images.scenes.objects(0) == [
        {"color": "red", "shape": "cube", "size": "large", "fill": "rubber", "position": "left"},
        {"color": "blue", "shape": "sphere", "size": "small", "fill": "metal", "position": "center"},
        {"color": "gray", "shape": "cylinder", "size": "large", "fill": "rubber", "position": "right"},
    ]
    assert images.scenes.x(0) == pytest.approx([5 / 48, 24 / 48, 40 / 48])
    captions = images.caption_texts(CaptionConfig(), 20, seed=3)
    relations = 0
    for i, texts in enumerate(captions):
        for caption in texts:
            parsed = parse(caption, CLEVR_VOCAB)
            assert parsed.grammatical and truthful(
                caption, images.scenes.objects(i), images.scenes.x(i), CLEVR_VOCAB
            ), caption
            relations += parsed.spec.relation is not None
    assert relations > 0 and captions == images.caption_texts(CaptionConfig(), 20, seed=3)
    assert load("clevr", tmp_path, "val", image_size=16).images.shape == (2, 16, 16, 3)
    assert images.describe(1) == "a small yellow metal sphere in the center."


def test_clevr_bad_scenes(tmp_path, caplog):
    clevr(tmp_path, first_colour="pink")
    with pytest.raises(
        DataError, match=r"CLEVR_val_scenes\.json: scene 0 \(CLEVR_val_000000\.png\) object 0 has color 'pink'"
    ):
        load("clevr", tmp_path, "val")
    clevr(tmp_path)
    (tmp_path / "images" / "val" / "CLEVR_val_000000.png").unlink()
    with pytest.raises(DataError, match=r"CLEVR_val_000000\.png not found"):
        load("clevr", tmp_path, "val")
    with caplog.at_level(logging.WARNING):
        images = load("clevr", tmp_path, "val", skip_bad=True)
    assert len(images) == 1 and len(images.skipped) == 1 and len(_warnings(caplog)) == 1
    assert images.scenes.objects(0)[0]["color"] == "yellow" and images.scenes.index.tolist() == [1]
    with pytest.raises(DataError, match=r"CLEVR_train_scenes\.json.*found CLEVR_val_scenes\.json"):
        load("clevr", tmp_path, "train")


# ---------------------------------------------------------------- plain folders


def test_plain_folder_is_every_image_under_it_sorted(tmp_path):
    plain_folder(tmp_path / "imgs", 5)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    images = load("folder", tmp_path / "imgs", ".")
    assert len(images) == 5 and images.scenes is None and images.captions is None
    assert images.files == sorted(images.files) and images.files[0] == "part0/img_00000.png"
    assert images.describe(1) == images.files[1] and images.attributes == ("color",)
    assert DataSource(DataConfig(kind="folder", root=str(tmp_path / "imgs"), splits={"test": "part1"})).load(
        "test"
    ).files == ["part1/img_00001.png", "part1/img_00003.png"]


def test_plain_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        load("folder", tmp_path / "empty", ".")
    with pytest.raises(DataError, match=r"is not a folder; a plain-folder split is a subfolder of data.root"):
        DataSource(DataConfig(kind="folder", root=str(tmp_path / "empty"))).check_split("test")
    with pytest.raises(DataError, match="is not a directory; set data.root"):
        load("folder", tmp_path / "nowhere", ".")
    with pytest.raises(UserError, match="data.root is not set"):
        DataConfig(kind="folder")
    with pytest.raises(UserError, match="unknown kind 'imagenet'"):
        DataConfig(kind="imagenet")


def test_every_folder_kind_has_one_reader():
    assert set(folders.READERS) == set(KINDS) - {"synthetic"}
    with pytest.raises(DataError, match="data.kind=synthetic is not a folder dataset"):
        folders.split_source("synthetic", Path("."), "test")


def test_a_folder_smaller_than_a_board_and_hard_distractors_without_scenes_are_errors(tmp_path):
    plain_folder(tmp_path, 3)
    game = create_game(
        DataSource(DataConfig(kind="folder", root=str(tmp_path), image_size=64, splits={"test": "."})),
        {"full": object()},
        Reward(intended={"full": 1.0}),
    )
    with pytest.raises(DataError, match=r"has 3 usable image\(s\), fewer than one board of game.n_images=4"):
        game.pool("test")
    plain_folder(tmp_path, 6)
    hard = create_game(
        DataSource(DataConfig(kind="folder", root=str(tmp_path), image_size=64, splits={"test": "."})),
        {"full": object()},
        Reward(intended={"full": 1.0}),
        distractors="hard",
    )
    with pytest.raises(UserError, match="needs images with scene attributes"):
        hard.pool("test")


# ---------------------------------------------------------------- export


def test_an_exported_world_reads_back_as_the_same_scenes_and_pixels(tmp_path):
    export_world(WORLD, "test", 40, tmp_path, progress=False)
    world = DataSource(world=WORLD).load("test", 40)
    folder = DataSource(DataConfig(kind="clevr", root=str(tmp_path))).load("test", 40)
    np.testing.assert_array_equal(folder.images[np.arange(40)], world.images)
    assert folder.scenes.vocab is WORLD_VOCAB
    np.testing.assert_array_equal(folder.scenes.attrs, world.scenes.attrs[:, : folder.scenes.attrs.shape[1]])
    assert [folder.scenes.x(i) for i in range(40)] == [world.scenes.x(i) for i in range(40)]
    assert folder.caption_texts(CaptionConfig(), 3, 1) == world.caption_texts(CaptionConfig(), 3, 1)
    assert [folder.describe(i) for i in range(40)] == [world.describe(i) for i in range(40)]


# ---------------------------------------------------------------- metrics by what the data provides


def test_caption_metrics_follow_the_data():
    world = DataSource().load("test", 4)
    with_scenes = caption_metrics([world.describe(0), "a blue object."], world.scenes, [0, 1])
    assert {"mention/color", "mention/shape", "truthful", "grammatical", "length", "distinct_1", "distinct_2"} <= set(
        with_scenes
    )
    target = world.scenes.objects(0)[0]
    other = next(c for c in WORLD_VOCAB.values["color"] if c != target["color"])
    said = [f"a {target['color']} {target['shape']}.", f"a {other} {target['shape']}.", "a thing."]
    values = caption_values(said, world.scenes, [0, 0, 0])
    assert values["wrong/color"].tolist() == [0, 1, 0] and values["wrong/shape"].tolist() == [0, 0, 0]
    assert values["truthful"].tolist() == [1, 0, 1] and values["mention/color"].tolist() == [1, 1, 0]
    lexicon = {"color": ("red", "blue"), "animal": ("dog", "cat")}
    plain = caption_metrics(["A red dog, running.", "two cats", "a Blue bus"], None, [0, 1, 2], lexicon)
    assert plain == pytest.approx(
        {"mention/color": 2 / 3, "mention/animal": 1 / 3, "length": 10 / 3, "distinct_1": 0.9, "distinct_2": 1.0}
    )  # "cats" is not "cat"
    assert "truthful" not in plain and "grammatical" not in plain


def test_pretraining_reads_a_folders_train_split_unless_mapped():
    assert DataConfig().split_name("pretrain") == "pretrain"  # the embedded world's broad split
    assert DataConfig(kind="clevr", root="x").split_name("pretrain") == "train"
    assert DataConfig(kind="coco", root="x", splits={"train": "train2017"}).split_name("pretrain") == "train2017"
    assert DataConfig(kind="clevr", root="x", splits={"train": "a", "pretrain": "b"}).split_name("pretrain") == "b"


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=0, max_size=600))
def test_random_bytes_as_an_image_file_are_a_data_error_or_an_image(tmp_path_factory, blob):
    root = tmp_path_factory.mktemp("fuzz")
    image(root / "ok.png")
    (root / "fuzz.png").write_bytes(blob)
    folders._LOADED.clear()
    try:
        images = load("folder", root, ".", image_size=8)
    except DataError as error:
        assert "fuzz.png" in str(error)  # the one documented error, naming the file
    else:
        assert len(images) == 2 and images.images[np.arange(2)].shape == (
            2,
            8,
            8,
            3,
        )  # the bytes happened to be an image
    folders._LOADED.clear()
    images = load("folder", root, ".", image_size=8, skip_bad=True)
    assert len(images) + len(images.skipped) == 2


JSON_KEYS = [
    "images",
    "annotations",
    "id",
    "image_id",
    "caption",
    "file_name",
    "scenes",
    "objects",
    "image_filename",
    "color",
    "shape",
    "size",
    "material",
    "pixel_coords",
    "info",
    "vocabulary",
]  # the keys the loaders read, and others
JSON_TEXT = st.sampled_from(
    ["", " ", "red", "cube", "a.jpg", "CLEVR_val_000000.png", "../a.jpg", "/etc/hostname", "b.png"]
) | st.text(max_size=6)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 5) | st.floats(allow_nan=False, allow_infinity=False) | JSON_TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(JSON_KEYS) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=10,
)


def json_paths(node, path=()):
    """Every place in a JSON document: key paths to each node, the root included."""
    yield path
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from json_paths(child, (*path, key))


def replaced(node, path, value):
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = replaced(node[path[0]], path[1:], value)
    return copy


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_mangled_coco_or_clevr_file_is_a_data_error_or_usable_data(tmp_path_factory, data):
    """A COCO captions file or CLEVR scenes file with any one node replaced by arbitrary JSON (or random bytes): the
    loader gives a DataError or images it can serve -- never another exception."""
    kind = data.draw(st.sampled_from(["coco", "clevr"]))
    root = tmp_path_factory.mktemp(kind)
    (coco if kind == "coco" else clevr)(root)
    file = root / ("annotations/captions_train2017.json" if kind == "coco" else "scenes/CLEVR_val_scenes.json")
    document = json.loads(file.read_text())
    if data.draw(st.booleans(), "random bytes"):
        file.write_bytes(data.draw(st.binary(max_size=200)))
    else:
        path = data.draw(st.sampled_from(list(json_paths(document))), "replaced node")
        file.write_text(json.dumps(replaced(document, path, data.draw(JSON_VALUES, "by"))))
    for skip_bad in (False, True):
        folders._LOADED.clear()
        try:
            images = load(kind, root, "train2017" if kind == "coco" else "val", image_size=8, skip_bad=skip_bad)
        except DataError:
            continue
        assert len(images) >= 1 and images.images[np.arange(len(images))].shape == (len(images), 8, 8, 3)
        assert not any(
            Path(file).is_absolute() or ".." in Path(file).parts for file in images.files
        )  # nothing outside data.root
        if kind == "coco":
            assert all(texts and all(isinstance(t, str) and t for t in texts) for texts in images.captions)
        else:
            assert len(images.scenes.objects(0)) >= 1 and images.describe(0)


def test_an_index_file_never_points_outside_the_dataset_folder(tmp_path):
    """Found by the fuzzing above: file names that leave data.root were read (and then crashed); an info that is not a
    JSON object crashed the CLEVR loader."""
    coco(tmp_path / "coco")
    captions = tmp_path / "coco" / "annotations" / "captions_train2017.json"
    captions.write_text(captions.read_text().replace('"a.jpg"', '"/etc/hostname"'))
    with pytest.raises(
        DataError, match=r"images\[0\] \(id 1\) has file_name '/etc/hostname', which leaves the dataset folder"
    ):
        load("coco", tmp_path / "coco", "train2017")
    clevr(tmp_path / "clevr")
    scenes = tmp_path / "clevr" / "scenes" / "CLEVR_val_scenes.json"
    document = json.loads(scenes.read_text())
    document["info"], document["scenes"][0]["image_filename"] = True, "../../../CLEVR_val_000000.png"
    scenes.write_text(json.dumps(document))
    with pytest.raises(
        DataError,
        match=r"scene 0 \(\.\./\.\./\.\./CLEVR_val_000000\.png\) has image_filename .*, "
        r"which leaves the dataset folder",
    ):
        load("clevr", tmp_path / "clevr", "val")
    folders._LOADED.clear()
    assert (
        len(load("clevr", tmp_path / "clevr", "val", skip_bad=True)) == 1
    )  # the other scene, in CLEVR's own vocabulary

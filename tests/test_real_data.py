"""Real images and real models through the game: an exported folder is the same game, data with its own vocabulary or
with captions only, the on-disk feature cache, and the real-size preset through every command from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_pretrain
import torch
from folders import clevr_folder, coco_of_world, plain_folder
from hydra import compose, initialize_config_module
from real_models import gpt2_directory, open_clip_checkpoint
from test_speaker import make_speaker
from tiny_game import COLORBLIND, one_thread, tiny_listener, tiny_listeners, word_tokenizer  # noqa: F401 (one_thread: an autouse fixture)

from listener_sub.commands.pretrain import pretrain_summary
from listener_sub.data import DataConfig, DataSource
from listener_sub.data.export import export_world
from listener_sub.evaluation import EvalConfig
from listener_sub.game import Pool, create_game
from listener_sub.models.lm import load_lm
from listener_sub.optim import Schedule
from listener_sub.oracle import oracle_gaps
from listener_sub.rl import RLConfig, Trainer
from listener_sub.world import WorldConfig

POOL = 64  # images per pool in the tiny games


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "listener_sub", *args], capture_output=True, text=True, timeout=900, env=env
    )


def summary(run: Path, name: str = "summary.json") -> dict:
    return json.loads((run / name).read_text())


def pretrain_config(cache: Path, *overrides: str):
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        return compose("pretrain", overrides=[*test_pretrain.TINY, f"cache_dir={cache}", *overrides])


# ---------------------------------------------------------------- the same game through a folder


def test_an_exported_folder_plays_the_same_game_as_the_world(tmp_path):
    for split in ("train", "test"):
        export_world(WorldConfig(), split, POOL, tmp_path / "export", progress=False)
    listeners = tiny_listeners()
    sources = {"world": DataSource(), "folder": DataSource(DataConfig(kind="clevr", root=str(tmp_path / "export")))}
    results, adapters = {}, {}
    for name, source in sources.items():
        game = create_game(source, listeners, COLORBLIND, distractors="hard", pool_size=POOL)
        trainer = Trainer(
            RLConfig(steps=3, boards=8, k=2, schedule=Schedule(1, 1.0), eval_every=0, save_every=0, progress=False),
            make_speaker(word_tokenizer()),
            game,
            tmp_path / name,
            EvalConfig(boards=32),
        )
        results[name] = {**trainer.fit(), **oracle_gaps(game, trainer.eval_boards)}
        adapters[name] = trainer.speaker.adapter.state_dict()
        assert trainer.eval_boards.checked_pool().data.kind == ("synthetic" if name == "world" else "clevr")
    assert (
        results["folder"] == results["world"]
    )  # every metric before and after, the oracle gaps: the same boards and numbers
    assert all(torch.equal(adapters["folder"][k], adapters["world"][k]) for k in adapters["world"])
    assert results["world"]["after"]["truthful"] >= 0 and len(results["world"]["subset_gap"]) == 31


def test_listener_features_are_cached_on_disk_by_listener_and_images(tmp_path, monkeypatch):
    listener = tiny_listener("gray", "grayscale", 2)
    pool = Pool(DataSource().load("test", 40), cache=tmp_path)
    pool.warm(listener)
    table = pool.features(listener, np.arange(40))
    assert len(list((tmp_path / "features").glob("*.npy"))) == 1
    again = Pool(DataSource().load("test", 40), cache=tmp_path)
    monkeypatch.setattr(listener, "encode_images", lambda images: pytest.fail("features computed again"))
    again.warm(listener)
    assert torch.equal(again.features(listener, np.arange(40)), table)
    monkeypatch.undo()
    Pool(DataSource().load("test", 40), cache=tmp_path).warm(
        tiny_listener("full", "full", 2)
    )  # same weights, other perception
    Pool(DataSource().load("val", 40), cache=tmp_path).warm(listener)  # other images
    assert len(list((tmp_path / "features").glob("*.npy"))) == 3


# ---------------------------------------------------------------- models pretrained on other data


def test_models_pretrain_on_a_clevr_folder_in_its_own_vocabulary(tmp_path):
    clevr_folder(tmp_path / "clevr", 48)
    cfg = pretrain_config(
        tmp_path / "cache",
        "data=clevr",
        f"data.root={tmp_path / 'clevr'}",
        "data.image_size=null",
        "data.splits.test=val",
        "game.pool_size=null",
        "evaluation.boards=8",
        "listeners.gray.knowledge.exclude=[shape]",
    )
    found, _ = pretrain_summary(cfg, "all")
    for name in ("full", "gray"):
        assert (
            0 <= found[f"listener/{name}/acc_only/fill"] <= 1 and 0 < found[f"listener/{name}/ceiling_only/shape"] <= 1
        )
    assert (
        0 <= found["speaker/truthful"] <= 1
        and 0 <= found["speaker/mention/fill"] <= 1
        and "speaker/fixed_oracle_gap" not in found
    )
    assert 0.3 < found["corpus/mention/color"] < 0.7  # grammar captions of CLEVR scenes
    lm_dirs = list((tmp_path / "cache" / "lm").iterdir())
    _, tokenizer = load_lm(str(lm_dirs[0] / "model"))
    for word in ("cube", "cylinder", "rubber", "metal", "yellow"):  # CLEVR's words, each one token
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1


def test_models_pretrain_on_captions_only(tmp_path):
    coco_of_world(tmp_path / "coco", 32)
    cfg = pretrain_config(
        tmp_path / "cache",
        "data=coco",
        f"data.root={tmp_path / 'coco'}",
        "data.image_size=64",
        "game.pool_size=null",
        "evaluation.boards=8",
    )
    found, _ = pretrain_summary(cfg, "all")
    assert 0 <= found["listener/full/acc_caption"] <= 1 and "listener/full/acc_only/color" not in found
    assert (
        0 <= found["speaker/mention/color"] <= 1
        and "speaker/truthful" not in found
        and "speaker/mention/shape" not in found
    )
    assert "corpus/mention/color" not in found and "lm/nll/right" not in found  # no scenes to describe
    assert {"wall_s/listeners", "wall_s/lm", "wall_s/speaker"} <= set(found)


# ---------------------------------------------------------------- the real preset from the command line


def real_preset_files(
    root: Path, clip_model: str, n_layer: int, n_embd: int, n_head: int, vocab_size: int | None
) -> list[str]:
    """Random-init files in the real formats and a tiny COCO folder; the overrides that point models=real at them."""
    coco_of_world(root / "coco", 16)
    plain_folder(root / "plain", 12)
    clip = open_clip_checkpoint(root / f"{clip_model}.pt", clip_model)
    texts = [
        a["caption"]
        for s in ("train2017", "val2017")
        for a in json.loads((root / "coco" / "annotations" / f"captions_{s}.json").read_text())["annotations"]
    ]
    lm = gpt2_directory(root / "gpt2", texts, n_layer, n_embd, n_head, vocab_size)
    models = [
        f"listeners.{name}.{key}={value}"
        for name in ("full", "gray")
        for key, value in (("model", clip_model), ("pretrained", clip))
    ]
    return [
        "models=real",
        *models,
        f"speaker.vision.model={clip_model}",
        f"speaker.vision.pretrained={clip}",
        f"lm.name={lm}",
        f"data.root={root / 'coco'}",
        f"cache_dir={root / 'cache'}",
    ]


def train_run(root: Path, preset: list[str]) -> dict:
    """`train` of a few steps from the CLI into root/run; returns its summary, checked."""
    run = root / "run"
    small = [
        "trainer.steps=2",
        "trainer.boards=2",
        "trainer.k=2",
        "evaluation.boards=4",
        "speaker.captioner.steps=2",
        "speaker.captioner.batch_size=4",
        "speaker.captioner.scenes=8",
        "trainer.progress=false",
    ]
    trained = cli("train", *preset, *small, f"hydra.run.dir={run}")
    assert trained.returncode == 0, trained.stderr
    found = summary(run)
    assert found["data"] == {
        "train": f"coco train2017 ({root / 'coco'})",
        "evaluation": f"coco val2017 ({root / 'coco'})",
    }
    for key in (
        "acc/full",
        "acc/gray",
        "gap",
        "reward",
        "kl",
        "lm_nll",
        "mention/color",
        "length",
        "distinct_1",
        "sample/mention/color",
    ):
        assert key in found["after"], key
    assert "truthful" not in found["after"] and "oracle_gap" not in found  # COCO has no scenes
    assert (
        found["config"]["listeners"]["full"]["pretrained"].endswith(".pt") and found["config"]["data"]["kind"] == "coco"
    )
    return found


def run_every_command(root: Path, preset: list[str]) -> None:
    """train (a few steps), eval (in-domain and zero-shot on a plain folder), rollout and inspect of the run, from the
    CLI."""
    run, found = root / "run", train_run(root, preset)
    evaluated = cli("eval", f"checkpoint={run}", f"hydra.run.dir={root / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr
    assert summary(root / "eval")["after"] == pytest.approx(found["after"], abs=1e-6) and "transfer" not in summary(
        root / "eval"
    )
    plain = ["data=folder", f"data.root={root / 'plain'}", "data.image_size=64"]
    moved = cli("eval", f"checkpoint={run}", *plain, f"hydra.run.dir={root / 'eval_plain'}")
    assert moved.returncode == 0, moved.stderr
    transfer = summary(root / "eval_plain")
    assert transfer["data"]["evaluation"] == f"folder . ({root / 'plain'})"
    moved = transfer["transfer"]
    assert moved["in_domain_gap"] == found["after"]["gap"] and moved["gap"] == transfer["after"]["gap"]
    assert moved["ratio"] == (pytest.approx(moved["gap"] / moved["in_domain_gap"]) if moved["in_domain_gap"] else None)
    assert transfer["config"]["data"]["kind"] == "coco" and transfer["config"]["evaluation"]["data"]["kind"] == "folder"

    played = cli("rollout", f"checkpoint={run}", "episodes=2", "render=rgb_array", f"hydra.run.dir={root / 'rollout'}")
    assert played.returncode == 0, played.stderr
    records = [json.loads(line) for line in (root / "rollout" / "rollouts.jsonl").read_text().splitlines()]
    assert len(records) == 2 and len(list((root / "rollout" / "frames").glob("*.png"))) == 2
    assert "oracle_gap" not in summary(root / "rollout", "rollout_summary.json")

    inspected = cli("inspect", f"run={run}", "boards=2", *plain, f"hydra.run.dir={root / 'inspect'}")
    assert inspected.returncode == 0, inspected.stderr
    page = (root / "inspect" / "report.html").read_text()
    assert f"boards of folder . ({root / 'plain'})" in page and "img_0000" in page and ">oracle<" not in page


def test_the_real_preset_trains_on_a_coco_folder(tmp_path):
    """models=real (its data, pretrained files, HF LM directory) on small architectures in the real formats: train."""
    train_run(tmp_path, real_preset_files(tmp_path, "ls-vit-tiny-64", 2, 64, 2, None))


@pytest.mark.slow
def test_the_real_preset_runs_every_command_on_a_coco_folder(tmp_path):
    """The same, through every command: train, eval (in-domain and on a plain folder), rollout, inspect."""
    run_every_command(tmp_path, real_preset_files(tmp_path, "ls-vit-tiny-64", 2, 64, 2, None))


@pytest.mark.slow
def test_the_real_size_preset_runs_every_command(tmp_path):
    """ViT-B-32 listeners and speaker tower, GPT-2 124M (12 x 768, 50,257 embedding rows), random-init files, on CPU."""
    run_every_command(tmp_path, real_preset_files(tmp_path, "ViT-B-32", 12, 768, 12, 50257))


# ---------------------------------------------------------------- every folder kind through every command


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["clevr", "coco", "folder", "world_to_folder"])
def test_every_folder_kind_runs_through_every_command(tmp_path, kind):
    """Tiny models pretrained on the folder itself (clevr, coco) or on the embedded world (a plain folder has no
    captions); world_to_folder: RL on the embedded world, every evaluation on a plain folder (evaluation.data)."""
    root = f"data.root={tmp_path / 'data'}"
    if kind == "clevr":
        clevr_folder(tmp_path / "data", 48)
        data = ["data=clevr", "data.image_size=null", root, "data.splits.test=val"]
    elif kind == "coco":
        coco_of_world(tmp_path / "data", 32)
        data = ["data=coco", "data.image_size=64", root]
    elif kind == "folder":
        plain_folder(tmp_path / "data", 32)
        data = ["data=folder", "data.image_size=64", root, "+data@pretrain_data=synthetic"]
    else:
        plain_folder(tmp_path / "data", 32)
        data = [
            "+data@evaluation.data=folder",
            "evaluation.data.image_size=64",
            f"evaluation.data.root={tmp_path / 'data'}",
        ]
    setup = [
        *test_pretrain.TINY,
        *data,
        "game.pool_size=null" if kind != "world_to_folder" else "game.pool_size=64",
        "evaluation.boards=8",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    steps = ["trainer.steps=2", "trainer.boards=4", "trainer.k=2", "trainer.progress=false"]
    preview = [*data[:3], "scenes=3"] if kind != "world_to_folder" else ["scenes=3"]
    for command, args in (("preview", preview), ("pretrain", setup), ("train", [*setup, *steps])):
        done = cli(command, *args, f"hydra.run.dir={tmp_path / command}")
        assert done.returncode == 0, (command, done.stderr)
    run = tmp_path / "train"
    found = summary(run)
    assert ("oracle_gap" in found) == (kind == "clevr") and ("truthful" in found["after"]) == (kind == "clevr")
    if kind == "world_to_folder":
        assert found["data"] == {"train": "synthetic train", "evaluation": f"folder . ({tmp_path / 'data'})"}
    for command, args in (
        ("eval", [f"checkpoint={run}"]),
        ("rollout", [f"checkpoint={run}", "episodes=2"]),
        ("inspect", [f"run={run}", "boards=2"]),
    ):
        done = cli(command, *args, f"hydra.run.dir={tmp_path / command}")
        assert done.returncode == 0, (command, done.stderr)
    assert summary(tmp_path / "eval")["after"] == pytest.approx(found["after"], abs=1e-6)


# ---------------------------------------------------------------- what the data cannot serve, before anything is built


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["data=coco", "game.distractors=hard"],
            r"game.distractors=hard needs data with scene attributes \(synthetic, clevr\); data is coco",
        ),
        (
            ["data=folder"],
            r"listeners.full, listeners.gray, speaker.vision, lm, speaker.captioner would be trained locally on data "
            r"\(folder\), which has no captions",
        ),
        (
            ["data=coco", "listeners.gray.knowledge.exclude=[color]"],
            r"listeners.gray: knowledge.exclude needs pretraining data with scene attributes",
        ),
        (["game.pool_size=null"], r"the embedded world needs a number of scenes"),
        (
            ["data=coco", "evaluation.split=dev"],
            r"COCO captions file not found: .*captions_dev\.json; "
            r"found captions_train2017\.json, captions_val2017\.json",
        ),
        (
            ["+data@evaluation.data=folder", "evaluation.data.root=/no/such/folder"],
            r"data root /no/such/folder is not a directory",
        ),
        (["listeners.full.finetune=true"], r"listeners\.full: finetune=true needs pretrained \(a tag or checkpoint"),
        (["data=clevr"], r"data.root is not set"),
    ],
)
def test_data_the_run_cannot_use_is_one_user_error_before_anything_is_built(tmp_path, overrides, message):
    from listener_sub.commands.common import run_spec
    from listener_sub.errors import UserError

    coco_of_world(tmp_path / "coco", 4)
    roots = (
        [f"data.root={tmp_path / 'coco'}"]
        if "data=coco" in overrides
        else [f"data.root={tmp_path}"]
        if "data=folder" in overrides
        else []
    )
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose("train", overrides=[*overrides, *roots, f"cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(UserError, match=message):
        run_spec(cfg, ["train"])
    assert not (tmp_path / "cache").exists()


def test_a_pretrained_listener_is_fine_tuned_through_its_perception(tmp_path):
    from listener_sub.assembly import Assembly
    from listener_sub.cache import ArtifactCache
    from listener_sub.commands.common import run_spec

    start = open_clip_checkpoint(tmp_path / "start.pt", "ls-rn-tiny-64", seed=5)
    cfg = pretrain_config(tmp_path / "cache", f"listeners.gray.pretrained={start}", "listeners.gray.finetune=true")
    models = Assembly(run_spec(cfg), ArtifactCache(tmp_path / "cache"), progress=False)
    tuned = models.listener("gray").clip.state_dict()
    assert len(models.cache.built) == 1 and "listeners" in models.cache.wall_s  # trained by the recipe, cached
    initial = torch.load(start, weights_only=True)["state_dict"]
    scratch = (
        Assembly(run_spec(pretrain_config(tmp_path / "cache")), ArtifactCache(tmp_path / "cache"), progress=False)
        .listener("gray")
        .clip.state_dict()
    )
    weight = (
        "visual.stem.0.weight"
        if "visual.stem.0.weight" in initial
        else next(k for k in initial if initial[k].ndim == 4)
    )
    assert (tuned[weight] - initial[weight]).abs().max() < (
        scratch[weight] - initial[weight]
    ).abs().max()  # it started from the file
    assert not torch.equal(tuned[weight], initial[weight])

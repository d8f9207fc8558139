"""Every bad input through the command line: exit status 2 and one line naming the problem and the fix, before any
model is built (the artifact cache stays empty).

One table: each row is a command, its overrides ({tmp}: the row's own folder), the line's expected text (a regular
expression after `listener-sub COMMAND: error: `) and, when the row needs files, a function that makes them. The
commands run in this process (`listener_sub.cli.main`, as the console script calls it). Bad env actions are a Python
API's ValueErrors: test_envs.py has their table.
"""

import re
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import open_clip
import pytest
import torch
from folders import clevr, coco, image
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from transformers import GPT2Config

from listener_sub import cli
from listener_sub.adapters import create_adapter
from listener_sub.adapters.io import write_adapter
from listener_sub.files import write_json
from listener_sub.models.listener import register_model_configs
from listener_sub.pretrain.listeners import save_listener
from listener_sub.runs import ADAPTER, STATE

RN = "ls-rn-tiny-64"  # the default listeners' and speaker's CLIP


# ---------------------------------------------------------------- the files bad rows point at


def vlms(root: Path) -> None:
    """A tiny LLaVA with its processor, and a text-only GPT-2 config where a VLM should be."""
    from tiny_vlms import save_llava

    save_llava(root / "llava")
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(root / "gpt2")


def clip_files(root: Path) -> None:
    """A tiny RN CLIP's safetensors cut short and cut to its header's start, a text file, and a ViT's weights as .pt."""
    register_model_configs()
    good = save_listener(open_clip.create_model(RN), root / "good.safetensors").read_bytes()
    (root / "cut.safetensors").write_bytes(good[:-100])  # the download stopped early
    (root / "head.safetensors").write_bytes(good[:50])
    (root / "notes.pt").write_text("not a checkpoint")
    torch.save(
        {"state_dict": open_clip.create_model("ls-vit-tiny-64").state_dict()}, root / "vit.pt"
    )  # another architecture


def lm_dirs(root: Path) -> None:
    """An LM directory without tokenizer files, one without config.json, and one whose config.json is cut short."""
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(root / "no_tokenizer")
    (root / "no_config").mkdir()
    (root / "torn").mkdir()
    (root / "torn" / "config.json").write_text('{"model_type": "gpt2", "n_embd": ')
    (root / "torn" / "tokenizer.json").write_text("{}")


def adapters(root: Path) -> None:
    """Perceiver adapters: one that fits the default speaker (tokens of width 256 -> LM width 64), one for an LM of
    width 32, the fitting one cut short, and one whose weights are another adapter's."""
    fits = create_adapter("perceiver", d_vision=256, d_lm=64, n_latents=8)
    write_adapter(fits, root / "fits.safetensors")
    write_adapter(create_adapter("perceiver", d_vision=256, d_lm=32, n_latents=8), root / "other_lm.safetensors")
    (root / "cut.json").write_text((root / "fits.json").read_text())
    (root / "cut.safetensors").write_bytes((root / "fits.safetensors").read_bytes()[:-64])
    (root / "swapped.json").write_text((root / "other_lm.json").read_text())
    (root / "swapped.safetensors").write_bytes((root / "fits.safetensors").read_bytes())


def folders(root: Path) -> None:
    """Image folders: empty, 2 images (a board is 4), 5 images and random bytes named .png; a COCO folder with its
    captions JSON cut short; a CLEVR folder whose scene has a colour CLEVR has not."""
    (root / "empty").mkdir()
    for i in range(2):
        image(root / "two" / f"{i}.png", colour=(40 * i, 0, 0))
    for i in range(5):
        image(root / "corrupt" / f"{i}.png", colour=(40 * i, 0, 0))
    (root / "corrupt" / "9.png").write_bytes(np.random.default_rng(0).bytes(300))
    coco(root / "coco")
    captions = root / "coco" / "annotations" / "captions_train2017.json"
    captions.write_text(captions.read_text()[:40].replace(", ", ",\n"))
    clevr(root / "clevr", first_colour="pink")


def runs(root: Path) -> None:
    """A folder that is not a run; a run whose checkpoint was taken with trainer.lr=0.01 (for resume); a run without
    summary or checkpoint; and a train run directory whose saved config is not YAML."""
    (root / "not_a_run").mkdir()
    (root / "not_a_run" / "notes.txt").write_text("hello")
    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        started = compose("train", overrides=["trainer.lr=0.01"])
    write_json(root / "run" / "run_config.json", started)
    (root / "run" / ".hydra").mkdir()
    OmegaConf.save(started, root / "run" / ".hydra" / "config.yaml")  # as Hydra saves a run's config
    step = root / "run" / "checkpoints" / "step_000002"
    step.mkdir(parents=True)
    write_adapter(create_adapter("perceiver", d_vision=256, d_lm=64, n_latents=8), step / ADAPTER)
    (step / STATE).write_text("{}")
    (root / "half_run" / ".hydra").mkdir(parents=True)  # a run stopped before its first checkpoint
    (root / "half_run" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (root / "half_run" / "metrics.jsonl").write_text('{"step": 0}\n')
    (root / "broken_run" / ".hydra").mkdir(parents=True)
    (root / "broken_run" / ".hydra" / "config.yaml").write_text("a: [unclosed\n")
    step = root / "broken_run" / "checkpoints" / "step_000001"
    step.mkdir(parents=True)
    write_adapter(create_adapter("perceiver", d_vision=256, d_lm=64, n_latents=8), step / ADAPTER)
    (step / STATE).write_text("{}")


# ---------------------------------------------------------------- the table

TABLE = [
    # config keys and group options
    (
        "train",
        ["no_such_key=1"],
        r"Could not override 'no_such_key'\. To append to your config use \+no_such_key=1",
        None,
    ),
    ("train", ["experiment=nope"], r"In 'train': Could not find 'experiment/nope'", None),
    (
        "train",
        ["speaker.adapter=transformer"],
        r"In 'speaker/default': Could not find 'speaker/adapter/transformer' "
        r"Available options in 'speaker/adapter': mlp perceiver",
        None,
    ),
    (
        "train",
        ["trainer.steps=many"],
        r"Error merging override trainer\.steps=many \(Value 'many' of type 'str' could not be converted to Integer\)",
        None,
    ),
    ("train", ["+speaker.adapter.depht=3"], r"speaker\.adapter: the perceiver adapter has no setting\(s\) depht", None),
    ("train", ["speaker.adapter.width=wide"], r"speaker\.adapter\.width: ", None),
    # out-of-range values
    ("train", ["game.n_images=1"], r"game: need 2 <= n_images <= pool_size; got n_images=1, pool_size=4096", None),
    ("train", ["game.n_images=100000"], r"game: need 2 <= n_images <= pool_size; got n_images=100000", None),
    ("train", ["reward.lam=-1"], r"reward: lam=-1\.0 < 0 would reward the subtracted listeners .* use lam >= 0", None),
    ("train", ["trainer.k=1"], r"trainer: bad trainer settings: k=1 with baseline=rloo \(needs k >= 2\)", None),
    ("train", ["trainer.max_new_tokens=0"], r"trainer: .*max_new_tokens must be >= 1", None),
    ("train", ["trainer.temperature=0"], r"trainer: .*temperature must be > 0", None),
    (
        "train",
        ["trainer.steps=-1", "trainer.boards=-3"],
        r"trainer: bad trainer settings: steps=-1 \(must be >= 1\); boards=-3 \(must be >= 1\)",
        None,
    ),
    ("train", ["evaluation.boards=-1"], r"evaluation\.boards=-1; evaluate on at least one board", None),
    (
        "train",
        ["speaker.adapter.n_latents=4"],
        r"lm\.model\.prefix_len=4 \(speaker\.adapter\.n_latents\) is shorter than one object's description",
        None,
    ),
    (
        "train",
        ["listeners.full.perception={name:blur,sigma:-1}"],
        r"listeners\.full\.perception: .*sigma must be > 0",
        None,
    ),
    # unknown reward score, baseline, perception, adapter, distractor policy, listener
    ("train", ["reward.score=best"], r"reward: unknown reward score 'best'", None),
    (
        "train",
        ["trainer.baseline=median"],
        r"trainer: .*baseline=median \(choose one of: rloo, mean, ema, none\)",
        None,
    ),
    (
        "train",
        ["listeners.full.perception=sepia"],
        r"listeners\.full\.perception: unknown perception 'sepia'; choose one of: full, grayscale",
        None,
    ),
    (
        "train",
        ["listeners.full.perception={_target_:no_such_module.Sepia}"],
        r"listeners\.full\.perception: cannot build no_such_module\.Sepia",
        None,
    ),
    (
        "train",
        ["listeners.full.perception={_target_:listener_sub.rewards.Reward,intended:{a:1}}"],
        r".*is not a listener_sub\.perception\.Perception",
        None,
    ),
    (
        "train",
        ["speaker.adapter.kind=transformer"],
        r"In 'speaker/default': Could not find 'speaker/adapter/transformer' "
        r"Available options in 'speaker/adapter': mlp perceiver",
        None,
    ),
    ("train", ["game.distractors=easy"], r"game: unknown distractors 'easy'", None),
    (
        "train",
        ["+reward.subtracted.nobody=1.0"],
        r"listener 'nobody' plays .* not defined; define it with \+listeners\.nobody",
        None,
    ),
    # unknown models; pretrained files that cannot be the model's
    (
        "train",
        ["listeners.full.model=NoSuchModel"],
        r"listeners\.full\.model: unknown open_clip model 'NoSuchModel'",
        None,
    ),
    (
        "train",
        ["speaker.vision.model=NoSuchModel"],
        r"speaker\.vision\.model: unknown open_clip model 'NoSuchModel'",
        None,
    ),
    (
        "train",
        ["lm.name=no-such-org/no-such-lm"],
        r"cannot load the LM 'no-such-org/no-such-lm' \(We couldn't connect .*\); "
        r"pass a directory written by save_pretrained",
        None,
    ),
    (
        "train",
        ["listeners.gray.pretrained=/no/such/gray.pt"],
        r"listeners\.gray\.pretrained: /no/such/gray\.pt does not exist",
        None,
    ),
    (
        "train",
        ["listeners.gray.pretrained={tmp}/cut.safetensors"],
        r"listeners\.gray\.pretrained: .*cut\.safetensors is not a readable checkpoint: truncated: \d+ bytes of \d+; "
        rf"pass a checkpoint of listeners\.gray\.model={RN}",
        clip_files,
    ),
    (
        "train",
        ["listeners.gray.pretrained={tmp}/head.safetensors"],
        r"listeners\.gray\.pretrained: .*head\.safetensors is not a readable checkpoint: no safetensors header",
        clip_files,
    ),
    (
        "train",
        ["listeners.gray.pretrained={tmp}/notes.pt"],
        r"listeners\.gray\.pretrained: .*notes\.pt is not a readable checkpoint: not plain weights",
        clip_files,
    ),
    (
        "train",
        ["listeners.gray.pretrained={tmp}/vit.pt"],
        rf"listeners\.gray\.pretrained: .*vit\.pt is not a {RN} checkpoint \(\d+ tensors missing, e\.g\. .*\); "
        rf"pass a checkpoint of listeners\.gray\.model={RN}",
        clip_files,
    ),
    # LM directories
    (
        "train",
        ["lm.name=/no/such/lm"],
        r"LM directory /no/such/lm does not exist; run `listener-sub pretrain stage=lm` or point the LM setting "
        r"at a directory written by save_pretrained",
        None,
    ),
    (
        "train",
        ["lm.name={tmp}/no_tokenizer"],
        r".*no_tokenizer has no tokenizer files \(tokenizer\.json, .*\); save the tokenizer beside the model",
        lm_dirs,
    ),
    (
        "train",
        ["lm.name={tmp}/no_config"],
        r".*no_config has no config\.json; point the LM setting at a directory written by save_pretrained",
        lm_dirs,
    ),
    (
        "train",
        ["lm.name={tmp}/torn"],
        r"cannot load the LM '.*torn' \(.*is not a valid JSON file\.\); pass a directory written by save_pretrained",
        lm_dirs,
    ),
    # the device
    ("train", ["device=tpu"], r"device=tpu is not a device; use device=auto, cpu, cuda or cuda:N", None),
    (
        "train",
        ["device=cuda"],
        r"device=cuda but no CUDA device is available; use device=auto or device=cpu",
        None,
    ),  # (CUDA hidden below)
    # data folders: missing, empty, smaller than a board, corrupt images and JSON
    (
        "train",
        ["+data@evaluation.data=folder", "evaluation.data.root=/no/such/folder"],
        r"data root /no/such/folder is not a directory; set data\.root",
        None,
    ),
    (
        "train",
        ["+data@evaluation.data=folder", "evaluation.data.root={tmp}/empty"],
        r".*empty holds no image files \(\.png, .*\); point data\.root \(and the split\) at a folder of images",
        folders,
    ),
    (
        "train",
        ["+data@evaluation.data=folder", "evaluation.data.root={tmp}/two"],
        r"folder \. \(.*two\) has 2 usable image\(s\), fewer than one board of game\.n_images=4; "
        r"add images or lower game\.n_images",
        folders,
    ),
    (
        "train",
        ["+data@evaluation.data=folder", "evaluation.data.root={tmp}/corrupt"],
        r"cannot read image .*9\.png.*skip_bad=true",
        folders,
    ),
    (
        "train",
        ["+data@evaluation.data=coco", "evaluation.data.root={tmp}/coco", "evaluation.split=train2017"],
        r".*captions_train2017\.json: malformed JSON at line 2, column 14: "
        r"Unterminated string starting at; fix or re-download the file$",
        folders,
    ),
    (
        "train",
        ["+data@evaluation.data=clevr", "evaluation.data.root={tmp}/clevr", "evaluation.split=val"],
        r".*CLEVR_val_scenes\.json: scene 0 \(CLEVR_val_000000\.png\) object 0 has color 'pink'",
        folders,
    ),
    ("train", ["data=clevr"], r"data\.root is not set; data=clevr needs the dataset folder", None),
    # eval / inspect / rollout pointed at something that is not a run or a checkpoint, or a checkpoint that does not fit
    (
        "eval",
        ["checkpoint={tmp}/not_a_run"],
        r"checkpoint=.*not_a_run holds no adapter; pass a train run dir, a checkpoint dir \(RUN/checkpoints/step_N\), "
        r"an adapter file \(adapter\.safetensors\) or a LoRA adapter folder \(adapter_model\.safetensors\)",
        runs,
    ),
    ("eval", ["checkpoint=/no/such/run"], r"checkpoint=/no/such/run holds no adapter", None),
    (
        "eval",
        ["checkpoint={tmp}/not_a_run/notes.txt"],
        r"checkpoint: adapter .*notes\.txt \(and notes\.json beside it\) not found",
        runs,
    ),
    (
        "eval",
        ["checkpoint={tmp}/other_lm.safetensors"],
        r"checkpoint: the perceiver adapter .*other_lm\.safetensors maps width 256 -> 32, "
        r"but speaker\.vision\.model=ls-rn-tiny-64 gives 256 "
        r"and the locally trained LM \(lm\.model\.n_embd\) takes 64; "
        r"use it with the vision model and LM it was trained for",
        adapters,
    ),
    (
        "eval",
        ["checkpoint={tmp}/fits.safetensors", "speaker.vision.model=ls-vit-tiny-64"],
        r"checkpoint: the perceiver adapter .*fits\.safetensors maps width 256 -> 64, "
        r"but speaker\.vision\.model=ls-vit-tiny-64 gives 64",
        adapters,
    ),
    (
        "eval",
        ["checkpoint={tmp}/cut.safetensors"],
        r"checkpoint: adapter .*cut\.safetensors is unreadable \(truncated: \d+ bytes of \d+\)",
        adapters,
    ),
    (
        "eval",
        ["checkpoint={tmp}/swapped.safetensors"],
        r"checkpoint: adapter .*swapped\.safetensors does not hold the perceiver adapter swapped\.json describes "
        r"\(\d+ of other shapes, e\.g\. .*\)",
        adapters,
    ),
    (
        "eval",
        ["checkpoint={tmp}/run", "+trainer.gamma=1"],
        r"trainer\.gamma: Key 'gamma' not in 'RLConfig' \(fix the trainer\.\* settings\)$",
        runs,
    ),
    ("eval", ["checkpoint={tmp}/run", "data.kind=imagenet"], r"data\.kind: unknown kind 'imagenet'", runs),
    (
        "eval",
        ["checkpoint={tmp}/broken_run"],
        r".*broken_run/\.hydra/config\.yaml is unreadable \(.*\); pass an intact train run",
        runs,
    ),
    (
        "inspect",
        ["run={tmp}/not_a_run"],
        r"run=.*not_a_run is missing .*; pass the directory of a finished listener-sub train run",
        runs,
    ),
    (
        "inspect",
        ["run={tmp}/half_run"],
        r"run=.*half_run is missing summary\.json, checkpoints/step_N/adapter\.safetensors \(or lora/\) \+ "
        r"trainer\.json; "
        r"pass the directory of a finished listener-sub train run",
        runs,
    ),
    (
        "inspect",
        ["run=/no/such/run"],
        r"run=/no/such/run is not a directory; pass the directory of a listener-sub train run",
        None,
    ),
    (
        "rollout",
        ["speaker.checkpoint=/no/such/adapter.safetensors"],
        r"speaker\.checkpoint: /no/such/adapter\.safetensors does not exist; fix the path or set it to null",
        None,
    ),
    ("rollout", ["speaker.checkpoint={tmp}/not_a_run"], r"speaker\.checkpoint=.*not_a_run holds no adapter", runs),
    (
        "rollout",
        ["speaker.checkpoint={tmp}/other_lm.safetensors"],
        r"speaker\.checkpoint: the perceiver adapter .*other_lm\.safetensors maps width 256 -> 32",
        adapters,
    ),
    ("rollout", ["checkpoint={tmp}/not_a_run"], r"checkpoint=.*not_a_run holds no adapter", runs),
    ("rollout", ["run={tmp}/not_a_run"], r"run=.*not_a_run is not a train run \(no \.hydra/config\.yaml in it\)", runs),
    (
        "eval",
        ["speaker.checkpoint={tmp}/run"],
        r"speaker\.checkpoint=.*run names the captioning adapter, but this is a train run's: play the trained speaker "
        r"with checkpoint=",
        runs,
    ),
    (
        "eval",
        ["checkpoint={tmp}/run", "experiment=control"],
        r"experiment=control: a train run's game is its saved config, where config groups are already resolved",
        runs,
    ),
    (
        "rollout",
        ["+speaker_checkpoint={tmp}/run"],
        r"\+speaker_checkpoint=.*: rollout has no setting 'speaker_checkpoint', so it would be ignored",
        runs,
    ),
    ("inspect", ["run={tmp}/run", "format=svg"], r"format=svg is not one of: html, text, png", runs),
    (
        "inspect",
        ["run={tmp}/run", "format=text", "out=board.txt"],
        r"out=board\.txt: format=text prints to the terminal",
        runs,
    ),
    ("rollout", ["episodes=0"], r"episodes=0; play at least one", None),
    ("rollout", ["render=video"], r"unknown render=video; choose one of: null, ansi, rgb_array", None),
    # resume
    (
        "train",
        ["resume=true", "hydra.run.dir={tmp}/fresh"],
        r"resume=true but .*fresh/checkpoints holds no checkpoint; pass the run's directory as hydra\.run\.dir=DIR",
        None,
    ),
    (
        "train",
        ["hydra.run.dir={tmp}/run"],
        r".*run already holds checkpoints; continue that run with resume=true or choose another hydra\.run\.dir",
        runs,
    ),
    (
        "train",
        ["resume=true", "hydra.run.dir={tmp}/run"],
        r"resume=true with settings that change the run: trainer\.lr \(0\.01 -> 0\.0003\); "
        r"drop those overrides, or add resume_force=true",
        runs,
    ),
    # evaluation's decoding
    (
        "eval",
        ["checkpoint=captioner", "speaker.decode=beam"],
        r"speaker: decode=beam: unknown decoding; choose one of: greedy, rerank",
        None,
    ),
    (
        "eval",
        ["checkpoint=captioner", "speaker.decode=rerank", "speaker.rerank.n=0"],
        r"speaker: rerank\.n=0: sample at least one caption per board \(fix the speaker\.\* settings\)$",
        None,
    ),
    (
        "train",
        ["speaker.decode=rerank"],
        r"speaker\.decode=rerank chooses evaluation captions; train with speaker\.decode=greedy, "
        r"then rerank with `listener-sub eval checkpoint=RUN speaker\.decode=rerank`",
        None,
    ),
    # other commands
    (
        "preview",
        ["no_such_key=1"],
        r"Could not override 'no_such_key'\. To append to your config use \+no_such_key=1",
        None,
    ),
    (
        "preview",
        ["data=coco"],
        r"data\.root is not set; data=coco needs the dataset folder: data\.root=/path/to/folder$",
        None,
    ),
    ("bench", ["parts=[speed]"], r"parts=\['speed'\]", None),
    (
        "results",
        ["runs={tmp}/sweep", "~rows", "+rows={}"],
        r"rows is empty; name at least one row \(rows\.NAME=\[overrides\]\)$",
        None,
    ),
    (
        "results",
        ["runs={tmp}/sweep", "launch_first=[colorblind_vml]"],
        r"launch_first names \['colorblind_vml'\], which are not rows; choose from: colorblind, .*, colorblind_vlm$",
        None,
    ),
    (
        "results",
        ["runs={tmp}/sweep", "jobs=2"],
        r"jobs=2: results hands its runs to a Hydra launcher: hydra\.launcher\.n_jobs=N runs N side by side",
        None,
    ),
    (
        "results",
        ["runs={tmp}/sweep", "hydra/launcher=no_such_launcher"],
        r"In 'hydra/config': Could not find 'hydra/launcher/no_such_launcher' Available options in 'hydra/launcher': "
        r"basic joblib submitit_local submitit_slurm$",
        None,
    ),
    (
        "results",
        ["runs={tmp}/sweep", "hydra/launcher=submitit_slurm", "hydra.launcher.gpus=1"],
        r"Could not override 'hydra\.launcher\.gpus'.*Key 'gpus' not in 'SlurmQueueConf'",
        None,
    ),
    ("train", ["speaker=vlm", "speaker.name=/no/such/vlm"], r"speaker\.name=/no/such/vlm is not a directory", None),
    (
        "train",
        ["speaker=vlm", "speaker.name={tmp}/gpt2"],
        r"speaker\.name=.* is a 'gpt2' model, not an image-text",
        vlms,
    ),
    (
        "train",
        ["speaker=vlm", "speaker.name={tmp}/llava", "speaker.target_modules=[query]"],
        r"speaker\.target_modules=\['query'\]: the language model has no linear module\(s\) named \['query'\]",
        vlms,
    ),
    (
        "train",
        ["speaker=vlm", "speaker.name={tmp}/llava", "speaker.prompt=" + "describe " * 120],
        r"speaker\.prompt: the prompt with its image takes \d+ tokens .* past the model's context of 128",
        vlms,
    ),
    (
        "train",
        ["speaker=vlm", "speaker.name={tmp}/llava", "speaker.captioner.steps=3"],
        r"Could not override 'speaker\.captioner\.steps'.*speaker=vlm has no captioning warm-up",
        vlms,
    ),
    (
        "train",
        ["speaker=vlm", "speaker.train.vision_model=ls-rn-tiny-64"],
        r"speaker\.train\.vision_model=ls-rn-tiny-64: the embedded VLM needs an open_clip ViT with class-token pooling",
        None,
    ),
    (
        "train",
        ["speaker=vlm", "speaker.target_modules=[c_attn]"],
        r"speaker\.target_modules=\['c_attn'\]: the language model has no linear module\(s\) named \['c_attn'\]",
        None,
    ),
    ("play", ["boards=0"], r"boards=0; play at least one board", None),
    ("play", ["port=70000"], r"port=70000 is not a TCP port", None),
    ("study", ["report", "dir={tmp}/none"], r"dir=.*none holds no study\.db; create the study first", None),
    ("study", ["create", "dir={tmp}/s", "study.boards=6"], r"study\.boards=6 must be a positive multiple of the", None),
    (
        "study",
        ["create", "dir={tmp}/s"],
        r"study\.conditions names the trained speaker but no run= or checkpoint",
        None,
    ),
    ("study", ["action=undo", "dir={tmp}/s"], r"action=undo is not one of: create, serve, report", None),
    (
        "study",
        ["create", "dir={tmp}/s", "study.conditions=[{speaker:base,perception:xray},{speaker:oracle,perception:full}]"],
        r"study\.conditions\[0\]\.perception: unknown perception 'xray'",
        None,
    ),
]


def row_id(row: tuple) -> str:
    command, args, _, _ = row
    return f"{command}:" + ",".join(arg.replace("{tmp}/", "").replace("/", "_") for arg in args)


@pytest.mark.parametrize("command, args, message, make", TABLE, ids=[row_id(row) for row in TABLE])
def test_a_bad_input_is_one_line_with_exit_status_2_before_anything_is_built(
    command, args, message, make, tmp_path, isolated_cache, capsys, monkeypatch
):
    if make is not None:
        make(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the command line sets it for Hydra
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # a hub name fails at once, without retries
    monkeypatch.setattr(
        torch.cuda, "is_available", lambda: False
    )  # device=cuda on a machine without CUDA, wherever this runs
    argv = [command, *(arg.replace("{tmp}", str(tmp_path)) for arg in args)]
    if not any(arg.startswith("hydra.run.dir=") for arg in argv):
        argv.append(f"hydra.run.dir={tmp_path / 'out'}")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert re.match(rf"listener-sub {command}: error: {message}", lines[0]), lines[0]
    built = [
        path
        for path in isolated_cache.rglob("*")
        if path.is_file() and path.relative_to(isolated_cache).parts[0] != "images"
    ]
    assert (
        not built
    )  # no model was built (a folder's decoded images may be cached: reading them counts a board's worth)

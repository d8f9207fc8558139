"""Every documented option of the game through a tiny `train`: one Hydra multirun over one config file per option.

The options are read from where they are defined (the config groups' files, the library's registries), so an option
added there is smoke-tested here without editing this file. A data source needs a folder: the test writes a tiny one for
each (`DATA_FOLDERS`), and a data source it has none for fails the test.
"""

import json
import subprocess
import sys
from pathlib import Path

import yaml
from folders import clevr_folder, coco_of_world, plain_folder
from test_rl import TINY

from listener_sub.adapters import ADAPTERS
from listener_sub.game import CHOICES, DISTRACTORS
from listener_sub.perception import PERCEPTIONS
from listener_sub.rewards import SCORES
from listener_sub.rl import BASELINES

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def group(name: str) -> list[str]:
    """The options of a config group: its yaml files."""
    return sorted(path.stem for path in (CONFIGS / name).glob("*.yaml"))


def options() -> dict[str, tuple[str, dict]]:
    """Option name -> (the dotted key it sets, the `# @package _global_` config that selects it)."""
    found: dict[str, tuple[str, dict]] = {}
    for world in group("world"):
        found[f"world_{world}"] = ("world", {"defaults": [{"override /world": world}]})
    for experiment in group("experiment"):
        found[f"experiment_{experiment}"] = ("experiment", {"defaults": [{"override /experiment": experiment}]})
    for kind in ADAPTERS:
        found[f"adapter_{kind}"] = ("speaker.adapter.kind", {"defaults": [{"override /speaker/adapter": kind}]})
    for perception in PERCEPTIONS:
        found[f"perception_{perception}"] = (
            "listeners.gray.perception",
            {"listeners": {"gray": {"perception": perception}}},
        )
    for score in SCORES:
        found[f"score_{score}"] = ("reward.score", {"reward": {"score": score}})
    for baseline in BASELINES:
        found[f"baseline_{baseline}"] = ("trainer.baseline", {"trainer": {"baseline": baseline}})
    for distractors in DISTRACTORS:
        found[f"distractors_{distractors}"] = ("game.distractors", {"game": {"distractors": distractors}})
    for choice in CHOICES:
        found[f"choice_{choice}"] = ("game.choice", {"game": {"choice": choice}})
    return found


DATA_FOLDERS = {  # data source -> (write a tiny folder of it at root, its data.* settings besides data.root)
    "clevr": (lambda root: clevr_folder(root, 64), {"image_size": None, "splits": {"test": "val"}}),
    "coco": (lambda root: coco_of_world(root, 64), {"image_size": 64}),
    "folder": (lambda root: plain_folder(root, 64), {"image_size": 64}),  # no captions: the models learn from the world
}


def data_options(root: Path) -> dict[str, tuple[str, dict]]:
    """Every data source but the embedded world (the default, run by every other option) as an option, its folder
    written."""
    found: dict[str, tuple[str, dict]] = {}
    for kind in group("data"):
        if kind == "synthetic":
            continue
        assert kind in DATA_FOLDERS, f"data={kind} has no tiny folder to smoke-test it with: add one to DATA_FOLDERS"
        write, settings = DATA_FOLDERS[kind]
        write(root / kind)
        defaults = ([{"/data@pretrain_data": "synthetic"}] if kind == "folder" else []) + [
            {"override /data": kind}
        ]  # overrides last
        found[f"data_{kind}"] = ("data.kind", {"defaults": defaults, "data": {**settings, "root": str(root / kind)}})
    return found


def test_every_documented_option_trains(tmp_path):
    chosen = options() | data_options(tmp_path / "data")
    folder = tmp_path / "my_configs" / "smoke"
    folder.mkdir(parents=True)
    for name, (_, node) in chosen.items():
        (folder / f"{name}.yaml").write_text("# @package _global_\n" + yaml.safe_dump(node))
    sweep = tmp_path / "sweep"
    args = [  # one multirun, its runs two at a time on joblib's workers of one torch thread each
        "train",
        "-m",
        *TINY,
        "trainer.steps=2",
        "trainer.eval_every=0",
        "evaluation.boards=4",
        f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra:runtime.choices.smoke}",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"+smoke={','.join(chosen)}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "listener_sub", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for name, (key, node) in chosen.items():
        summary = json.loads((sweep / name / "summary.json").read_text())
        assert summary["steps"] == 2 and -1.0 <= summary["after"]["gap"] <= 1.0, name
        if "defaults" not in node:  # the option's own value reached the run's config
            value, setting = summary["config"], node
            for part in key.split("."):
                value, setting = value[part], setting[part]
            assert value == setting or (isinstance(value, dict) and value.get("name") == setting), (name, value)
        elif key == "data.kind":  # the run played and was evaluated on the folder
            assert (
                summary["config"]["data"]["kind"] == name.removeprefix("data_")
                and str(tmp_path / "data") in summary["data"]["evaluation"]
            ), (name, summary["data"])
    assert len(chosen) >= 2 + 7 + 2 + 5 + 4 + 4 + 3 + 2 + 3  # the documented options at the time of writing

"""`listener-sub study [create|serve|report] dir=DIR [run=RUN] [checkpoint=PATH]`: a human listener study.

A study is the `study` config node: conditions (a speaker -- base, trained or oracle -- x the perception the participant
sees the board through), boards per participant (the same boards in every condition, each participant seeing each
board once; conditions counterbalanced by a Latin square), attention checks. `create` draws the boards from the game's
evaluation split, captions them with every speaker of the conditions, lets the model listeners play every caption,
and writes DIR/study.db -- the only step that needs the models. `serve` (the default; it creates the study first when
DIR holds none) runs the participants' web app and prints its link: each participant gets an id, and coming back to
the link resumes where they stopped; every answer is one transaction in study.db. `report` writes DIR/report.md and
report.png (human accuracy per condition with bootstrap intervals, paired differences between the trained and the
captioning speaker per perception, attention checks, time per answer, the model listeners' accuracy on the same boards
and their agreement with people) and the answers as answers.csv / answers.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from listener_sub.cli import ACTIONS, hydra_command
from listener_sub.commands.common import build_perception, eval_config, plain, run_spec, trainer_config
from listener_sub.errors import UserError
from listener_sub.loading import game_and_speaker, game_config, model_speakers, players
from listener_sub.oracle import oracle_speaker
from listener_sub.perception import Perception
from listener_sub.report.gather import perception_name
from listener_sub.report.study import write_study_report
from listener_sub.report.tables import show
from listener_sub.study.materials import prepare_study
from listener_sub.study.protocol import Condition, StudyConfig, perception_label
from listener_sub.study.store import StudyStore
from listener_sub.web.server import serve
from listener_sub.web.study_app import create_study_app

DATABASE = "study.db"
OWN_KEYS = (
    "command", "action", "dir", "run", "checkpoint", "study", "host", "port", "resamples", "threads", "debug",
)  # fmt: skip
MATERIAL_KEYS = ("study", "run", "checkpoint", "data", "evaluation", "experiment")  # what a study's materials depend on


def study_config(cfg: DictConfig) -> StudyConfig:
    """The study node as a StudyConfig; UserError naming what is wrong."""
    node = dict(plain(cfg.study))
    conditions = node.pop("conditions", None)
    if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
        raise UserError("study.conditions must be a list of {speaker: ..., perception: ...}")
    unknown = sorted({k for c in conditions for k in c} - {"speaker", "perception"})
    if unknown:
        raise UserError(f"study.conditions: unknown key(s) {unknown}; a condition has speaker and perception")
    settings = {f.name for f in dataclasses.fields(StudyConfig)} - {"conditions"}
    if set(node) - settings:
        raise UserError(f"study: unknown setting(s) {sorted(set(node) - settings)}; its settings: {sorted(settings)}")
    for key, value in node.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"study.{key}={value!r} is not a whole number")
    try:
        return StudyConfig(conditions=[Condition(**c) for c in conditions], **node)
    except ValueError as error:
        raise UserError(str(error)) from None


def condition_perceptions(config: StudyConfig, listeners: Mapping[str, Perception]) -> dict[str, Perception]:
    """perception_label -> Perception for every condition: a model listener's name is that listener's perception,
    anything else a built-in perception (`build_perception`)."""
    out = {}
    for i, condition in enumerate(config.conditions):
        spec = condition.perception
        if isinstance(spec, str) and spec in listeners:
            out[perception_label(spec)] = listeners[spec]
        else:
            out[perception_label(spec)] = build_perception(spec, f"study.conditions[{i}].perception")[0]
    return out


def create(cfg: DictConfig, config: StudyConfig, path: Path) -> StudyStore:
    """Build the game and speakers, prepare the study's materials and write its database."""
    run, trained = game_and_speaker(cfg.run, cfg.checkpoint)
    if trained is None and any(c.speaker == "trained" for c in config.conditions):
        raise UserError(
            "study.conditions names the trained speaker but no run= or checkpoint= gives one; pass run=RUN "
            "(a finished train run) or compare base and oracle"
        )
    cfg = game_config(cfg, OWN_KEYS, run)
    eval_cfg, spec = eval_config(cfg), run_spec(cfg)
    perceptions = condition_perceptions(config, spec.perceptions)  # checked before any model is built
    played = players(cfg, spec, [(eval_cfg.data, eval_cfg.split)], trained)
    game = played.game
    speakers: dict[str, Any] = model_speakers(played, trainer_config(cfg).max_new_tokens)
    speakers["oracle"] = lambda b: oracle_speaker(game, b, torch.Generator().manual_seed(config.seed))[0]
    listeners = {n: f"{perception_name(lis.perception)}, {game.role(n)}" for n, lis in game.listeners.items()}
    try:
        materials = prepare_study(config, game, speakers, perceptions, listeners, eval_cfg.split, eval_cfg.data)
    except ValueError as error:
        raise UserError(str(error)) from None
    return StudyStore.create(path, materials)


def names_materials(overrides: list[str]) -> bool:
    """Whether the command line sets anything a study's materials depend on."""
    return any(o.lstrip("+~").split("=")[0].split(".")[0].split("@")[0] in MATERIAL_KEYS for o in overrides)


@hydra_command("study")
def main(cfg: DictConfig) -> None:
    """Create, serve or report the study in cfg.dir."""
    if cfg.action not in ACTIONS["study"]:
        actions = ", ".join(ACTIONS["study"])
        raise UserError(f"action={cfg.action} is not one of: {actions} (listener-sub study report dir=...)")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    folder = Path(cfg.dir).expanduser()
    path = folder / DATABASE
    config = study_config(cfg)
    if cfg.action == "report":
        if not path.is_file():
            raise UserError(f"dir={folder} holds no {DATABASE}; create the study first (listener-sub study create)")
        store = StudyStore(path)
        labels = [c.label for c in store.config.conditions]
        stats = write_study_report(
            store.answers(), labels, store.listeners, folder, f"Study {folder.name}", store.n_images,
            resamples=int(cfg.resamples), seed=int(cfg.seed),
        )  # fmt: skip
        show(f"{len(store.participants())} participants, {stats.answers} answers; wrote {folder}/report.md, "
             "report.png, answers.csv, answers.jsonl")  # fmt: skip
        return
    if path.is_file():
        store = StudyStore(path)
        if cfg.action == "create":
            raise UserError(
                f"dir={folder} already holds a study; serve or report it, or create a new one in another dir"
            )
        stored = json.dumps(dataclasses.asdict(store.config), sort_keys=True)
        if names_materials(list(HydraConfig.get().overrides.task)) and stored != json.dumps(
            dataclasses.asdict(config), sort_keys=True
        ):
            raise UserError(
                f"dir={folder} holds a study made with other settings ({stored}); serve it without study.* settings, "
                "or create the new study in another dir"
            )
    else:
        store = create(cfg, config, path)
        show(f"wrote {path}: {len(store.boards)} boards, {len(store.checks)} attention checks")
        if cfg.action == "create":
            return
    show(
        f"{len(store.participants())} participants so far; conditions: "
        + "; ".join(c.label for c in store.config.conditions)
    )
    serve(
        create_study_app(store),
        cfg.host,
        int(cfg.port),
        lambda url: show(f"listener-sub study: participants join at {url}/"),
    )

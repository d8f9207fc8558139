"""`listener-sub play [run=RUN] [checkpoint=PATH|captioner] [port=8000]`: a local web app in which a person plays the
game, and prints its URL.

As a listener, the person sees a board through a chosen perception (full colour, grayscale, blur, low resolution, a
colour-vision deficiency, or exactly what one of the model listeners sees) and a caption by a chosen speaker (base: the
captioning speaker; trained: the run's checkpoint; oracle: per board the best attribute subset; person: a caption
another person wrote), picks, and then sees the target and each model listener's pick. As the speaker, the person
writes a caption for the framed target; every model listener reads it through its own perception, and the page shows
their probabilities, the listener-subtraction reward, the trained speaker's and the oracle's play of the same board,
and a running score. The turns are stored in play.db. shots=DIR writes a screenshot of each role's page and exits.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from listener_sub.cli import hydra_command
from listener_sub.commands.common import eval_config, run_spec, trainer_config
from listener_sub.errors import UserError
from listener_sub.loading import game_and_speaker, game_config, model_speakers, players
from listener_sub.oracle import has_oracle, oracle_speaker
from listener_sub.report.tables import show
from listener_sub.web.play_app import create_play_app
from listener_sub.web.server import running, serve
from listener_sub.web.shots import screenshot
from listener_sub.web.table import PlayTable, people_views, play_table
from listener_sub.web.turns import TurnStore

OWN_KEYS = ("command", "run", "checkpoint", "boards", "host", "port", "db", "shots", "threads", "debug")
SHOTS = {"listener": "play_listener.png", "speaker": "play_speaker.png"}


def check(cfg: DictConfig) -> None:
    """UserError on settings that cannot work, before any model is loaded."""
    if cfg.boards < 1:
        raise UserError(f"boards={cfg.boards}; play at least one board (boards=32)")
    if not 0 <= cfg.port <= 65535:
        raise UserError(f"port={cfg.port} is not a TCP port; use 0..65535 (0: a free one)")


def take_shots(table: PlayTable, turns: TurnStore, out: Path) -> list[Path]:
    """Serve the app on loopback, play one speaker turn with the oracle's caption of board 0 (the trained speaker's
    without scenes), and screenshot the listener page (the trained speaker, seen as the subtracted listener sees) and
    the speaker's result page."""
    speaker = "trained" if "trained" in table.plays else "base"
    caption = table.plays.get("oracle", table.plays[speaker])[0]["caption"]
    subtracted = next(iter(table.game.reward.subtracted), next(iter(table.game.listeners)))
    with running(create_play_app(table, turns)) as url:
        form = urllib.parse.urlencode({"board": 0, "caption": caption}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{url}/speaker", data=form)) as response:
            result = response.url
        pages = {
            "listener": f"{url}/listener?speaker={speaker}&view=as-{subtracted}&board=0",
            "speaker": result,
        }
        return [
            screenshot(page, out / SHOTS[role], height=1000 if role == "speaker" else 640)
            for role, page in pages.items()
        ]


@hydra_command("play")
def main(cfg: DictConfig) -> None:
    """Build the boards and the model speakers' plays of them, then serve the app (or write the screenshots)."""
    check(cfg)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run, trained = game_and_speaker(cfg.run, cfg.checkpoint)
    cfg = game_config(cfg, OWN_KEYS, run)
    eval_cfg, spec = eval_config(cfg), run_spec(cfg)
    played = players(cfg, spec, [(eval_cfg.data, eval_cfg.split)], trained)
    game = played.game
    boards = game.sample(int(cfg.boards), np.random.default_rng(eval_cfg.seed), eval_cfg.split, eval_cfg.data)
    speakers = model_speakers(played, trainer_config(cfg).max_new_tokens)
    if trained is None:
        del speakers["trained"]  # without a trained adapter the speaker is the captioning one: base
    if has_oracle(boards):
        generator = torch.Generator().manual_seed(eval_cfg.seed)
        speakers["oracle"] = lambda b: oracle_speaker(game, b, generator)[0]
    table = play_table(game, boards, speakers, people_views(game))
    turns = TurnStore(Path(cfg.db).expanduser() if cfg.db else run_dir / "play.db")
    if cfg.shots:
        for path in take_shots(table, turns, Path(cfg.shots).expanduser()):
            show(f"wrote {path}")
        return
    show(
        f"{len(boards)} boards of {boards.checked_pool().data.name}; speakers {', '.join(table.speakers)}, person; "
        f"turns in {turns.path}"
    )
    serve(create_play_app(table, turns), cfg.host, int(cfg.port), lambda url: show(f"listener-sub play: open {url}"))

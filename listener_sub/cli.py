"""`listener-sub COMMAND [hydra overrides]`: one console script, every command a Hydra app."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

COMMANDS = {
    "train": ("listener_sub.commands.train", "RL on the listener-subtraction game (the main job)"),
    "eval": ("listener_sub.commands.eval", "the full metric set of a trained speaker checkpoint"),
    "preview": ("listener_sub.commands.preview", "a picture of the world under each perception"),
    "pretrain": ("listener_sub.commands.pretrain", "build the pretrained listeners, LM and captioning speaker"),
    "bench": ("listener_sub.commands.bench", "throughput, optimized vs naive, one run"),
    "rollout": ("listener_sub.commands.rollout", "PettingZoo episodes played by the models, transcripts as JSONL"),
    "inspect": (
        "listener_sub.commands.inspect",
        "HTML report of a train run: captions, picks and rewards on held-out boards",
    ),
    "export": ("listener_sub.commands.export", "the embedded world as a CLEVR-format folder (scene JSON + PNG images)"),
    "results": (
        "listener_sub.commands.results",
        "the experiments x seeds sweep and zero-shot transfer, written up as docs/results.md",
    ),
}
USAGE = "usage: listener-sub COMMAND [hydra overrides] [-m] [--cfg job] [debug=true]\n\ncommands:\n" + "\n".join(
    f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()
)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from listener_sub.errors import UserError

    return (UserError, HydraException, OmegaConfBaseException)


def one_line(error: BaseException) -> str:
    """An exception and its cause as one line of text."""
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(error, MissingMandatoryValue) and error.full_key:
        return f"{error.full_key} is not set; set it with {error.full_key}=..."
    text = str(error).split("\nConfig search path:")[0]  # Hydra appends its whole search path to a missing option
    parts = [" ".join(line.strip() for line in text.splitlines() if line.strip())]
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        parts.append(f"({str(cause).strip().splitlines()[0]})")
    return " ".join(p for p in parts if p) or type(error).__name__


def report(command: str, error: BaseException) -> None:
    """Print a user error as the one line the command-line contract promises."""
    print(f"listener-sub {command}: error: {one_line(error)}", file=sys.stderr)


GROUP_ALIASES = {
    "speaker.adapter": "speaker/adapter",
    "speaker.adapter.kind": "speaker/adapter",
}  # value spellings of group choices


def group_overrides(overrides: list[str]) -> list[str]:
    """`speaker.adapter=mlp` (and the older `speaker.adapter.kind=mlp`) as Hydra's group override `speaker/adapter=mlp`."""
    out = []
    for override in overrides:
        key, sep, value = override.partition("=")
        named = (
            sep and key in GROUP_ALIASES and value.replace("_", "").replace("-", "").isalnum()
        )  # a choice's name, not a {node}
        out.append(f"{GROUP_ALIASES[key]}={value}" if named else override)
    return out


def hydra_command(config_name: str) -> Callable[[Callable[[Any], Any]], Callable[[], Any]]:
    """Make a task a Hydra app on pkg://listener_sub.configs/<config_name>.yaml.

    A user error raised by the task ends the process with exit status 2 and one line (a full
    traceback with debug=true); other exceptions are bugs and propagate. The task's return value (train and
    eval: the gap) is what Hydra's sweepers optimise.
    """
    import hydra

    def decorate(task: Callable[[Any], Any]) -> Callable[[], Any]:
        @functools.wraps(task)
        def run(cfg: Any) -> Any:
            try:
                return task(cfg)  # the task's metric, for Hydra's optimizing sweepers
            except _user_error_types() as error:
                if cfg.get("debug", False):
                    raise
                report(config_name, error)
                sys.exit(2)

        return hydra.main(version_base=None, config_path="pkg://listener_sub.configs", config_name=config_name)(run)

    return decorate


def main(argv: list[str] | None = None) -> None:
    """Dispatch to a command's Hydra app; user errors end with exit status 2 and one line."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"listener-sub: error: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr
        )
        sys.exit(2)
    debug = any(o.lower() in ("debug=true", "debug=1", "++debug=true") for o in overrides)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing; we report below
    sys.argv = [f"listener-sub-{command}", *group_overrides(overrides)]
    app = importlib.import_module(COMMANDS[command][0]).main
    try:
        app()
    except _user_error_types() as error:
        if debug:
            raise
        report(command, error)
        sys.exit(2)

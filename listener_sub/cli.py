"""`listener-sub COMMAND [hydra overrides]`: one console script, every command a Hydra app."""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import io
import os
import re
import sys
import textwrap
import tokenize
from collections.abc import Callable, Iterator
from pathlib import Path
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
    "play": ("listener_sub.commands.play", "a local web app: play the game as a listener or as the speaker"),
    "study": ("listener_sub.commands.study", "a human listener study: create | serve | report (a web app, SQLite)"),
}
ACTIONS = {"study": ("create", "serve", "report")}  # commands whose first word may name an action: `study report`
USAGE = (
    "usage: listener-sub COMMAND [hydra overrides] [-m] [--cfg job] [debug=true]\n\ncommands:\n"
    + "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items())
    + "\n\nlistener-sub COMMAND --help: the command's config groups and settings"
)
HELP_FLAGS = ("-h", "--help")
FLAGS_WITH_VALUES = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--cfg", "-c", "-p", "-i")
MAIN_NODES = {
    "train": ("trainer",),
    "eval": ("evaluation", "speaker.rerank"),
    "inspect": ("evaluation",),
}  # nodes --help lists
HELP_WIDTH = 120  # columns of --help
NOTE_COLUMN = 34  # where a setting's description starts


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


ADAPTER_SPEAKER_ONLY = (
    "; speaker=vlm has no captioning warm-up (speaker.captioner), vision tower or adapter: those are the adapter "
    "speaker's settings"
)


SUBMITIT_MISSING = "; the submitit launchers come with the slurm extra: pip install 'listener-sub[slurm]'"


def report(command: str, error: BaseException) -> None:
    """Print a user error as the one line the command-line contract promises."""
    line = one_line(error)
    if "not in 'VLMSpeakerConfig'" in line:  # an adapter speaker's setting given to a VLM speaker
        line += ADAPTER_SPEAKER_ONLY
    if "Could not find 'hydra/launcher/submitit" in line:
        line += SUBMITIT_MISSING
    print(f"listener-sub {command}: error: {line}", file=sys.stderr)


GROUP_ALIASES = {
    "speaker.adapter": "speaker/adapter",
    "speaker.adapter.kind": "speaker/adapter",
}  # value spellings of group choices


def group_overrides(overrides: list[str]) -> list[str]:
    """`speaker.adapter=mlp` (also spelled `speaker.adapter.kind=mlp`) as Hydra's group override
    `speaker/adapter=mlp`."""
    out = []
    for override in overrides:
        key, sep, value = override.partition("=")
        # a choice's name, not a {node}
        named = sep and key in GROUP_ALIASES and value.replace("_", "").replace("-", "").isalnum()
        out.append(f"{GROUP_ALIASES[key]}={value}" if named else override)
    return out


MOVED_SETTINGS = {
    ("results", "jobs"): (
        "results hands its runs to a Hydra launcher: hydra.launcher.n_jobs=N runs N side by side on this machine "
        "(the default launcher, joblib), hydra/launcher=submitit_slurm on a SLURM cluster (docs/cli.md)"
    ),
}  # (command, a setting it refuses) -> the settings that do that job


def refuse_moved_settings(command: str, overrides: list[str]) -> None:
    """UserError on an override of a setting the command replaced by another, naming the replacement."""
    from listener_sub.errors import UserError

    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if (command, key) in MOVED_SETTINGS:
            raise UserError(f"{override}: {MOVED_SETTINGS[command, key]}")


def refuse_new_settings(command: str) -> None:
    """UserError on a `+KEY=VALUE` override that adds a top-level setting the command does not have (Hydra accepts
    it, and the command would ignore it); adding to a node (`+listeners.x=...`), a config group (also at a node:
    `+listener@listeners.x=gray`), or a setting deleted first (`~rows +rows={}`) stays allowed."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from listener_sub.errors import UserError

    hydra = HydraConfig.get()
    overrides = OverridesParser.create().parse_overrides(list(hydra.overrides.task))
    replaced = {o.key_or_group for o in overrides if o.is_delete()}  # `~key +key=...` sets the key anew
    for override in overrides:
        key = override.key_or_group
        in_package = override.package is not None  # `+group@node=option`: a config group's option placed at node
        known = key in hydra.runtime.choices or key in replaced or in_package or any(mark in key for mark in "./")
        if override.is_add() and not known:
            raise UserError(
                f"{override.input_line}: {command} has no setting {key!r}, so it would be ignored; "
                f"`listener-sub {command} --help` lists its settings"
            )


def in_sweep() -> bool:
    """Whether this process runs one job of a Hydra multirun (`-m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_command(config_name: str) -> Callable[[Callable[[Any], Any]], Callable[[], Any]]:
    """Make a task a Hydra app on pkg://listener_sub.configs/<config_name>.yaml.

    A user error raised by the task ends the process with exit status 2 and one line (a full
    traceback with debug=true); in a multirun the line is printed and the error raised, so the launcher records the
    run as failed and runs the others. Other exceptions are bugs and propagate. The task's return value (train and
    eval: the gap) is what Hydra's sweepers optimise.
    """
    import hydra

    def decorate(task: Callable[[Any], Any]) -> Callable[[], Any]:
        @functools.wraps(task)
        def run(cfg: Any) -> Any:
            try:
                refuse_new_settings(config_name)
                return task(cfg)  # the task's metric, for Hydra's optimizing sweepers
            except _user_error_types() as error:
                if cfg.get("debug", False):
                    raise
                report(config_name, error)
                if in_sweep():
                    raise  # the launcher records this run as failed and the sweep's other runs go on
                sys.exit(2)

        return hydra.main(version_base=None, config_path="pkg://listener_sub.configs", config_name=config_name)(run)

    return decorate


def field_notes(cls: type) -> dict[str, str]:
    """Field name -> the comment written with the field in its dataclass's source: the comment on the field's own
    line(s), else the comment lines right above it. Inherited fields too; a class without source gives none."""
    return {name: note for klass in reversed(cls.__mro__) for name, note in _own_field_notes(klass).items()}


@functools.cache
def _own_field_notes(cls: type) -> dict[str, str]:
    if not dataclasses.is_dataclass(cls):
        return {}
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # a class made at run time (make_dataclass) has no source
        return {}
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}
    lines = source.splitlines()
    notes = {}
    for statement in ast.parse(source).body[0].body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        own = [comments[n] for n in range(statement.lineno, statement.end_lineno + 1) if n in comments]
        above, n = [], statement.lineno - 1
        while n in comments and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, comments[n])
            n -= 1
        if own or above:
            notes[statement.target.id] = " ".join(own or above)
    return notes


YAML_KEY = re.compile(r"^(?P<indent> *)(?P<key>[\w.\-]+):(?P<rest>.*)$")  # `key: value  # note`, not a list item


def yaml_notes(path: Path, package: str) -> dict[str, str]:
    """Dotted key -> the comment after it, for each key of a config file (its keys under `package`, or under the
    file's own `# @package` line)."""
    notes: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the keys enclosing the current line
    for line in path.read_text().splitlines():
        header = re.match(r"#\s*@package\s+(\S+)", line)
        if header:
            package = "" if header[1] == "_global_" else header[1]
        match = YAML_KEY.match(line)
        if header or not match:
            continue
        indent = len(match["indent"])
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, match["key"])]
        note = match["rest"].partition(" #")[2].strip()
        if note:
            notes[".".join(filter(None, [package, *(k for _, k in stack)]))] = note
    return notes


def _configs_dir() -> Path:
    """The folder of the config yaml files (the listener_sub.configs package), found without importing it."""
    return Path(importlib.util.find_spec("listener_sub.configs").origin).parent


def _config_files(command: str, choices: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """(file, package) of each config file the command's config was composed from: its own, the plain configs its
    defaults name (base) and the chosen option of every group."""
    import yaml

    root = _configs_dir()
    primary = root / f"{command}.yaml"
    yield primary, ""
    for entry in yaml.safe_load(primary.read_text()).get("defaults", []):
        if isinstance(entry, str) and (root / f"{entry}.yaml").is_file():
            yield root / f"{entry}.yaml", ""
    for key, option in choices.items():
        group, _, package = key.partition("@")
        if option is not None and not group.startswith("hydra/") and (root / group / f"{option}.yaml").is_file():
            yield root / group / f"{option}.yaml", package or group.replace("/", ".")


def _node_class(node: Any) -> type | None:
    """The dataclass whose fields a config node holds: its schema's, its `_target_`'s or its adapter kind's."""
    from omegaconf import OmegaConf

    from listener_sub.adapters import ADAPTERS

    kind = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(kind):
        return kind
    if "_target_" in node:
        from hydra.utils import get_class

        target = get_class(node._target_)
        return target if dataclasses.is_dataclass(target) else None
    return ADAPTERS[node.kind][1] if node.get("kind") in ADAPTERS else None


def _shown(value: Any) -> str:
    """A config value as one short override-style text."""
    if isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) + "}"
    elif isinstance(value, list):
        text = "[" + ", ".join(_shown(v) for v in value) + "]"
    elif value is None or isinstance(value, bool):
        text = {None: "null", True: "true", False: "false"}[value]
    else:
        text = str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def _setting_lines(node: Any, prefix: str, notes: dict[str, str], keys: list[str] | None = None) -> list[str]:
    """`key=value  description` for each leaf of a node (of its `keys`, when given): a child node with a dataclass of
    its own, or of plain values only, is opened; any other value is one line. Descriptions: the dataclass's field
    comments, else the config files' comments (a plain node's own comment on a line of its own)."""
    from omegaconf import DictConfig, OmegaConf

    cls = _node_class(node)
    own = field_notes(cls) if cls else {}
    lines = []
    for key in node if keys is None else keys:
        path, child = f"{prefix}{key}", node._get_node(key)
        note = own.get(key) or notes.get(path, "")
        if isinstance(child, DictConfig) and not child._is_none() and (_node_class(child) or _flat(child)):
            lines += [_wrapped(f"  {path}.*", note)] if note and not _node_class(child) else []
            lines += _setting_lines(child, f"{path}.", notes)
            continue
        value = OmegaConf.to_container(child, resolve=False) if isinstance(child, DictConfig) else child._value()
        lines.append(_wrapped(f"  {path}={_shown(value)}", note))
    return lines


def _wrapped(head: str, note: str) -> str:
    """A help line: `head`, its note from NOTE_COLUMN on, wrapped to HELP_WIDTH under the note's column."""
    lines = textwrap.wrap(
        f"{head:<{NOTE_COLUMN}} {note}".rstrip(),
        HELP_WIDTH,
        subsequent_indent=" " * (NOTE_COLUMN + 1),
        break_on_hyphens=False,
    )
    return "\n".join(lines) or head


def _flat(node: Any) -> bool:
    """Whether a config node holds plain values only (bench's `render: {images: 4096}`)."""
    from omegaconf import OmegaConf

    return len(node) > 0 and not any(OmegaConf.is_config(node._get_node(key)) for key in node)


def _node_paths(cfg: Any, nodes: list[str]) -> list[str]:
    """The names `--help NODE` takes: each node, and each of the named nodes under one (listeners.full)."""
    return [
        path
        for key in nodes
        for path in ([key] if _node_class(cfg[key]) else [key, *(f"{key}.{name}" for name in cfg[key])])
    ]


def _is_node(value: Any) -> bool:
    """Whether a top-level entry is a node of settings (a schema's, or named nodes of one: `listeners`), not a plain
    setting of the command."""
    from omegaconf import DictConfig

    return isinstance(value, DictConfig) and (
        _node_class(value) is not None
        or (len(value) > 0 and all(isinstance(v, DictConfig) and _node_class(v) for v in value.values()))
    )


def command_help(command: str, overrides: list[str], node_path: str | None) -> str:
    """`listener-sub COMMAND --help [NODE]`: the command's docstring, its config groups and their options, and its
    main settings with their descriptions (with NODE: that node's settings)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from listener_sub.errors import UserError

    with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
        cfg = compose(command, overrides=overrides, return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        choices = {k: v for k, v in OmegaConf.to_container(cfg.hydra.runtime.choices).items() if k[:6] != "hydra/"}
        options = {group: loader.get_group_options(group) for group in sorted({k.partition("@")[0] for k in choices})}
    notes: dict[str, str] = {}
    for path, package in _config_files(command, choices):
        notes.update(yaml_notes(path, package))
    settings = [k for k in cfg if k not in ("hydra", "command")]
    nodes = [k for k in settings if _is_node(cfg._get_node(k))]
    if node_path is not None:
        node = OmegaConf.select(cfg, node_path)
        if node_path.partition(".")[0] in ("hydra", "command") or not OmegaConf.is_dict(node):
            raise UserError(f"--help {node_path}: no such node; name one of: {', '.join(_node_paths(cfg, nodes))}")
        return "\n".join([f"{node_path} (listener-sub {command}):", *_setting_lines(node, f"{node_path}.", notes)])

    module = importlib.util.find_spec(COMMANDS[command][0]).origin
    lines = [ast.get_docstring(ast.parse(Path(module).read_text())) or COMMANDS[command][1], ""]
    groups, root = [], _configs_dir()
    for group, found in options.items():
        used = {key: choice for key, choice in sorted(choices.items()) if key.partition("@")[0] == group}
        names = sorted(o for o in {*found, *used.values()} - {None} if not _schema_entry(root, group, o))
        marked = ", ".join(f"{o}*" if o in used.values() and len(used) == 1 else o for o in names)
        where = "" if len(used) == 1 else "  (" + ", ".join(f"{k}={v}" for k, v in used.items()) + ")"
        if names:
            groups += textwrap.wrap(f"  {group:<16} {marked}{where}", HELP_WIDTH, subsequent_indent=" " * 19)
    if groups:
        lines += ["config groups (GROUP=OPTION; * the current choice):", *groups, ""]
    lines.append("settings (KEY=VALUE; the current value):")
    lines += _setting_lines(cfg, "", notes, [k for k in settings if k not in nodes])
    for path in MAIN_NODES.get(command, ()):
        lines += _setting_lines(OmegaConf.select(cfg, path), f"{path}.", notes)
    others = [path for path in _node_paths(cfg, nodes) if path not in MAIN_NODES.get(command, ())]
    more = (
        f"`listener-sub {command} --help NODE` lists the settings of NODE, one of: {', '.join(others)}; "
        if others
        else ""
    )
    lines += [""] + textwrap.wrap(
        f"{more}`--cfg job` prints the whole config; -m runs a sweep (key=a,b); --hydra-help is Hydra's own help.",
        HELP_WIDTH,
    )
    return "\n".join(lines)


def _schema_entry(root: Path, group: str, option: str) -> bool:
    """Whether a group's option is a schema the yaml files extend (`base_*`, or a `default` in the ConfigStore alone),
    not a choice."""
    return option.startswith("base_") or (option == "default" and not (root / group / "default.yaml").is_file())


def _help_request(args: list[str]) -> tuple[list[str], str | None] | None:
    """(the overrides the help composes the config with, the node named after --help or None) when the command line
    asks for help, else None. `--config-dir DIR` becomes the search path it stands for; Hydra's other flags (and the
    value each takes) say nothing about the config and are left out."""
    where = next((i for i, a in enumerate(args) if a in HELP_FLAGS), None)
    if where is None:
        return None
    rest = args[where + 1 :]
    node = rest[0] if rest and "=" not in rest[0] and not rest[0].startswith(("-", "~", "+")) else None
    others = args[:where] + rest[1 if node else 0 :]
    overrides, flag = [], None
    for arg in others:
        name, has_value, value = arg.partition("=")
        if flag in ("--config-dir", "-cd") or (name == "--config-dir" and has_value):
            overrides.append(f"hydra.searchpath=[file://{Path(value if has_value else arg).resolve()}]")
        elif not arg.startswith("-") and flag not in FLAGS_WITH_VALUES:
            overrides.append(arg)
        flag = arg
    return overrides, node


def main(argv: list[str] | None = None) -> None:
    """Dispatch to a command's Hydra app (or print its help); user errors end with exit status 2 and one line."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in (*HELP_FLAGS, "help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    command, overrides = argv[0], argv[1:]
    if overrides and overrides[0] in ACTIONS.get(command, ()):
        overrides = [f"action={overrides[0]}", *overrides[1:]]
    if command not in COMMANDS:
        print(
            f"listener-sub: error: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr
        )
        sys.exit(2)
    debug = any(o.lower() in ("debug=true", "debug=1", "++debug=true") for o in overrides)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing; we report below
    sys.argv = [f"listener-sub-{command}", *group_overrides(overrides)]
    wants_help = _help_request(overrides)
    try:
        if wants_help is not None:
            print(command_help(command, group_overrides(wants_help[0]), wants_help[1]))
            return
        refuse_moved_settings(command, overrides)
        importlib.import_module(COMMANDS[command][0]).main()
    except _user_error_types() as error:
        if debug:
            raise
        report(command, error)
        sys.exit(2)

"""A run directory: the name of every file in it, its checkpoints, the trainer state's files and the metrics log.

    RUN/
      .hydra/config.yaml          CONFIG: the composed config (what loading the run reads)
      run_config.json             START_SETTINGS: the settings it started with (a resume is compared with them)
      summary.json                SUMMARY: metrics before / after, oracle gaps, wall times, versions
      metrics.jsonl, tensorboard/ METRICS, TENSORBOARD: one line / point per logged step
      eval_boards.npz             EVAL_BOARDS: the final evaluation's value of each held-out board
      checkpoints/step_NNNNNN/    CHECKPOINTS: adapter.safetensors + adapter.json, trainer.json + trainer.safetensors

Nothing here is a pickle: tensors are safetensors, the rest JSON (a checkpoint whose state is PICKLED_STATE is read
weights-only).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from listener_sub.adapters.io import ADAPTER, CHECKPOINTS, find_adapter  # noqa: F401 (ADAPTER: every run file's name is here)
from listener_sub.errors import DataError, UserError
from listener_sub.files import atomic_path

CONFIG = Path(".hydra") / "config.yaml"  # the run's composed config, written by Hydra
START_SETTINGS = "run_config.json"  # the settings the run started with, compared on resume
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
EVAL_BOARDS = "eval_boards.npz"  # the final evaluation's value of each held-out board (intervals over boards)
STATE = "trainer.json"  # a checkpoint's optimizer, scheduler, baseline, RNG states, step and before-training metrics
STATE_TENSORS = "trainer.safetensors"  # the tensors of that state (STATE names each in its place)
PICKLED_STATE = "trainer.pt"  # the state of the first checkpoint format: a pickle, read weights-only


def environment(world_size: int = 1) -> dict[str, Any]:
    """What a run ran on: how many ranks, torch threads, the library's version and git commit (when it runs from a
    checkout; else None), and the versions of torch, transformers and open_clip."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    package = Path(__file__).resolve().parent
    try:
        found = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        commit = found.stdout.strip() if found.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    distributions = {"listener_sub": "listener-sub", "torch": "torch", "transformers": "transformers"}
    distributions["open_clip"] = "open_clip_torch"
    versions = {key: installed(name) for key, name in distributions.items()}
    return {
        "world_size": world_size,
        "torch_threads": torch.get_num_threads(),  # a launcher running runs side by side gives each fewer
        "git_commit": commit,
        "python": platform.python_version(),
        **versions,
    }


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """Where the run's checkpoint of `step` lives."""
    return Path(run_dir) / CHECKPOINTS / f"step_{step:06d}"


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete checkpoints, oldest first."""
    found = (Path(run_dir) / CHECKPOINTS).glob("step_*")
    return sorted(path for path in found if (path / STATE).is_file() or (path / PICKLED_STATE).is_file())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's checkpoint of the highest step (None when it has none)."""
    found = checkpoints(run_dir)
    return found[-1] if found else None


def start_from(run_dir: str | Path, resume: bool) -> Path | None:
    """The checkpoint a run continues from (None: a fresh start); UserError when that cannot be what the user meant."""
    checkpoint = latest_checkpoint(run_dir)
    if resume and checkpoint is None:
        raise UserError(
            f"resume=true but {Path(run_dir) / CHECKPOINTS} holds no checkpoint; "
            "pass the run's directory as hydra.run.dir=DIR, or drop resume=true to start afresh"
        )
    if not resume and checkpoint is not None:
        raise UserError(
            f"{run_dir} already holds checkpoints; continue that run with resume=true or choose another hydra.run.dir"
        )
    return checkpoint if resume else None


def run_of(path: str | Path) -> Path | None:
    """The train run directory a path lies in (the run itself, a checkpoint, or an adapter file of one), or None."""
    path = Path(path).expanduser().resolve()
    for candidate in [path, *path.parents][:4]:
        if (candidate / CONFIG).is_file():
            return candidate
    return None


def adapter_file(path: str | Path, key: str = "checkpoint") -> Path:
    """The adapter weights a command-line path (`key`=path) names (`find_adapter`); one UserError when it names none."""
    try:
        return find_adapter(path)
    except DataError as error:
        raise UserError(f"{key}={error}") from None


def write_checkpoint(path: Path, save_trainable: Callable[[Path], Any], state: Any, keep_last: int = 0) -> None:
    """Write a checkpoint directory atomically: the speaker's trainable part (`save_trainable(folder)` writes its files
    into the folder) and the trainer's state; with `keep_last`, then delete all but the newest `keep_last` checkpoints
    of its run (only once the new one is complete)."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        save_trainable(tmp)
        write_state(state, tmp)
    if keep_last:
        for old in checkpoints(path.parent.parent)[:-keep_last]:
            shutil.rmtree(old)


def write_state(state: Any, folder: Path) -> None:
    """A nested state as safetensors (every tensor) + JSON (the rest, each tensor's name in its place; tuples and dicts
    with keys of any type tagged, so reading gives back the same types)."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[name := f"t{len(tensors)}"] = x.detach().cpu().contiguous()
            return {"__tensor__": name}
        if isinstance(x, dict):
            return {"__dict__": [[encode(k), encode(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [encode(v) for v in x]}
        if isinstance(x, list):
            return [encode(v) for v in x]
        if isinstance(x, (bool, int, float, str)) or x is None:
            return x
        raise TypeError(f"cannot write {type(x).__name__} into a checkpoint's state")

    skeleton = encode(state)
    save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE).write_text(json.dumps(skeleton))


def read_state(folder: Path) -> Any:
    """The state `write_state` wrote into `folder` (tensors on the CPU); a PICKLED_STATE checkpoint's, weights-only."""
    if not (folder / STATE).is_file():
        return torch.load(folder / PICKLED_STATE, map_location="cpu", weights_only=True)
    tensors = load_file(str(folder / STATE_TENSORS))

    def decode(x: Any) -> Any:
        if isinstance(x, list):
            return [decode(v) for v in x]
        if not isinstance(x, dict):
            return x
        if "__tensor__" in x:
            return tensors[x["__tensor__"]]
        if "__tuple__" in x:
            return tuple(decode(v) for v in x["__tuple__"])
        return {decode(k): decode(v) for k, v in x["__dict__"]}

    return decode(json.loads((folder / STATE).read_text()))


def kept_on_resume(line: str, resumed: int, final: int) -> bool:
    """Whether a metrics.jsonl line stays when a run resumes from step `resumed` (training up to `final`): every line up
    to that step, but the final evaluation's at `final` (the resumed run evaluates again) and a line torn by a kill
    during its write."""
    try:
        record = json.loads(line)
        step = record["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return False
    if step == resumed == final:
        return not any(key.startswith("eval/") for key in record)
    return step <= resumed


class RunLog:
    """metrics.jsonl (one JSON object per logged step) and TensorBoard events in the run directory.

    Resuming from step s drops what an interrupted run logged after s (and its final evaluation, when s is the last
    step), so each step is logged once. A disabled log (ranks other than 0) writes nothing.
    """

    def __init__(
        self, run_dir: Path, resumed_step: int | None = None, final_step: int = 0, enabled: bool = True
    ) -> None:
        self.enabled = enabled
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / METRICS
        kept = []
        if resumed_step is not None and self.path.exists():
            kept = [
                line for line in self.path.read_text().splitlines() if kept_on_resume(line, resumed_step, final_step)
            ]
        self.path.write_text("".join(line + "\n" for line in kept))
        purge = None if resumed_step is None else resumed_step + 1
        from torch.utils.tensorboard import SummaryWriter  # imported on use: it takes seconds

        self.writer = SummaryWriter(str(run_dir / TENSORBOARD), purge_step=purge)

    def write(self, step: int, metrics: dict[str, float], prefix: str) -> None:
        """Log metrics of a step under `prefix` (train/ or eval/)."""
        if not self.enabled:
            return
        with open(self.path, "a") as out:
            out.write(json.dumps({"step": step, **{f"{prefix}{k}": v for k, v in metrics.items()}}) + "\n")
        for key, value in metrics.items():
            self.writer.add_scalar(f"{prefix}{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.writer.close()

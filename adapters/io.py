"""Adapter files: the weights as safetensors, the adapter's kind and config as JSON beside them; and where a train
run keeps its trained adapters (CHECKPOINTS/step_NNNNNN/ADAPTER), so any of these paths names one (`find_adapter`).

write_adapter(adapter, "adapter.safetensors")   # also writes adapter.json
adapter = read_adapter("adapter.safetensors")   # rebuilt from the JSON, weights loaded (on the CPU)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from listener_sub.adapters import create_adapter
from listener_sub.errors import DataError
from listener_sub.files import atomic_path
from listener_sub.models.checkpoints import checkpoint_shapes, module_shapes, shape_problem

ADAPTER = "adapter.safetensors"  # an adapter's weights in a checkpoint or the cache (adapter.json beside them)
CHECKPOINTS = "checkpoints"  # a train run's folder of step_NNNNNN/ checkpoints
LORA_DIR = "lora"  # a VLM speaker's LoRA adapter in a checkpoint (`listener_sub.models.vlm`)
LORA_WEIGHTS = "adapter_model.safetensors"  # the LoRA weights in their folder (peft's name, beside adapter_config.json)


def find_adapter(path: str | Path) -> Path:
    """The trained weights a path names: an adapter file (its .safetensors, or the .json beside it), a LoRA adapter
    folder (LORA_WEIGHTS in it), a directory holding either (a checkpoint: ADAPTER, or LORA_DIR/), or a train run (its
    latest checkpoint's); DataError when it names none."""
    path = Path(path).expanduser()
    if path.is_file():
        return path.with_suffix(".safetensors") if path.suffix == ".json" else path
    for inside in (ADAPTER, LORA_DIR):
        if (path / inside).exists():
            return find_adapter(path / inside)
    if (path / LORA_WEIGHTS).is_file():
        return path
    steps = sorted((path / CHECKPOINTS).glob("step_*"))
    trained = [p for p in steps if (p / ADAPTER).is_file() or (p / LORA_DIR / LORA_WEIGHTS).is_file()]  # complete ones
    if not trained:
        raise DataError(
            f"{path} holds no adapter; pass a train run dir, a checkpoint dir (RUN/{CHECKPOINTS}/step_N), an "
            f"adapter file ({ADAPTER}) or a LoRA adapter folder ({LORA_WEIGHTS})"
        )
    return find_adapter(trained[-1])


def adapter_config_path(path: str | Path) -> Path:
    """The JSON of an adapter's kind and config, beside its safetensors file."""
    return Path(path).with_suffix(".json")


def write_adapter(adapter: nn.Module, path: str | Path) -> None:
    """Save an adapter's weights (safetensors at `path`) and its kind + config (JSON beside it), atomically."""
    meta = {"kind": adapter.kind, "config": dataclasses.asdict(adapter.config)}
    with atomic_path(adapter_config_path(path)) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    weights = {name: t.detach().contiguous().cpu() for name, t in adapter.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(weights, str(tmp))


def _unreadable(path: str | Path, error: Exception) -> DataError:
    return DataError(f"adapter {path} is unreadable ({error}); delete it and retrain the speaker")


def read_adapter_meta(path: str | Path) -> tuple[str, dict[str, Any]]:
    """The kind and config of the adapter saved at `path` (from the JSON beside it); DataError when either file is
    missing or the JSON is unreadable."""
    path, meta_path = Path(path), adapter_config_path(path)
    if not path.is_file() or not meta_path.is_file():
        raise DataError(f"adapter {path} (and {meta_path.name} beside it) not found; train the speaker or fix the path")
    try:
        meta = json.loads(meta_path.read_text())
        return str(meta["kind"]), dict(meta["config"])
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise _unreadable(path, err) from err


def read_adapter(path: str | Path) -> nn.Module:
    """Rebuild an adapter saved by `write_adapter` (on the CPU)."""
    kind, config = read_adapter_meta(path)
    try:
        adapter = create_adapter(kind, **config)
        adapter.load_state_dict(load_file(str(path)))
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        raise _unreadable(path, err) from err
    return adapter


def adapter_skeleton(path: str | Path) -> nn.Module:
    """The adapter saved at `path`, built on the meta device from its JSON once the weights file is seen to hold its
    tensors (names and shapes from the file's header; no weights are read); DataError otherwise."""
    kind, config = read_adapter_meta(path)
    try:
        with torch.device("meta"):
            skeleton = create_adapter(kind, **config)
        problem = shape_problem(module_shapes(skeleton), checkpoint_shapes(Path(path)))
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise _unreadable(path, err) from err
    if problem:
        raise DataError(
            f"adapter {path} does not hold the {kind} adapter {adapter_config_path(path).name} describes "
            f"({problem}); delete it and retrain the speaker"
        )
    return skeleton

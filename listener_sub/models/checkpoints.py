"""What a weights file holds, read without its data: tensor names and shapes, compared with a model's.

Used to refuse a file that cannot work (not a checkpoint, truncated, another architecture, another width) with one
line before any model is built.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

Shapes = Mapping[str, tuple[int, ...]]


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape in a checkpoint file, without loading its data: a safetensors header (checked
    against the file's size, so a truncated file is caught), or a pickle read weights-only onto the meta device.
    Raises ValueError for a file that is not one."""
    if path.suffix == ".safetensors":
        with open(path, "rb") as handle:
            head = handle.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = json.loads(handle.read(size)) if 0 < size < path.stat().st_size else None
        if not isinstance(header, dict):
            raise ValueError("no safetensors header")
        header.pop("__metadata__", None)
        end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
        if path.stat().st_size < 8 + size + end:
            raise ValueError(f"truncated: {path.stat().st_size} bytes of {8 + size + end}")
        return {name: tuple(entry["shape"]) for name, entry in header.items()}
    try:
        state = torch.load(path, map_location="meta", weights_only=True)
    except pickle.UnpicklingError:  # weights-only loading refuses a pickle that would run code, or one of other objects
        raise ValueError("not plain weights: a pickle that weights-only loading refuses (it was not run)") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"not a torch checkpoint ({error})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(state, dict):
        raise ValueError("holds no state dict")
    return {name.removeprefix("module."): tuple(t.shape) for name, t in state.items() if isinstance(t, torch.Tensor)}


def module_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """A module's state-dict tensor names and shapes (cheap for a module built on the meta device)."""
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def shape_problem(expected: Shapes, found: Shapes, tolerate: str | None = None) -> str | None:
    """'K tensors missing, e.g. NAME; J of other shapes, e.g. NAME (found) (expected (...))', or None when every
    expected tensor is found with its shape (a name containing `tolerate` may differ in shape: it is resized on
    load)."""
    missing = sorted(set(expected) - set(found))
    differ = sorted(
        k for k in set(expected) & set(found) if expected[k] != found[k] and not (tolerate and tolerate in k)
    )
    parts = [
        *([f"{len(missing)} tensors missing, e.g. {missing[0]}"] if missing else []),
        *(
            [f"{len(differ)} of other shapes, e.g. {differ[0]} {found[differ[0]]} (expected {expected[differ[0]]})"]
            if differ
            else []
        ),
    ]
    return "; ".join(parts) or None

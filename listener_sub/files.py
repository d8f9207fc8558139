"""Files written atomically, JSON of configs, stable hashes of configs, and where the artifact cache lives.

The bottom of the library: every layer may use it; it imports nothing of the package.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENV_VAR = "LISTENER_SUB_CACHE"


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The cache directory: the override, else $LISTENER_SUB_CACHE, else ~/.cache/listener-sub."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "listener-sub"


def to_plain(obj: Any, keyed: bool = False) -> Any:
    """JSON-able form of configs: dataclasses, omegaconf containers, tuples, paths. keyed: a dataclass with a
    `key_fields()` method stands as what that returns (the settings its cache key reads)."""
    if keyed and hasattr(obj, "key_fields") and not isinstance(obj, type):
        return to_plain(obj.key_fields(), keyed)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name), keyed) for f in dataclasses.fields(obj)}
    if hasattr(obj, "_metadata") and hasattr(obj, "_content"):  # omegaconf DictConfig / ListConfig
        from omegaconf import OmegaConf

        return to_plain(OmegaConf.to_container(obj, resolve=True), keyed)
    if isinstance(obj, dict):
        return {str(k): to_plain(v, keyed) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, keyed) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_key(*parts: Any) -> str:
    """A short stable hash of configs (dataclasses, dicts, omegaconf, scalars; `to_plain(keyed=True)`)."""
    blob = json.dumps(to_plain(list(parts), keyed=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it is renamed onto `final` in one step.

    Works for files and directories. On error the temporary is removed and `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(target, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_plain(obj), indent=2, sort_keys=False) + "\n")

"""Shared test setup: every test gets its own artifact cache, never the user's; tests of commands on the tiny models
may share one cache of them, built once per session."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Point $LISTENER_SUB_CACHE at a fresh directory (inherited by CLI subprocesses)."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LISTENER_SUB_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A cache holding the tiny locally trained models of the default game (test_pretrain.TINY), built once per session
    by `listener-sub pretrain`. Tests that run commands on them share it; a test about building keeps its own cache."""
    from test_pretrain import TINY

    root = tmp_path_factory.mktemp("tiny_models")
    args = [
        sys.executable,
        "-m",
        "listener_sub",
        "pretrain",
        *TINY,
        f"cache_dir={root}",
        f"hydra.run.dir={root / 'pretrain_run'}",
    ]
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture
def warm_cache(tiny_models, monkeypatch) -> Path:
    """This test's commands use the session's cache of tiny models ($LISTENER_SUB_CACHE, inherited by subprocesses)."""
    monkeypatch.setenv("LISTENER_SUB_CACHE", str(tiny_models))
    return tiny_models


@pytest.fixture
def default_models(tiny_models, tmp_path_factory, monkeypatch) -> Path:
    """A fresh cache ($LISTENER_SUB_CACHE, inherited by subprocesses) holding the default experiment's models at the
    default config's places: the session's tiny models (`tiny_models`, built with test_pretrain.TINY), linked there.
    What composes the default experiment (`listener_sub.default_players()`, `dixit_v0.env()`) finds every model and
    trains none."""
    from hydra import compose, initialize_config_module
    from test_pretrain import TINY

    from listener_sub.commands.common import run_spec
    from listener_sub.loading import assembly

    def files(cache: Path, *overrides: str) -> dict[str, str]:
        with initialize_config_module(version_base=None, config_module="listener_sub.configs"):
            cfg = compose("rollout", overrides=[*overrides, f"cache_dir={cache}"])
        return assembly(cfg, run_spec(cfg)).files()

    root = tmp_path_factory.mktemp("default_models")
    tiny, default = files(tiny_models, *TINY), files(root)
    assert tiny.keys() == default.keys()
    for role, path in default.items():
        source, target = Path(tiny[role]), Path(path)
        if role == "speaker.captioner":
            source, target = source.parent, target.parent  # the adapter's folder (weights + JSON)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(source, target_is_directory=source.is_dir())
    monkeypatch.setenv("LISTENER_SUB_CACHE", str(root))
    return root

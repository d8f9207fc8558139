"""Shared test setup: every test gets its own artifact cache, never the user's."""
import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Point $LISTENER_SUB_CACHE at a fresh directory (inherited by CLI subprocesses)."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LISTENER_SUB_CACHE", str(path))
    return path

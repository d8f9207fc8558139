"""Nothing lost: atomic writes that fail midway, the artifact cache under two processes, damaged artifacts rebuilt."""

import json
import logging
import subprocess
import sys
import textwrap

import pytest

from listener_sub.cache import RECORD_SUFFIX, ArtifactCache
from listener_sub.files import atomic_path, write_json


def test_a_write_that_fails_midway_leaves_the_previous_file_and_folder_intact(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"gap": 0.5})
    with pytest.raises(OSError, match="No space left"):
        with atomic_path(target) as tmp:
            tmp.write_text('{"gap": 0.')  # half written, then the disk is full
            raise OSError(28, "No space left on device")
    assert json.loads(target.read_text()) == {"gap": 0.5} and [p.name for p in tmp_path.iterdir()] == ["summary.json"]

    folder = tmp_path / "step_000002"
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / "adapter.safetensors").write_bytes(b"old")
    with pytest.raises(OSError):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "adapter.safetensors").write_bytes(b"ne")
            raise OSError(28, "No space left on device")
    assert (folder / "adapter.safetensors").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000002", "summary.json"]


def build(tmp, text="weights"):
    tmp.mkdir()
    (tmp / "model.bin").write_text(text)


def test_a_damaged_artifact_is_detected_by_its_record_and_rebuilt_with_one_warning(tmp_path, caplog):
    cache = ArtifactCache(tmp_path)
    path = cache.get_or_build("lm", "abc", "model", build)
    record = json.loads((path.parent / f"model{RECORD_SUFFIX}").read_text())
    assert list(record) == ["model.bin"] and record["model.bin"][0] == len("weights")
    calls = []
    again = ArtifactCache(tmp_path).get_or_build("lm", "abc", "model", lambda tmp: calls.append(tmp))
    assert again == path and not calls  # intact: found, not built

    (path / "model.bin").write_text("weig")  # truncated
    with caplog.at_level(logging.WARNING, logger="listener_sub.cache"):
        rebuilt = ArtifactCache(tmp_path)
        rebuilt.get_or_build("lm", "abc", "model", build)
    assert (path / "model.bin").read_text() == "weights" and rebuilt.built == [str(path)]
    assert [r.message for r in caplog.records] == [
        f"cached artifact {path} does not match its record model{RECORD_SUFFIX} (truncated or corrupted); rebuilding it"
    ]

    (path / "model.bin").write_text("weightz")  # same size, other bytes
    assert not ArtifactCache(tmp_path).intact(path)
    (path / "model.bin").write_text("weights")
    (path.parent / f"model{RECORD_SUFFIX}").unlink()  # an artifact without a record: trusted and recorded
    assert ArtifactCache(tmp_path).intact(path) and (path.parent / f"model{RECORD_SUFFIX}").exists()


BUILDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from listener_sub.cache import ArtifactCache

    def build(tmp):
        with open(sys.argv[2], "a") as log:
            log.write(sys.argv[3] + "\\n")
        time.sleep(1.5)  # long enough for the other process to arrive while this one builds
        tmp.write_text("built by " + sys.argv[3])

    ArtifactCache(sys.argv[1]).get_or_build("listeners", "key", "clip.safetensors", build)
    """
)


def test_two_processes_needing_one_artifact_build_it_once(tmp_path):
    log = tmp_path / "builds.txt"
    script = tmp_path / "build.py"
    script.write_text(BUILDER)
    procs = [
        subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), str(log), name]) for name in ("a", "b")
    ]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0]
    builders = log.read_text().split()
    assert len(builders) == 1  # the other process waited on the lock, then found it built
    artifact = tmp_path / "cache" / "listeners" / "key" / "clip.safetensors"
    assert artifact.read_text() == f"built by {builders[0]}" and ArtifactCache(tmp_path / "cache").intact(artifact)

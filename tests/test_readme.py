"""README.md as a newcomer reads it: its Python example runs as written, its headline table is the results document's,
and every link of the README and docs/ points at a file of the repository."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_rl import TINY

from listener_sub.report.results import HEADLINE_END, HEADLINE_START, headline

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results.md"
EXAMPLE = "<!-- example: tests/test_readme.py runs every python block of this page as written -->"
CI_TEST = 'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/python -m pytest'
LINK = re.compile(r"\]\(([^)\s]+)\)")  # a markdown link's or image's target


def python_blocks(text: str) -> str:
    """Every ```python block of the page, in order, as one script (the marker says the page's code is run)."""
    assert EXAMPLE in text, f"README.md lost its example marker {EXAMPLE}"
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert blocks, "no ```python block in README.md"
    return "\n".join(blocks)


def test_the_headline_table_is_the_results_documents():
    """The README's block is `headline(docs/results.md)`: `listener-sub results readme=README.md` rewrites it from the
    document, so it cannot drift from the runs."""
    text = README.read_text()
    block = text.split(HEADLINE_START, 1)[1].split(HEADLINE_END, 1)[0]
    assert block.strip("\n") == headline(RESULTS.read_text())


def test_the_ci_runs_the_test_command_as_written():
    lines = README.read_text().splitlines()
    marker = next(i for i, line in enumerate(lines) if line.startswith("<!-- ci:test"))
    assert lines[marker + 1 : marker + 4] == ["```bash", CI_TEST, "```"]


def anchors(page: Path) -> set[str]:
    """The anchors of a markdown page's headings, as GitHub makes them."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_every_link_points_at_a_file_of_the_repository(page):
    for target in LINK.findall(page.read_text()):
        path, _, anchor = target.partition("#")
        assert not re.match(r"[a-z]+:", target), f"{page.name} links outside the repository: {target}"
        linked = page.parent / path if path else page
        assert linked.exists(), f"{page.name} links to a missing file: {target}"
        assert not anchor or anchor in anchors(linked), f"{page.name} links to a missing heading: {target}"


@pytest.fixture
def trained_run(tiny_models, tmp_path_factory) -> Path:
    """A finished tiny train run (2 RL steps) on the session's tiny models."""
    root = tmp_path_factory.mktemp("readme_run")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "listener_sub",
            "train",
            *TINY,
            f"cache_dir={tiny_models}",
            f"hydra.run.dir={root / 'run'}",
            "trainer.steps=2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def test_the_python_example_runs_as_written(default_models, trained_run, tmp_path):
    """The README's Python in a file of its own, run from a directory where runs/a is a finished train run, with the
    default experiment's models in the cache (the session's tiny ones stand in for them)."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a").symlink_to(trained_run, target_is_directory=True)
    script = tmp_path / "example.py"
    script.write_text(python_blocks(README.read_text()))
    models_before = cached_models(default_models)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    print(out)  # what a newcomer sees (pytest -rP shows it)
    assert re.search(r"^'.*': target at [0-3], picks \[[0-3], [0-3]\]$", out, re.M), out
    for name in ("full", "gray"):
        assert re.search(rf"^{name}: accuracy [01]\.\d\d$", out, re.M), out
    assert re.search(r"^reward -?\d\.\d{3}, gap -?\d\.\d{3}$", out, re.M), out
    assert re.search(r"^after RL '.*': gap -?\d\.\d{3}$", out, re.M), out
    assert cached_models(default_models) == models_before  # every model was found in the cache, none trained


def cached_models(cache: Path) -> set[str]:
    """The models' entries of an artifact cache (not the records, locks and about.json beside them, nor features)."""
    found = set()
    for top, dirs, files in os.walk(cache):  # symlinked models are entries, not walked into
        where = Path(top).relative_to(cache)
        if where.parts[:1] in (("features",), ("images",)):
            continue
        for name in [*dirs, *files]:
            if where == Path(".") and name in ("features", "images"):
                continue
            if not name.endswith((".record.json", ".lock", "about.json")):
                found.add(str(where / name))
    return found

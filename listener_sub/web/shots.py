"""Screenshots of the web app's pages, taken by headless Chromium (`--screenshot`), for the docs."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from listener_sub.errors import UserError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
QUIET = (  # a closed network: no background connections, no first-run pages
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--no-default-browser-check", "--disable-extensions",
)  # fmt: skip


def find_browser() -> str | None:
    """The path of the first Chromium-family browser on PATH."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def screenshot(url: str, path: Path, width: int = 1100, height: int = 900, timeout: float = 60.0) -> Path:
    """A PNG of the page at `url` (the window's size) written to `path`."""
    browser = find_browser()
    if browser is None:
        raise UserError(f"screenshots need Chromium; none of {', '.join(BROWSERS)} is on PATH (apt install chromium)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        subprocess.run(
            [
                browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", *QUIET,
                f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={path}", url,
            ],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip
    return path

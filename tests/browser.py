"""Headless Chromium driven over the DevTools protocol: load a page, collect console errors and dialogs, run checks,
screenshot.

Test helper; also a script: `python tests/browser.py PAGE.html OUT.png [WIDTH]` writes a full-page screenshot.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket  # websocket-client (dev dependency)

from listener_sub.web.shots import find_browser

REQUIRE = "LISTENER_SUB_REQUIRE_BROWSER"  # set (by .ci/run) to make a missing browser a failure, not a skip


@dataclass
class PageRun:
    """What happened while a page loaded: console / log errors, uncaught exceptions, JavaScript dialogs."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


class Browser:
    """One headless Chromium process with a DevTools websocket to its first page."""

    def __init__(self, binary: str, width: int = 1280, height: int = 900, timeout: float = 30.0) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.timeout = timeout
        self.process = subprocess.Popen(
            [
                binary, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.socket = websocket.create_connection(self._page_socket(), timeout=timeout, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _page_socket(self) -> str:
        """The DevTools websocket URL of the browser's page (Chromium writes its port to DevToolsActivePort)."""
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.process.returncode}")
            if port_file.is_file() and port_file.read_text().strip():
                port = port_file.read_text().split()[0]
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as response:
                    pages = [t for t in json.load(response) if t["type"] == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a DevTools command and wait for its result, keeping the events that arrive meanwhile."""
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str) -> None:
        """Read events until `event` arrives."""
        deadline = time.monotonic() + self.timeout
        while not any(e["method"] == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {self.timeout} s")
            self.events.append(json.loads(self.socket.recv()))

    def load(self, path: Path) -> PageRun:
        """Open a local file, wait for its load event, and report its errors and dialogs (dialogs get dismissed)."""
        return self.open(Path(path).resolve().as_uri())

    def open(self, url: str) -> PageRun:
        """Open a URL, wait for its load event, and report the page's errors and dialogs (dialogs get dismissed)."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        return self._page_run()

    def click(self, selector: str) -> PageRun:
        """A person's click: mouse press and release (DevTools input events) in the middle of the element, then the
        page it leads to, loaded."""
        where = f"document.querySelector({json.dumps(selector)})"
        x, y = self.evaluate(
            f"(() => {{ const e = {where}; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); "
            "return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        self.events.clear()
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        self.wait_for("Page.loadEventFired")
        return self._page_run()

    def type(self, selector: str, text: str) -> None:
        """Focus a text field and type into it (DevTools text input, as a keyboard would)."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def _page_run(self) -> PageRun:
        """The errors and dialogs of the page just loaded (late errors given a frame to land)."""
        self.evaluate("new Promise(done => requestAnimationFrame(() => setTimeout(done, 50)))")
        run = PageRun()
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                run.errors.append(
                    " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                )
            elif method == "Runtime.exceptionThrown":
                run.errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                run.errors.append(params["entry"]["text"])
            elif method == "Page.javascriptDialogOpening":
                run.dialogs.append(f"{params['type']}: {params['message']}")
                self.call("Page.handleJavaScriptDialog", accept=False)
        return run

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page (the whole scroll height with full_page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params |= {
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1},
            }
        Path(path).write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))
        return Path(path)

    def close(self) -> None:
        """End the browser process this object started and remove its profile."""
        self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    binary = find_browser() or sys.exit("no chromium on PATH")
    with Browser(binary, width=int(sys.argv[3]) if len(sys.argv) > 3 else 1280) as browser:
        page = browser.load(Path(sys.argv[1]))
        print("errors:", page.errors, "dialogs:", page.dialogs)
        print("wrote", browser.screenshot(Path(sys.argv[2])))
    sys.exit(1 if page.errors or page.dialogs else 0)

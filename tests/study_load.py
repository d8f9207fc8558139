"""Simulated study participants for load tests: each joins, then answers its boards one page at a time over its own
keep-alive connection (sometimes sending an answer twice), and joins again when done, until told to stop."""

from __future__ import annotations

import http.client
import random
import re
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field

TRIAL = re.compile(r'name="trial" value="(\d+)"')


@dataclass
class Load:
    """What the participants saw: every answer the server acknowledged, each request's status and latency."""

    acknowledged: list[tuple[str, int, int]] = field(default_factory=list)  # (participant, trial, pick)
    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds per request
    failures: int = 0  # requests that got no response (the server was gone)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def p95_ms(self) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[int(0.95 * (len(ordered) - 1))]


def _request(conn: http.client.HTTPConnection, load: Load, method: str, path: str, body: dict | None = None):
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    start = time.perf_counter()
    conn.request(method, path, urllib.parse.urlencode(body or {}) if body is not None else None, headers)
    response = conn.getresponse()
    text = response.read().decode()
    with load.lock:
        load.latencies.append(time.perf_counter() - start)
        load.statuses[response.status] += 1
    return response, text


def participant(url: str, load: Load, stop: threading.Event, seed: int) -> None:
    """One simulated participant after another, until `stop` is set or the server goes away."""
    rng = random.Random(seed)
    host = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    try:
        while not stop.is_set():
            response, _ = _request(conn, load, "POST", "/join", {})
            pid = response.getheader("Location").rsplit("/", 1)[1]
            while not stop.is_set():
                _, page = _request(conn, load, "GET", f"/p/{pid}")
                found = TRIAL.search(page)
                if found is None:
                    break  # every board answered
                trial, pick = int(found.group(1)), rng.randrange(4)
                for _ in range(2 if rng.random() < 0.1 else 1):  # now and then the same answer twice
                    response, _ = _request(
                        conn, load, "POST", f"/p/{pid}/answer", {"participant": pid, "trial": trial, "pick": pick}
                    )
                    if response.status == 303:
                        with load.lock:
                            load.acknowledged.append((pid, trial, pick))
    except (OSError, http.client.HTTPException):
        with load.lock:
            load.failures += 1
    finally:
        conn.close()


def start(url: str, n: int, load: Load, stop: threading.Event) -> list[threading.Thread]:
    threads = [threading.Thread(target=participant, args=(url, load, stop, i), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    return threads

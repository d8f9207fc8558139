"""Serving an app with uvicorn on a socket bound here (so port 0 picks a free port and the URL is known before the
first request): in the foreground for the commands, or in a background thread for tests and screenshots."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

LOOPBACK = "127.0.0.1"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: FastAPI, sock: socket.socket) -> uvicorn.Server:
    host, port = sock.getsockname()[:2]
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))


def serve(app: FastAPI, host: str, port: int, announce: Callable[[str], None]) -> None:
    """Serve `app` on host:port until interrupted; `announce` gets the URL once the socket is bound."""
    sock = bind(host, port)
    announce(url_of(sock))
    _server(app, sock).run(sockets=[sock])


@contextmanager
def running(app: FastAPI, host: str = LOOPBACK, port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve `app` in a background thread for the duration of the block; yields its URL."""
    sock = bind(host, port)
    server = _server(app, sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the web server did not start")
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()

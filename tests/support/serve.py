"""Serve an ASGI app for real (uvicorn, TCP on 127.0.0.1) inside the running event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import LifespanType

from api.server import server_config
from paytide.settings import Settings

STARTUP_TIMEOUT_SECONDS = 10.0
# Tests stop servers with requests still open (the fault tests); bound how long that takes.
GRACEFUL_SHUTDOWN_SECONDS = 5


def bound_socket() -> socket.socket:
    """A listening-ready socket on a free loopback port: know a URL before its app exists."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"http://{host}:{port}"


@asynccontextmanager
async def serve(
    app: ASGIApp,
    *,
    lifespan: LifespanType = "on",
    sock: socket.socket | None = None,
    tls: tuple[Path, Path] | None = None,
) -> AsyncIterator[str]:
    """Run ``app`` (a test double: gateway, merchant, collector) on a free port for the duration
    of the block; yields its base URL. The API itself is served with `serve_api`.

    The socket is bound here and handed to uvicorn, so the port is known without racing another
    process for it. The app's lifespan runs (startup before the yield, shutdown after).
    ``tls``: (certificate, key) files; the app then answers https only (the URL says so).
    """
    config = uvicorn.Config(
        app,
        lifespan=lifespan,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    async with _serving(config, sock, https=tls is not None) as url:
        yield url


@asynccontextmanager
async def serve_api(
    app: ASGIApp, settings: Settings, *, sock: socket.socket | None = None
) -> AsyncIterator[str]:
    """Run paytide's API ``app`` as ``paytide api`` does (api/server.py's config, with its
    header and body deadlines and connection limit from ``settings``); yields its base URL."""
    config = server_config(
        app, settings, lifespan="on", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS
    )
    async with _serving(config, sock) as url:
        yield url


@asynccontextmanager
async def _serving(
    config: uvicorn.Config, sock: socket.socket | None, *, https: bool = False
) -> AsyncIterator[str]:
    sock = sock or bound_socket()
    host, port = sock.getsockname()
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn-{port}")
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_SECONDS):
            while not server.started:
                if task.done():
                    task.result()  # Surfaces the startup error, if it raised one.
                    raise RuntimeError("uvicorn stopped during startup (see its log)")
                await asyncio.sleep(0.01)
        yield f"{'https' if https else 'http'}://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()

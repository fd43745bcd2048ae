"""The API server's edge limits (api/server.py) over real sockets: unfinished headers and trickled
bodies are cut off within their deadlines, connections beyond the limit are refused with 503,
oversized headers get 400, and ordinary requests keep working.

The real app runs as ``paytide api`` serves it (`serve_api`), with deadlines of half a second;
Temporal points at a closed port, which none of these requests reach.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from ledger.engine import create_ledger_engine
from ledger.migrate import upgrade
from paytide.settings import Settings
from tests.integration.stack import bearer, issue_api_key
from tests.support.ports import free_port
from tests.support.serve import serve_api

pytestmark = pytest.mark.integration

UNREACHABLE_TEMPORAL = "127.0.0.1:1"
HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
SEND_TIMEOUT = 0.5
MAX_CONNECTIONS = 3
MAX_HEADER_BYTES = 4096
# How much later than its deadline a cut-off may come on a loaded test machine.
SLACK = 2.0


@dataclass
class Edge:
    host: str
    port: int
    url: str
    api_key: str


@asynccontextmanager
async def edge_api(folder: Path) -> AsyncIterator[Edge]:
    """The API with this module's small limits, on a ledger of its own in ``folder``."""
    ledger_url = f"sqlite:///{folder / 'ledger.db'}"
    engine = create_ledger_engine(ledger_url)
    upgrade(engine)
    settings = Settings(
        database_url=ledger_url,
        temporal_address=UNREACHABLE_TEMPORAL,
        api_header_timeout=HEADER_TIMEOUT,
        api_body_timeout=BODY_TIMEOUT,
        api_send_timeout=SEND_TIMEOUT,
        api_max_connections=MAX_CONNECTIONS,
        api_max_header_bytes=MAX_HEADER_BYTES,
    )
    try:
        api_key = issue_api_key(engine, settings.default_merchant)
    finally:
        engine.dispose()
    async with serve_api(create_app(settings), settings) as url:
        host, port = url.removeprefix("http://").split(":")
        yield Edge(host, int(port), url, api_key)


@pytest.fixture(scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    async with edge_api(tmp_path_factory.mktemp("edge_limits")) as api:
        yield api


async def open_connection(
    edge: Edge,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(edge.host, edge.port)


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took.
    A reset counts as closed. Fails if the connection is still open after ``within`` seconds."""
    started = time.monotonic()
    received = bytearray()
    async with asyncio.timeout(within):
        try:
            while chunk := await reader.read(65536):
                received.extend(chunk)
        except ConnectionResetError:
            pass
    return bytes(received), time.monotonic() - started


def error_answer(raw: bytes, status: int) -> dict[str, Any]:
    """The status line and the API's error object of a raw HTTP answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), raw[:300]
    assert b"connection: close" in head.lower(), head
    answer = json.loads(body)
    assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message", "details"}
    error: dict[str, Any] = answer["error"]
    return error


def get(path: str, *, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: paytide\r\n{extra}\r\n".encode()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionResetError, BrokenPipeError):
        pass


async def test_a_connection_that_sends_nothing_is_closed(edge: Edge) -> None:
    """A connection that never sends a request is closed after the header timeout."""
    reader, writer = await open_connection(edge)
    received, took = await read_until_closed(reader, HEADER_TIMEOUT + SLACK)
    assert received == b""
    assert took >= HEADER_TIMEOUT * 0.8
    await close(writer)


async def test_unfinished_headers_are_closed_within_the_header_timeout(edge: Edge) -> None:
    """Headers still unfinished after the header timeout: the server closes the socket."""
    reader, writer = await open_connection(edge)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: paytide\r\nX-Slow: ")
    await writer.drain()
    received, took = await read_until_closed(reader, HEADER_TIMEOUT + SLACK)
    assert received == b""
    assert took >= HEADER_TIMEOUT * 0.8
    await close(writer)


async def test_headers_trickled_byte_by_byte_are_cut_off(edge: Edge) -> None:
    """A header sent one byte at a time, each well within the timeout, is cut off all the same."""
    reader, writer = await open_connection(edge)
    request = get("/healthz", extra="X-Trickle: " + "a" * 200 + "\r\n")

    async def trickle() -> None:
        for byte in request:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    try:
        received, took = await read_until_closed(reader, HEADER_TIMEOUT + SLACK)
    finally:
        sender.cancel()
    assert received == b""
    assert took < HEADER_TIMEOUT + SLACK
    await close(writer)


async def test_the_next_request_on_a_kept_alive_connection_has_a_header_deadline(
    edge: Edge,
) -> None:
    """After a complete request, the next request's unfinished headers are cut off too."""
    reader, writer = await open_connection(edge)
    writer.write(get("/healthz"))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    # uvicorn's own keep-alive timeout (5 s) stops counting at the first byte of a request.
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: pay")
    await writer.drain()
    received, _took = await read_until_closed(reader, HEADER_TIMEOUT + SLACK)
    assert received == b""
    await close(writer)


async def test_a_trickled_body_gets_408_and_is_closed(edge: Edge) -> None:
    """A body still arriving after the body timeout is answered 408 body_timeout and closed."""
    reader, writer = await open_connection(edge)
    writer.write(
        b"POST /payments HTTP/1.1\r\nHost: paytide\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {edge.api_key}\r\nContent-Length: 1000\r\n\r\n".encode()
        + b'{"amount": '
    )
    await writer.drain()

    async def trickle() -> None:
        for _ in range(200):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    try:
        received, took = await read_until_closed(reader, BODY_TIMEOUT + SLACK)
    finally:
        sender.cancel()
    assert error_answer(received, 408)["code"] == "body_timeout"
    assert took >= BODY_TIMEOUT * 0.8
    await close(writer)


async def test_connections_beyond_the_limit_get_503_and_normal_requests_work_after(
    tmp_path: Path,
) -> None:
    """With the limit's worth of connections open, one more is answered 503 and closed; once
    they go, requests are served again."""
    held: list[asyncio.StreamWriter] = []
    # A server of its own: no other test's closing connections count against the limit.
    async with edge_api(tmp_path) as edge, AsyncExitStack() as stack:
        for _ in range(MAX_CONNECTIONS):
            # Each finishes a request and stays open as an idle keep-alive connection.
            reader, writer = await open_connection(edge)
            stack.push_async_callback(close, writer)
            held.append(writer)
            writer.write(get("/healthz"))
            await writer.drain()
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        reader, writer = await open_connection(edge)
        stack.push_async_callback(close, writer)
        # Read without sending: the answer comes before any request (the header timeout would
        # close the socket with no answer at all).
        received, _took = await read_until_closed(reader, SLACK)
        error = error_answer(received, 503)
        assert error["code"] == "too_many_connections"
        assert b"retry-after: 1" in received.lower()
        for writer in held:
            await close(writer)
        async with httpx.AsyncClient(base_url=edge.url, timeout=5) as client:
            async with asyncio.timeout(SLACK):
                while (response := await client.get("/healthz")).status_code == 503:
                    await asyncio.sleep(0.05)
            assert response.status_code == 200


def _never_reading(host: str, port: int, requests: bytes) -> socket.socket:
    """A connection that sends ``requests`` and never reads an answer (a tiny receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((host, port))
    sock.sendall(requests)
    return sock


async def test_clients_that_never_read_their_answers_do_not_hold_the_connections(
    tmp_path: Path,
) -> None:
    """Connections whose client pipelines requests and never reads the answers are dropped after
    the send timeout, so the limit's worth of them does not refuse everyone else for ever."""
    async with edge_api(tmp_path) as edge:
        requests = get("/openapi.json") * 100
        held = [
            await asyncio.to_thread(_never_reading, edge.host, edge.port, requests)
            for _ in range(MAX_CONNECTIONS)
        ]
        try:
            async with httpx.AsyncClient(base_url=edge.url, timeout=5) as client:
                async with asyncio.timeout(SEND_TIMEOUT + SLACK):
                    while (response := await client.get("/healthz")).status_code == 503:
                        await asyncio.sleep(0.1)
                assert response.status_code == 200
        finally:
            for sock in held:
                sock.close()


async def test_headers_larger_than_the_limit_get_400(edge: Edge) -> None:
    """Once more than PAYTIDE_API_MAX_HEADER_BYTES of unfinished headers are buffered, the request
    is answered 400 malformed_request and closed (the header timeout closes without an answer)."""
    reader, writer = await open_connection(edge)
    writer.write(b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * (2 * MAX_HEADER_BYTES))
    await writer.drain()
    received, _took = await read_until_closed(reader, SLACK)
    assert error_answer(received, 400)["code"] == "malformed_request"
    await close(writer)


async def test_ordinary_requests_are_unaffected(edge: Edge) -> None:
    """Requests sent at normal speed, several on one keep-alive connection, are answered."""
    async with httpx.AsyncClient(
        base_url=edge.url, timeout=5, headers=bearer(edge.api_key)
    ) as client:
        for _ in range(3):
            assert (await client.get("/healthz")).status_code == 200
            await asyncio.sleep(HEADER_TIMEOUT * 1.5)
        response = await client.post(
            "/payments", content=b"{", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, response.text


def test_paytide_api_process_applies_the_header_timeout(tmp_path: Path) -> None:
    """`paytide api` serves with the same limits: unfinished headers are closed on time."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYTIDE_")}
    env.update(
        {
            "PAYTIDE_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "PAYTIDE_API_PORT": str(port),
            "PAYTIDE_TEMPORAL_ADDRESS": UNREACHABLE_TEMPORAL,
            "PAYTIDE_API_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "PAYTIDE_LOG_FORMAT": "json",
        }
    )
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "paytide", "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT + SLACK) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: paytide\r\n")
            started = time.monotonic()
            assert sock.recv(1024) == b""
            assert time.monotonic() - started < HEADER_TIMEOUT + SLACK
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)

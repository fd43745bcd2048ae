"""The API's HTTP server: uvicorn configured from `Settings`, with the edge limits uvicorn lacks.

uvicorn bounds the size of a request's headers (h11's incomplete-event limit), but not the time
a client takes to send them or its body, and its ``limit_concurrency`` still accepts every socket
and holds it until a request arrives. `EdgeProtocol`, uvicorn's h11 protocol extended, adds:

- **header timeout**: a request's headers must be complete within ``api_header_timeout``
  seconds, counted from the connection's start and, on a keep-alive connection, from the first
  byte of each later request. Otherwise the connection is closed. (Idle keep-alive connections
  are closed by uvicorn's own ``timeout_keep_alive``.)
- **body timeout**: once the headers are in, the body must be complete within
  ``api_body_timeout`` seconds. Otherwise the client gets 408 ``body_timeout`` (when no answer
  has started) and the connection is closed; the handler reading the body sees a disconnect.
- **send timeout**: whatever the server wrote must be read by the client within
  ``api_send_timeout`` seconds; otherwise the connection is dropped (aborted, not closed: a
  close waits for the client to read). Without it, a client that asks and never reads (a tiny
  receive window, pipelined requests) holds its connection, and the limit's worth of them
  refuses everyone else.
- **connection limit**: a connection beyond ``api_max_connections`` open ones gets 503
  ``too_many_connections`` with ``Retry-After`` and is closed at once.
- a request that is not valid HTTP, or whose headers exceed ``api_max_header_bytes``, gets 400
  ``malformed_request`` in the API's error shape (uvicorn's own is plain text).

`server_config` builds the config that ``paytide api`` runs and the tests serve, so tests exercise
what production runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol
from uvicorn.server import ServerState

from api.errors import error_response
from paytide.logging import get_logger
from paytide.settings import Settings

log = get_logger("paytide.api.server")
# Seconds a client refused for too many connections is asked to wait.
CONNECTIONS_RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, kw_only=True)
class EdgeLimits:
    header_timeout: float
    body_timeout: float
    send_timeout: float
    max_connections: int
    max_header_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(
            header_timeout=settings.api_header_timeout,
            body_timeout=settings.api_body_timeout,
            send_timeout=settings.api_send_timeout,
            max_connections=settings.api_max_connections,
            max_header_bytes=settings.api_max_header_bytes,
        )


class ApiServerConfig(uvicorn.Config):
    """uvicorn's config, serving HTTP with `EdgeProtocol` under ``limits``."""

    def __init__(self, app: ASGIApp, *, limits: EdgeLimits, **options: Any) -> None:
        super().__init__(
            app, http=EdgeProtocol, h11_max_incomplete_event_size=limits.max_header_bytes, **options
        )
        self.limits = limits


def server_config(app: ASGIApp, settings: Settings, **options: Any) -> ApiServerConfig:
    """The config ``paytide api`` serves ``app`` with; ``options`` are further uvicorn settings
    (the tests' lifespan and shutdown bound)."""
    values: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        # The API has no WebSocket routes: no upgrade path to keep safe.
        "ws": "none",
        "log_config": None,
        "access_log": False,
        **options,
    }
    return ApiServerConfig(app, limits=EdgeLimits.from_settings(settings), **values)


class EdgeProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with header and body deadlines and a connection limit."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not isinstance(config, ApiServerConfig):
            raise TypeError("EdgeProtocol needs an ApiServerConfig (api.server.server_config)")
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits
        self._headers_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        self._send_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Told (pause_writing) as soon as the client has not taken everything written, not only
        # past asyncio's 64 KiB: a smaller answer left unread would otherwise hold the connection
        # for ever (even its close waits for the client to read).
        transport.set_write_buffer_limits(high=0)
        if len(self.connections) > self.limits.max_connections:
            log.warning("api_connection_refused", limit=self.limits.max_connections)
            self._answer_and_close(
                503,
                "too_many_connections",
                f"the API has {self.limits.max_connections} connections open, its limit; retry "
                "after the Retry-After delay",
                {"Retry-After": str(CONNECTIONS_RETRY_AFTER_SECONDS)},
            )
            return
        self._headers_deadline = self._arm(self.limits.header_timeout, self._headers_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_headers()
        self._disarm_body()
        self._disarm_send()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self._arm(self.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        self._disarm_send()
        super().resume_writing()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_request(bytes_arrived=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request may have been parsed just now. Idle time before the next request
        # is uvicorn's keep-alive timeout's to bound, not the header deadline's.
        self._follow_request(bytes_arrived=False)

    def send_400_response(self, msg: str) -> None:
        # Called by uvicorn when h11 refuses the bytes: bad syntax, or headers over the limit.
        self._answer_and_close(
            400,
            "malformed_request",
            "the request is not valid HTTP, or its headers are larger than "
            f"{self.limits.max_header_bytes} bytes",
        )

    def _follow_request(self, *, bytes_arrived: bool) -> None:
        """Arm or disarm the deadlines for where the client now is in its request."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            # Bytes of a request whose headers are not complete yet.
            if bytes_arrived and self._headers_deadline is None:
                self._headers_deadline = self._arm(
                    self.limits.header_timeout, self._headers_timed_out
                )
            return
        self._disarm_headers()
        if state is h11.SEND_BODY:
            if self._body_deadline is None:
                self._body_deadline = self._arm(self.limits.body_timeout, self._body_timed_out)
        else:
            self._disarm_body()

    def _disarm_headers(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _disarm_body(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _disarm_send(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _arm(self, seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self.loop.call_later(seconds, callback)

    def _headers_timed_out(self) -> None:
        self._headers_deadline = None
        if self.transport.is_closing():
            return
        log.info("api_request_headers_timed_out", timeout=self.limits.header_timeout)
        self.transport.close()

    def _send_timed_out(self) -> None:
        self._send_deadline = None
        log.info("api_response_send_timed_out", timeout=self.limits.send_timeout)
        self.transport.abort()

    def _body_timed_out(self) -> None:
        self._body_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        log.info("api_request_body_timed_out", timeout=self.limits.body_timeout)
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            self.transport.close()
            return
        # The handler waiting for the body now reads a disconnect; whatever it answers is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        self._answer_and_close(
            408,
            "body_timeout",
            f"the request body did not arrive within {self.limits.body_timeout:g} seconds of "
            "its headers; send the whole body at once, then retry",
        )

    def _answer_and_close(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        """Write one error answer in the API's shape straight to the socket, then close it."""
        answer = error_response(status, code, message, headers=headers)
        try:
            for event in (
                h11.Response(
                    status_code=status,
                    headers=[*answer.raw_headers, (b"connection", b"close")],
                    reason=STATUS_PHRASES[status],
                ),
                h11.Data(data=bytes(answer.body)),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:
            pass  # An answer is already under way on this connection: closing is all we can do.
        self.transport.close()

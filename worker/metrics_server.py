"""The worker's ``/metrics``: paytide's own series and the Temporal SDK's, on one port.

The SDK's core serves its metrics on a loopback address of its own (its runtime telemetry);
this endpoint relays them, so Prometheus scrapes one target per worker and the SDK's port is
never exposed.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from paytide.logging import get_logger

log = get_logger("paytide.worker.metrics")


def free_loopback_address() -> str:
    """A loopback HOST:PORT nobody listens on now, for the SDK's private metrics endpoint."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


class SdkMetricsRelay(Collector):
    """Reads the SDK's Prometheus text at scrape time and hands its families on unchanged."""

    def __init__(self, address: str, timeout: float = 2.0) -> None:
        self._url = f"http://{address}/metrics"
        self._timeout = timeout

    def describe(self) -> Iterable[Metric]:
        # Nothing to declare up front: the SDK decides its series, and a registry that asked
        # for them at registration would scrape before the worker even runs.
        return []

    def collect(self) -> Iterable[Metric]:
        try:
            with urllib.request.urlopen(self._url, timeout=self._timeout) as answer:  # noqa: S310 - our own loopback URL
                text = answer.read().decode()
        except OSError as error:
            # A scrape without the SDK's part beats a failed scrape: paytide's series still count.
            log.warning("temporal_sdk_metrics_unavailable", error=str(error))
            return []
        return list(text_string_to_metric_families(text))


@dataclass(frozen=True)
class MetricsEndpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


@contextmanager
def serving_metrics(
    registry: CollectorRegistry, host: str, port: int, *, sdk_address: str | None = None
) -> Iterator[MetricsEndpoint]:
    """Serve ``registry`` (plus the SDK's series from ``sdk_address``) until the block ends.
    Port 0 picks a free one (tests); the endpoint says which."""
    if sdk_address is not None:
        registry.register(SdkMetricsRelay(sdk_address))
    server, thread = start_http_server(port, addr=host, registry=registry)
    bound = server.server_address[1]
    log.info("worker_metrics_serving", url=f"http://{host}:{bound}/metrics")
    try:
        yield MetricsEndpoint(host=host, port=int(bound))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

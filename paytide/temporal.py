"""Connecting to Temporal from settings: the local dev server, or a production cluster."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.client import Client, Interceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import TLSConfig

from paytide.codec import EncryptionCodec, data_converter
from paytide.settings import Settings


def _tls(settings: Settings) -> bool | TLSConfig:
    if settings.temporal_tls_cert_path and settings.temporal_tls_key_path:
        return TLSConfig(
            client_cert=settings.temporal_tls_cert_path.read_bytes(),
            client_private_key=settings.temporal_tls_key_path.read_bytes(),
        )
    # An API key implies TLS on Temporal Cloud; plain TLS for other clusters that ask for it.
    return settings.temporal_tls or settings.temporal_api_key is not None


def prometheus_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime whose SDK metrics (polls, task latencies, slots, sticky cache) are
    served in Prometheus format on ``bind_address``; the worker's /metrics relays them."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address)))


async def connect(
    settings: Settings,
    *,
    lazy: bool = False,
    runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    """Connect now, or with ``lazy`` on first use (the API starts even while Temporal is down).

    Every payload goes through the encryption codec, so the API and the worker, which both
    connect here, read and write the same ciphertext.
    """
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key,
        tls=_tls(settings),
        lazy=lazy,
        data_converter=data_converter(EncryptionCodec(settings.payload_key_ring)),
        runtime=runtime,
        interceptors=interceptors,
    )

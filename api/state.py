"""What the API process holds for its lifetime, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine
from temporalio.client import Client

from api.auth_failures import AuthFailures
from api.coalesce import Coalescer
from api.key_cache import KeyCache
from api.rate_limit import RateLimiter
from gateways.base import WebhookVerifier
from ledger.engine import SessionFactory
from paytide.metrics import ApiMetrics
from paytide.outbound import Resolver, system_resolver
from paytide.settings import Settings
from workflows.contract import GatewayName


@dataclass
class ApiState:
    settings: Settings
    temporal: Client
    engine: Engine
    sessions: SessionFactory
    http: httpx.AsyncClient
    verifiers: dict[GatewayName, WebhookVerifier]
    keys: KeyCache
    limiter: RateLimiter
    auth_failures: AuthFailures
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    # How webhook endpoint hosts are resolved for their check (tests inject their own).
    resolver: Resolver = system_resolver
    # (merchant, idempotency key, body fingerprint) -> the initiation in progress.
    initiations: Coalescer[tuple[str, str, str], Any] = field(default_factory=Coalescer)

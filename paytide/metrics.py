"""Prometheus series of the API and of the worker, each in a registry of its own.

One registry per app or worker instance, never the library's global one: tests run several
stacks in one process, and each must count only its own payments. Labels are low-cardinality on
purpose (status, gateway, currency, failure code, reason): a payment, customer or merchant id
never becomes a label, or every payment would make a new series.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# Initiation is bounded by PAYTIDE_INITIATE_WAIT (3 s by default); the tail past it is 202s.
INITIATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
# From the first transition to the final one: seconds for most, hours for a late webhook.
FINAL_STATE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0)
GATEWAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Labels stand for "none" with this rather than an empty string, which Grafana shows as blank.
NONE = "none"


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class LatencyWindow:
    """The last few minutes of initiation latencies, for the dashboard's p50 and p95.

    A histogram says how latency was distributed since the process started; the dashboard
    wants how it is *now*, so it keeps recent samples (bounded in count and age).
    """

    def __init__(self, seconds: float = 300.0, max_samples: int = 20_000) -> None:
        self._seconds = seconds
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def add(self, value: float, now: float | None = None) -> None:
        with self._lock:
            self._samples.append((time.monotonic() if now is None else now, value))

    def quantiles(self, *qs: float, now: float | None = None) -> list[float | None]:
        """Nearest-rank quantiles of the samples in the window; None when there are none."""
        cutoff = (time.monotonic() if now is None else now) - self._seconds
        with self._lock:
            values = sorted(value for at, value in self._samples if at >= cutoff)
        if not values:
            return [None for _ in qs]
        return [values[min(len(values) - 1, max(0, round(q * len(values)) - 1))] for q in qs]


class ApiMetrics:
    """What the API sees: requests, payment initiations and gateway webhooks."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "paytide_http_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.initiation = Histogram(
            "paytide_payment_initiation_seconds",
            "POST /payments from request to answer, by status code (201, 200 replay, 202 ...)",
            ["status"],
            buckets=INITIATION_BUCKETS,
            registry=self.registry,
        )
        self.webhooks_received = Counter(
            "paytide_webhooks_received",
            "Gateway webhook requests received, before verification",
            ["gateway"],
            registry=self.registry,
        )
        self.webhooks_rejected = Counter(
            "paytide_webhooks_rejected",
            "Webhooks refused by verification, by reason code",
            ["gateway", "reason"],
            registry=self.registry,
        )
        self.webhook_events = Counter(
            "paytide_webhook_events",
            "Verified webhook events, by what became of them (signalled, unknown_payment, ...)",
            ["gateway", "delivery"],
            registry=self.registry,
        )
        self.webhooks_deduplicated = Counter(
            "paytide_webhooks_deduplicated",
            "Verified events the ledger had already recorded (a gateway's redelivery)",
            ["gateway"],
            registry=self.registry,
        )
        self.recent_initiations = LatencyWindow()

    def observe_initiation(self, status: int, seconds: float) -> None:
        self.initiation.labels(status=str(status)).observe(seconds)
        if status < 400:
            self.recent_initiations.add(seconds)


class WorkerMetrics:
    """What the worker sees: payments reaching their final state, gateway calls, fraud
    decisions and merchant notifications."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.payments_final = Counter(
            "paytide_payments_final",
            "Payments that reached a final status",
            ["status", "gateway", "currency", "failure_code"],
            registry=self.registry,
        )
        self.time_to_final = Histogram(
            "paytide_payment_time_to_final_seconds",
            "From the payment's first transition to its final one, by final status",
            ["status"],
            buckets=FINAL_STATE_BUCKETS,
            registry=self.registry,
        )
        self.gateway_calls = Histogram(
            "paytide_gateway_call_seconds",
            "Gateway calls by gateway, operation and outcome (ok or the error class)",
            ["gateway", "operation", "outcome"],
            buckets=GATEWAY_BUCKETS,
            registry=self.registry,
        )
        self.fraud_blocks = Counter(
            "paytide_fraud_blocks",
            "Payments blocked: by the risk score, a rejected review or a review timeout",
            ["reason"],
            registry=self.registry,
        )
        self.fraud_reviews = Counter(
            "paytide_fraud_reviews",
            "Payments sent to an operator's review",
            registry=self.registry,
        )
        self.notifications = Counter(
            "paytide_notification_deliveries",
            "Merchant notification attempts by event type and outcome "
            "(delivered, retrying, skipped)",
            ["event_type", "outcome"],
            registry=self.registry,
        )
        self.notification_dead_letters = Counter(
            "paytide_notification_dead_letters",
            "Merchant notifications given up after every attempt failed",
            ["event_type"],
            registry=self.registry,
        )
        # Escalations (issue 16): what the operators were told, and payments that ended because
        # a step can never succeed. Both are counted once per payment and kind, on the alert's
        # first try, whether or not an alert URL is configured.
        self.operator_alerts = Counter(
            "paytide_operator_alerts",
            "Operator alerts raised about payments, by kind (payment.needs_attention, ...)",
            ["kind"],
            registry=self.registry,
        )
        self.payments_ended_unrecoverable = Counter(
            "paytide_payments_ended_unrecoverable",
            "Payments ended (failed workflow, needs_attention) because a step can never succeed, "
            "by step (admission, ledger)",
            ["step"],
            registry=self.registry,
        )

"""Webhook endpoints cannot make paytide call into its own network (SSRF): internal targets are
refused when registered, and again before every delivery after resolving the name, over real
HTTP with the real worker, Temporal dev server and the ledger on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route
from temporalio.testing import WorkflowEnvironment

from activities.notify import event_id
from activities.webhook_delivery import TARGET_FORBIDDEN, post_to_checked_address
from ledger import webhook_deliveries
from ledger.engine import session_factory, transaction
from ledger.models import WebhookDelivery, WebhookEndpoint
from paytide.outbound import TargetPolicy, check_url, system_resolver
from tests.integration.stack import Stack, running_stack
from tests.support.serve import serve
from tests.support.tls import issue
from tests.support.webhook_recorder import WebhookRecorder

PUBLIC_ADDRESS = "93.184.216.34"
OPS_SECRET = "whsec_ops_test"
# Loopback, which the development setting lets through.
LOOPBACK = [
    "http://127.0.0.1/hook",
    "http://localhost:5432/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
]
# Refused whatever the settings say.
INTERNAL = [
    "http://2130706433/hook",
    "http://0177.0.0.1/hook",
    "http://0x7f.0.0.1/hook",
    "http://127.1/hook",
    "http://0.0.0.0:8000/hook",
    "http://[::]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://10.0.0.5/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",
    "http://[fc00::1]/hook",
    "http://[fe80::1]/hook",
]
HOSTILE = LOOPBACK + INTERNAL


class Dns:
    """The system's resolver, except for the names a test points elsewhere for a while."""

    def __init__(self) -> None:
        self.overrides: dict[str, list[str]] = {}

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        if host in self.overrides:
            return self.overrides[host]
        return await system_resolver(host, port)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookRecorder, int]]:
    """A merchant's receiver on a loopback port: what an attacker would aim at."""
    recorder = WebhookRecorder()
    async with serve(recorder.app) as url:
        yield recorder, int(url.rsplit(":", 1)[1])


def own_stack(
    dev_env: WorkflowEnvironment, database_url: str, **extra: Any
) -> AbstractAsyncContextManager[Stack]:
    merchant = f"ssrf-{uuid.uuid4().hex[:10]}"
    return running_stack(dev_env.client, database_url, default_merchant=merchant, **extra)


def stored_endpoints(stack: Stack) -> list[WebhookEndpoint]:
    with transaction(session_factory(stack.engine)) as session:
        merchant = stack.settings.default_merchant
        query = select(WebhookEndpoint).where(WebhookEndpoint.merchant_id == merchant)
        return list(session.exec(query))


async def register(stack: Stack, url: str) -> dict[str, Any]:
    created = await stack.api.post(
        "/webhook-endpoints", json={"url": url, "events": ["payment.succeeded"]}
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def succeeded_payment_event(stack: Stack) -> str:
    created = await stack.pay(payment_method="pm_sandbox_instant")
    assert created.status_code == 201, created.text
    payment = await stack.wait_final(created.json()["id"])
    assert payment["status"] == "succeeded", payment
    return event_id(payment["id"], "payment.succeeded")


async def final_delivery(stack: Stack, event: str, endpoint_id: str) -> WebhookDelivery:
    async with asyncio.timeout(60):
        while True:
            with transaction(session_factory(stack.engine)) as session:
                row = session.exec(
                    select(WebhookDelivery).where(
                        WebhookDelivery.event_id == event,
                        WebhookDelivery.endpoint_id == endpoint_id,
                    )
                ).first()
            if row is not None and row.status != "pending":
                return row
            await asyncio.sleep(0.2)


async def test_internal_targets_are_refused_at_registration_and_nothing_is_stored(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """Loopback, private, link-local, metadata, shared and disguised hosts get 422
    webhook_url_forbidden on create and on update, and the ledger keeps nothing of them."""
    dns = Dns()
    dns.overrides["hooks.shop.example"] = [PUBLIC_ADDRESS]
    async with own_stack(dev_env, database_url, resolver=dns) as stack:
        for url in HOSTILE:
            refused = await stack.api.post(
                "/webhook-endpoints", json={"url": url, "events": ["payment.succeeded"]}
            )
            assert refused.status_code == 422, (url, refused.text)
            error = refused.json()["error"]
            assert error["code"] == "webhook_url_forbidden", (url, error)
            assert "public https URLs" in error["message"]
        assert stored_endpoints(stack) == []
        assert (await stack.api.get("/webhook-endpoints")).json()["data"] == []

        public = await register(stack, "https://hooks.shop.example/paytide")
        for url in ("http://169.254.169.254/latest/meta-data/", "http://[::1]:8000/hook"):
            changed = await stack.api.post(f"/webhook-endpoints/{public['id']}", json={"url": url})
            assert changed.status_code == 422, changed.text
            assert changed.json()["error"]["code"] == "webhook_url_forbidden"
        assert [row.url for row in stored_endpoints(stack)] == [
            "https://hooks.shop.example/paytide"
        ]


async def test_a_name_rebound_to_loopback_after_registration_is_never_called(
    dev_env: WorkflowEnvironment,
    database_url: str,
    receiver: tuple[WebhookRecorder, int],
) -> None:
    """A name that resolved public at registration and to loopback at delivery gets no request:
    the attempt is logged as target_forbidden without status or latency, the delivery is a dead
    letter at once (operators alerted, same neutral reason), the endpoint is disabled and
    cannot be re-enabled while the name stays internal."""
    recorder, port = receiver
    ops = WebhookRecorder()
    dns = Dns()
    async with serve(ops.app) as ops_url:
        settings = {"ops_alert_url": f"{ops_url}/webhooks", "ops_alert_secret": OPS_SECRET}
        async with own_stack(dev_env, database_url, resolver=dns, **settings) as stack:
            dns.overrides["localhost"] = [PUBLIC_ADDRESS]  # what the attacker's DNS says first
            endpoint = await register(stack, f"http://localhost:{port}/webhooks")
            del dns.overrides["localhost"]  # ... and then: 127.0.0.1, the receiver's address

            event = await succeeded_payment_event(stack)
            row = await final_delivery(stack, event, endpoint["id"])

            assert recorder.received == []
            assert (row.status, row.attempts, row.last_status_code) == ("failed", 1, None)
            with transaction(session_factory(stack.engine)) as session:
                attempts = webhook_deliveries.attempts_of(session, row.id)
            assert [(a.status_code, a.latency_ms, a.error) for a in attempts] == [
                (None, 0, TARGET_FORBIDDEN)
            ]
            detail = (await stack.api.get(f"/webhook-deliveries/{row.id}")).json()
            assert detail["last_status_code"] is None
            assert detail["last_error"] == TARGET_FORBIDDEN
            assert [(a["status_code"], a["latency_ms"]) for a in detail["attempt_log"]] == [
                (None, 0)
            ]
            alert = await ops.wait_for(lambda w: w.json()["data"]["delivery_id"] == row.id)
            assert alert.json()["data"]["error"] == TARGET_FORBIDDEN

            fetched = await stack.api.get(f"/webhook-endpoints/{endpoint['id']}")
            assert fetched.json()["status"] == "disabled"
            enable = await stack.api.post(
                f"/webhook-endpoints/{endpoint['id']}", json={"status": "enabled"}
            )
            assert enable.status_code == 422, enable.text
            assert enable.json()["error"]["code"] == "webhook_url_forbidden"
            assert recorder.received == []


async def test_loopback_passes_only_with_the_development_setting(
    dev_env: WorkflowEnvironment,
    database_url: str,
    receiver: tuple[WebhookRecorder, int],
) -> None:
    """With PAYTIDE_WEBHOOK_ALLOW_LOOPBACK a receiver on this machine is registered and gets
    its event, sent to the address that was checked (a name only the check's resolver knows,
    kept in Host); private, metadata and disguised hosts stay refused."""
    recorder, port = receiver
    dns = Dns()
    dns.overrides["receiver.paytide.test"] = ["127.0.0.1"]
    extra = {"webhook_allow_loopback": True, "resolver": dns}
    async with own_stack(dev_env, database_url, **extra) as stack:
        for url in INTERNAL:
            refused = await stack.api.post(
                "/webhook-endpoints", json={"url": url, "events": ["payment.succeeded"]}
            )
            assert refused.status_code == 422, (url, refused.text)
            assert refused.json()["error"]["code"] == "webhook_url_forbidden"
        assert stored_endpoints(stack) == []

        endpoint = await register(stack, f"http://receiver.paytide.test:{port}/webhooks")
        recorder.secrets = [endpoint["secret"]]
        event = await succeeded_payment_event(stack)
        row = await final_delivery(stack, event, endpoint["id"])
        assert row.status == "delivered"
        assert recorder.event_ids == {event: 1}
        assert recorder.delivered[0].headers["host"] == f"receiver.paytide.test:{port}"


async def test_https_to_a_checked_address_verifies_the_certificate_for_the_name(
    tmp_path: Path,
) -> None:
    """An https delivery goes to the checked address yet presents and verifies the endpoint's
    name in TLS: the receiver's certificate for that name is accepted, another name is not."""
    name = "receiver.paytide.test"
    certificate = issue(tmp_path, name)
    recorder = WebhookRecorder()
    dns = Dns()
    dns.overrides[name] = ["127.0.0.1"]
    dns.overrides["impostor.paytide.test"] = ["127.0.0.1"]
    policy = TargetPolicy(allow_loopback=True)  # https only, as in production
    async with (
        serve(recorder.app, tls=(certificate.certificate, certificate.key)) as url,
        httpx.AsyncClient(verify=certificate.client_context(), timeout=10) as client,
    ):
        port = url.rsplit(":", 1)[1]
        target = await check_url(f"https://{name}:{port}/webhooks", policy, dns)
        answer = await post_to_checked_address(client, target, b"{}", {})
        assert answer.status_code == 200
        assert recorder.received[0].headers["host"] == f"{name}:{port}"

        impostor = await check_url(f"https://impostor.paytide.test:{port}/webhooks", policy, dns)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await post_to_checked_address(client, impostor, b"{}", {})
        assert len(recorder.received) == 1


async def test_a_redirect_from_a_checked_target_is_never_followed() -> None:
    """An endpoint answering 307 to another address (one the check never saw) gets its 307
    taken as the answer, even from a client that follows redirects: the other address sees
    nothing."""
    internal = WebhookRecorder()

    async def bounce(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.app.state.internal}/webhooks", status_code=307)

    bouncer = Starlette(routes=[Route("/hook", bounce, methods=["POST"])])
    async with (
        serve(internal.app) as internal_url,
        serve(bouncer) as url,
        httpx.AsyncClient(follow_redirects=True, timeout=10) as client,
    ):
        bouncer.state.internal = internal_url
        policy = TargetPolicy(allow_http=True, allow_loopback=True)
        target = await check_url(f"{url}/hook", policy, system_resolver)
        answer = await post_to_checked_address(client, target, b"{}", {})
    assert answer.status_code == 307
    assert answer.headers["location"] == f"{internal_url}/webhooks"
    assert internal.received == []

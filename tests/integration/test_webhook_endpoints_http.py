"""Merchants' webhook endpoints end to end: the API, the real worker and Temporal dev server, a
real local HTTP receiver that verifies signatures and dedupes by event id, the ledger on SQLite
and PostgreSQL, and the re-drive from the API and from the `paytide` command line."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from sqlmodel import select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from activities.notify import event_id
from gateways.signing import verify
from ledger import webhook_deliveries
from ledger.engine import session_factory, transaction
from ledger.models import Payment, WebhookDelivery, WebhookEndpoint
from paytide.settings import Settings
from paytide.temporal import connect
from paytide.webhook_dispatch import delivery_workflow_id
from tests.integration.stack import Stack, running_stack, subprocess_env
from tests.support.serve import serve
from tests.support.webhook_recorder import WebhookRecorder

# Retries a test can watch: 0.2 s, 0.4 s, then every 0.5 s.
FAST_RETRIES: dict[str, Any] = {"webhook_retry_initial": 0.2, "webhook_retry_max_interval": 0.5}
OPS_SECRET = "whsec_ops_test"


@pytest.fixture
async def codec_client(dev_env: WorkflowEnvironment) -> Client:
    """A client made like the API's and the worker's (with the payload codec), so that a
    `paytide` process started by a test reads the same payloads."""
    return await connect(
        Settings(
            temporal_address=dev_env.client.service_client.config.target_host,
            temporal_namespace=dev_env.client.namespace,
        )
    )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookRecorder, str]]:
    recorder = WebhookRecorder()
    async with serve(recorder.app) as url:
        yield recorder, f"{url}/webhooks"


@pytest.fixture
async def ops() -> AsyncIterator[tuple[WebhookRecorder, str]]:
    recorder = WebhookRecorder()
    async with serve(recorder.app) as url:
        yield recorder, f"{url}/webhooks"


def own_stack(
    client: Client, database_url: str, **extra: Any
) -> AbstractAsyncContextManager[Stack]:
    """A stack acting for a merchant of its own: endpoints made by one test (their receivers
    gone with it) never receive another test's events, and the bulk re-drive sees only its own.
    Its receivers listen on 127.0.0.1: loopback targets are allowed, as in development."""
    merchant = f"wh-{uuid.uuid4().hex[:10]}"
    extra = {"webhook_allow_loopback": True, **extra}
    return running_stack(client, database_url, default_merchant=merchant, **extra)


async def add_endpoint(stack: Stack, url: str, *events: str) -> dict[str, Any]:
    created = await stack.api.post(
        "/webhook-endpoints", json={"url": url, "events": list(events or ["payment.succeeded"])}
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def succeeded_payment(stack: Stack, **fields: Any) -> dict[str, Any]:
    created = await stack.pay(payment_method="pm_sandbox_instant", **fields)
    assert created.status_code == 201, created.text
    payment = await stack.wait_final(created.json()["id"])
    assert payment["status"] == "succeeded", payment
    return payment


def delivery(stack: Stack, event: str, endpoint_id: str) -> WebhookDelivery | None:
    with transaction(session_factory(stack.engine)) as session:
        return session.exec(
            select(WebhookDelivery).where(
                WebhookDelivery.event_id == event, WebhookDelivery.endpoint_id == endpoint_id
            )
        ).first()


async def wait_delivery(
    stack: Stack,
    event: str,
    endpoint_id: str,
    done: Callable[[WebhookDelivery], bool],
    within: float = 60,
) -> WebhookDelivery:
    async with asyncio.timeout(within):
        while True:
            row = delivery(stack, event, endpoint_id)
            if row is not None and done(row):
                return row
            await asyncio.sleep(0.2)


def attempt_codes(stack: Stack, delivery_id: str) -> list[int | None]:
    with transaction(session_factory(stack.engine)) as session:
        return [a.status_code for a in webhook_deliveries.attempts_of(session, delivery_id)]


async def test_two_500s_then_200_logs_three_attempts_and_delivers_once(
    codec_client: Client, database_url: str, receiver: tuple[WebhookRecorder, str]
) -> None:
    """A receiver that checks the signature and answers 500, 500, 200 gets the event three
    times, accepts it once, and the ledger logs the three attempts with their status codes."""
    recorder, url = receiver
    recorder.fail_first = 2
    async with own_stack(codec_client, database_url, **FAST_RETRIES) as stack:
        endpoint = await add_endpoint(stack, url)
        recorder.secrets = [endpoint["secret"]]
        payment = await succeeded_payment(stack)
        event = event_id(payment["id"], "payment.succeeded")

        row = await wait_delivery(stack, event, endpoint["id"], lambda r: r.status == "delivered")
        assert row.attempts == 3
        assert attempt_codes(stack, row.id) == [500, 500, 200]
        assert recorder.event_ids == {event: 1}
        taken = recorder.delivered[0]
        assert taken.headers["paytide-event-id"] == event
        assert taken.json()["type"] == "payment.succeeded"
        assert taken.json()["data"]["id"] == payment["id"]
        # Every try carried the same body: only the signature's timestamp moves.
        assert {webhook.body for webhook in recorder.received} == {taken.body}

        listed = await stack.api.get("/webhook-deliveries", params={"status": "delivered"})
        assert listed.status_code == 200, listed.text
        mine = [d for d in listed.json()["data"] if d["id"] == row.id]
        assert [(d["attempts"], d["last_status_code"]) for d in mine] == [(3, 200)]
        detail = await stack.api.get(f"/webhook-deliveries/{row.id}")
        assert detail.status_code == 200, detail.text
        log = detail.json()["attempt_log"]
        assert [(a["attempt"], a["status_code"]) for a in log] == [(1, 500), (2, 500), (3, 200)]
        assert [a["error"] for a in log] == ["endpoint answered 500"] * 2 + [None]
        assert all(a["latency_ms"] >= 0 for a in log)


async def test_dead_letter_alerts_operators_and_the_api_redrives_it(
    codec_client: Client,
    database_url: str,
    receiver: tuple[WebhookRecorder, str],
    ops: tuple[WebhookRecorder, str],
) -> None:
    """A receiver down for the whole window makes a failed delivery that the operators hear
    of; only its merchant may re-drive it; POST /webhook-deliveries/{id}/retry then delivers it,
    once, and a second retry is 409."""
    recorder, url = receiver
    ops_recorder, ops_url = ops
    recorder.down = True
    settings = {
        **FAST_RETRIES,
        "webhook_delivery_window": 2.0,
        "ops_alert_url": ops_url,
        "ops_alert_secret": OPS_SECRET,
    }
    async with own_stack(codec_client, database_url, **settings) as stack:
        endpoint = await add_endpoint(stack, url)
        recorder.secrets = [endpoint["secret"]]
        payment = await succeeded_payment(stack)
        event = event_id(payment["id"], "payment.succeeded")

        row = await wait_delivery(stack, event, endpoint["id"], lambda r: r.status == "failed")
        assert row.attempts >= 2
        assert set(attempt_codes(stack, row.id)) == {503}
        failed = await stack.api.get("/webhook-deliveries", params={"status": "failed"})
        assert row.id in [d["id"] for d in failed.json()["data"]]
        alert = await ops_recorder.wait_for(
            lambda w: (
                w.json()["type"] == "webhook.dead_letter"
                and w.json()["data"]["delivery_id"] == row.id
            )
        )
        verify(alert.headers["paytide-signature"], alert.body, [OPS_SECRET], 300, time.time())
        assert alert.json()["data"]["delivery_id"] == row.id
        assert recorder.event_ids == {}

        # Another merchant's key neither sees nor re-drives it.
        foreign = await stack.operator.post(f"/webhook-deliveries/{row.id}/retry")
        assert foreign.status_code == 404
        assert (await stack.operator.get(f"/webhook-deliveries/{row.id}")).status_code == 404
        assert (await stack.api.get(f"/webhook-deliveries/{row.id}")).json()["status"] == "failed"

        recorder.down = False
        retried = await stack.api.post(f"/webhook-deliveries/{row.id}/retry")
        assert retried.status_code == 202, retried.text
        assert (retried.json()["status"], retried.json()["redrives"]) == ("pending", 1)
        done = await wait_delivery(stack, event, endpoint["id"], lambda r: r.status == "delivered")
        assert done.redrives == 1
        assert recorder.event_ids == {event: 1}

        again = await stack.api.post(f"/webhook-deliveries/{row.id}/retry")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "webhook_delivery_not_failed"
        missing = await stack.api.post("/webhook-deliveries/whd_nope/retry")
        assert missing.status_code == 404


async def paytide_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paytide",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_redrive_delivers_every_dead_letter_since(
    codec_client: Client, database_url: str, receiver: tuple[WebhookRecorder, str]
) -> None:
    """`paytide notifications redrive --since` re-drives the failed deliveries, shows its
    progress and a summary, and the receiver then takes each event once."""
    recorder, url = receiver
    recorder.down = True
    settings = {**FAST_RETRIES, "webhook_delivery_window": 2.0}
    async with own_stack(codec_client, database_url, **settings) as stack:
        merchant = stack.settings.default_merchant
        endpoint = await add_endpoint(stack, url)
        payments = [await succeeded_payment(stack) for _ in range(2)]
        events = [event_id(p["id"], "payment.succeeded") for p in payments]
        for event in events:
            await wait_delivery(stack, event, endpoint["id"], lambda r: r.status == "failed")

        env = subprocess_env(stack.settings)
        bad, _, err = await paytide_cli(env, "notifications", "redrive", "--since", "soon")
        assert bad == 2
        assert "neither an ISO 8601 time" in err

        recorder.down = False
        code, out, err = await paytide_cli(
            env, "notifications", "redrive", "--since", "10m", "--merchant",
            stack.settings.default_merchant,
        )  # fmt: skip
        assert code == 0, out + err
        assert "2 re-driven, 0 skipped, 0 failed" in out
        assert "2/2" in err  # the progress bar
        for event in events:
            await wait_delivery(stack, event, endpoint["id"], lambda r: r.status == "delivered")
        assert recorder.event_ids == dict.fromkeys(events, 1)

        nothing, out, _ = await paytide_cli(
            env, "notifications", "redrive", "--since", "10m", "--merchant", merchant
        )
        assert nothing == 0
        assert "nothing to re-drive" in out


async def test_payment_closes_while_its_receivers_are_dead_or_slow(
    codec_client: Client, database_url: str, receiver: tuple[WebhookRecorder, str]
) -> None:
    """The payment's workflow completes while the deliveries to a dead and a slow receiver are
    still running: nothing in the payment waits for a merchant's endpoint."""
    dead, dead_url = receiver
    dead.down = True
    slow = WebhookRecorder()
    slow.delay = 60.0
    async with (
        serve(slow.app) as slow_base,
        own_stack(codec_client, database_url, webhook_attempt_timeout=120.0) as stack,
    ):
        dead_endpoint = await add_endpoint(stack, dead_url)
        slow_endpoint = await add_endpoint(stack, f"{slow_base}/webhooks")
        payment = await succeeded_payment(stack)
        event = event_id(payment["id"], "payment.succeeded")
        with transaction(session_factory(stack.engine)) as session:
            row = session.get(Payment, payment["id"])
            assert row is not None
            workflow_id = row.workflow_id

        async with asyncio.timeout(30):
            while True:
                described = await codec_client.get_workflow_handle(workflow_id).describe()
                if described.status is WorkflowExecutionStatus.COMPLETED:
                    break
                await asyncio.sleep(0.2)
        for endpoint in (dead_endpoint, slow_endpoint):
            handle = codec_client.get_workflow_handle(
                delivery_workflow_id(event, endpoint["id"], 0)
            )
            assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
            pending = delivery(stack, event, endpoint["id"])
            assert pending is not None and pending.status == "pending"
            await handle.terminate("test over")


async def test_endpoint_secret_shown_once_sealed_at_rest_and_rotation_signs_with_both(
    codec_client: Client, database_url: str, receiver: tuple[WebhookRecorder, str]
) -> None:
    """The secret is in the create answer only and never in clear in the ledger; after a
    rotation a receiver holding only the old or only the new secret verifies the delivery;
    a disabled endpoint gets nothing."""
    recorder, url = receiver
    async with own_stack(codec_client, database_url, **FAST_RETRIES) as stack:
        endpoint = await add_endpoint(stack, url, "payment.succeeded", "refund.succeeded")
        old_secret = endpoint["secret"]
        assert old_secret.startswith("whsec_")
        listed = await stack.api.get("/webhook-endpoints")
        assert [e for e in listed.json()["data"] if "secret" in e] == []
        with transaction(session_factory(stack.engine)) as session:
            row = session.get(WebhookEndpoint, endpoint["id"])
            assert row is not None
            assert old_secret not in row.secret_sealed

        rotated = await stack.api.post(f"/webhook-endpoints/{endpoint['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret != old_secret
        assert rotated.json()["previous_secret_expires_at"] is not None

        recorder.secrets = [old_secret]  # a receiver not yet updated
        first = await succeeded_payment(stack)
        got = await recorder.wait_for(lambda w: w.json()["data"]["id"] == first["id"])
        assert got.headers["paytide-signature"].count("v1=") == 2
        verify(got.headers["paytide-signature"], got.body, [new_secret], 300, time.time())

        disabled = await stack.api.post(f"/webhook-endpoints/{endpoint['id']}/disable")
        assert disabled.json()["status"] == "disabled"
        second = await succeeded_payment(stack)
        # The fan-out runs before the merchant's callback: once that arrived, it is done.
        await stack.merchant.wait_for(lambda w: w.json()["data"]["id"] == second["id"])
        assert delivery(stack, event_id(second["id"], "payment.succeeded"), endpoint["id"]) is None

        updated = await stack.api.post(
            f"/webhook-endpoints/{endpoint['id']}", json={"status": "enabled", "events": []}
        )
        assert updated.status_code == 422
        fetched = await stack.api.get(f"/webhook-endpoints/{endpoint['id']}")
        assert fetched.json()["status"] == "disabled"  # the refused update changed nothing


async def test_bad_endpoint_requests_are_4xx_and_change_nothing(
    codec_client: Client, database_url: str
) -> None:
    """A bad URL, an unknown event or an unknown field is a 422 with a code; no endpoint is made."""
    async with own_stack(codec_client, database_url) as stack:
        before = (await stack.api.get("/webhook-endpoints")).json()["data"]
        for body in (
            {"url": "ftp://example.com/hook", "events": ["payment.succeeded"]},
            {"url": "http://127.0.0.1:99999/hook", "events": ["payment.succeeded"]},
            {"url": "http://127.0.0.1/hook", "events": ["payment.exploded"]},
            {"url": "http://127.0.0.1/hook", "events": ["payment.succeeded"], "secret": "x"},
        ):
            refused = await stack.api.post("/webhook-endpoints", json=body)
            assert refused.status_code == 422, (body, refused.text)
            assert refused.json()["error"]["code"] == "validation_failed"
        assert (await stack.api.get("/webhook-endpoints")).json()["data"] == before
        query = await stack.api.get("/webhook-deliveries", params={"status": "lost"})
        assert query.status_code == 400
        assert query.json()["error"]["code"] == "invalid_query"


async def test_requires_action_reaches_a_subscribed_endpoint(
    codec_client: Client, database_url: str, receiver: tuple[WebhookRecorder, str]
) -> None:
    """A 3-D Secure payment's payment.requires_action goes to the endpoint that subscribed to
    it, signed, with the public payment in requires_action."""
    recorder, url = receiver
    async with own_stack(codec_client, database_url, **FAST_RETRIES) as stack:
        endpoint = await add_endpoint(stack, url, "payment.requires_action")
        recorder.secrets = [endpoint["secret"]]
        created = await stack.pay(payment_method="pm_sandbox_3ds")
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "requires_action"
        got = await recorder.wait_for(lambda w: w.json()["data"]["id"] == created.json()["id"])
        assert got.json()["type"] == "payment.requires_action"
        assert got.json()["data"]["status"] == "requires_action"
        assert got.headers["paytide-event-id"] == event_id(
            created.json()["id"], "payment.requires_action"
        )

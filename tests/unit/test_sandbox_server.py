"""The sandbox gateway's HTTP API, driven in-process: scripted tokens, idempotency, webhooks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any
from uuid import uuid4

import httpx
import pytest
from starlette.applications import Starlette

from gateways.sandbox import SandboxWebhookVerifier
from gateways.sandbox_server import SandboxConfig, create_sandbox_app
from gateways.signing import verify
from tests.support.webhook_recorder import WebhookRecorder
from workflows.contract import DisputeState

pytestmark = pytest.mark.unit

API_KEY = "sk_sandbox_unit"
WEBHOOK_SECRET = "whsec_sandbox_unit"
CONFIG = SandboxConfig(
    api_key=API_KEY,
    webhook_url="http://receiver.test/webhooks",
    webhook_secret=WEBHOOK_SECRET,
    webhook_delay=0.01,
    slow_delay=0.2,
    flaky_failures=2,
    webhook_max_attempts=3,
)


@dataclass
class Sandbox:
    app: Starlette
    client: httpx.AsyncClient
    recorder: WebhookRecorder

    async def charge(
        self, key: str | None = None, **fields: Any
    ) -> tuple[httpx.Response, dict[str, Any]]:
        body = charge_body(**fields)
        response = await self.client.post(
            "/v1/charges", json=body, headers={"Idempotency-Key": key or new_key()}
        )
        return response, response.json()

    async def refund(
        self, key: str | None = None, **fields: Any
    ) -> tuple[httpx.Response, dict[str, Any]]:
        response = await self.client.post(
            "/v1/refunds", json=fields, headers={"Idempotency-Key": key or new_key()}
        )
        return response, response.json()

    async def capture(
        self, charge_id: str, key: str | None = None, **fields: Any
    ) -> tuple[httpx.Response, dict[str, Any]]:
        response = await self.client.post(
            f"/v1/charges/{charge_id}/capture",
            json=fields,
            headers={"Idempotency-Key": key or new_key()},
        )
        return response, response.json()

    async def succeeded_charge(self, **fields: Any) -> dict[str, Any]:
        """A charge that has succeeded in its answer, ready to be refunded."""
        response, charge = await self.charge(**{"payment_method": "pm_sandbox_instant", **fields})
        assert response.status_code == 200, response.text
        assert charge["status"] == "succeeded"
        return charge

    async def stats(self) -> dict[str, dict[str, int]]:
        stats: dict[str, dict[str, int]] = (await self.client.get("/v1/stats")).json()
        return stats

    async def settled(self) -> None:
        """Wait until every scheduled settlement and webhook delivery has finished."""
        async with asyncio.timeout(5):
            await self.app.state.tasks.join()

    @property
    def background(self) -> int:
        pending: int = self.app.state.tasks.pending
        return pending


def new_key() -> str:
    return f"key-{uuid4()}"


def charge_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": 1250,
        "currency": "EUR",
        "payment_method": "pm_sandbox_ok",
        "capture": "automatic",
        "reference": f"pay-{uuid4()}",
        "metadata": {"payment_id": "pay-1", "workflow_id": "payment:demo:1"},
    }
    body.update(fields)
    return body


@asynccontextmanager
async def running_sandbox(
    config: SandboxConfig = CONFIG, *, fail_first: int = 0
) -> AsyncIterator[Sandbox]:
    recorder = WebhookRecorder(fail_first=fail_first)
    app = create_sandbox_app(config, webhook_transport=httpx.ASGITransport(recorder.app))
    # ASGITransport skips the lifespan; entering it here makes shutdown stop background work.
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app),
            base_url="http://sandbox.test",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as client,
    ):
        yield Sandbox(app, client, recorder)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox() as running:
        yield running


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


async def test_healthz_needs_no_credentials(sandbox: Sandbox) -> None:
    """GET /healthz answers ok without an Authorization header."""
    response = await sandbox.client.get("/healthz", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("authorization", [None, "Bearer sk_wrong", f"Basic {API_KEY}", "Bearer"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/charges"),
        ("GET", "/v1/charges?idempotency_key=k"),
        ("GET", "/v1/charges/ch_x"),
        ("POST", "/v1/charges/ch_x/cancel"),
        ("POST", "/v1/charges/ch_x/capture"),
        ("POST", "/v1/refunds"),
        ("GET", "/v1/refunds/re_x"),
        ("GET", "/v1/stats"),
    ],
)
async def test_api_requires_the_bearer_api_key(
    sandbox: Sandbox, authorization: str | None, method: str, path: str
) -> None:
    """Every API endpoint answers 401 `unauthorized` without the right bearer token."""
    headers = {"Idempotency-Key": new_key()}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(sandbox.app), base_url="http://sandbox.test"
    ) as anonymous:
        response = await anonymous.request(method, path, json=charge_body(), headers=headers)
    assert_error(response, 401, "unauthorized")
    assert (await sandbox.stats())["requests_by_key"] == {}


async def test_charge_requires_an_idempotency_key(sandbox: Sandbox) -> None:
    """POST /v1/charges without Idempotency-Key is refused and creates nothing."""
    response = await sandbox.client.post("/v1/charges", json=charge_body())
    assert_error(response, 400, "missing_idempotency_key")
    assert (await sandbox.stats())["charges_by_reference"] == {}


@pytest.mark.parametrize(
    "body",
    [
        charge_body(amount=0),
        charge_body(amount=-5),
        charge_body(amount="1250"),
        charge_body(amount=12.5),
        charge_body(amount=True),
        charge_body(currency="EURO"),
        charge_body(capture="later"),
        charge_body(reference=""),
        charge_body(metadata={"n": 1}),
        charge_body(surprise="field"),
        {key: value for key, value in charge_body().items() if key != "payment_method"},
        [charge_body()],
    ],
)
async def test_invalid_charge_body_is_rejected(sandbox: Sandbox, body: Any) -> None:
    """A body that is not a valid charge is 400 `invalid_request` naming the field."""
    response = await sandbox.client.post(
        "/v1/charges", json=body, headers={"Idempotency-Key": new_key()}
    )
    assert_error(response, 400, "invalid_request")
    assert (await sandbox.stats())["charges_by_reference"] == {}


async def test_non_json_body_is_rejected(sandbox: Sandbox) -> None:
    """A body that is not JSON is 400 `invalid_request`."""
    response = await sandbox.client.post(
        "/v1/charges", content=b"amount=1", headers={"Idempotency-Key": new_key()}
    )
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("payment_method", ["tok_visa", "4242424242424242", "PM_sandbox_ok"])
async def test_payment_method_must_be_a_pm_token(sandbox: Sandbox, payment_method: str) -> None:
    """A payment method that is not a pm_ token is 400 `invalid_payment_method`."""
    response, _ = await sandbox.charge(payment_method=payment_method)
    assert_error(response, 400, "invalid_payment_method")


async def test_ok_is_pending_then_succeeds_with_a_signed_webhook(sandbox: Sandbox) -> None:
    """pm_sandbox_ok answers pending, then settles and sends a signed charge.succeeded."""
    response, charge = await sandbox.charge(payment_method="pm_sandbox_ok", currency="eur")
    assert response.status_code == 200
    assert charge["id"].startswith("ch_")
    assert charge["status"] == "pending"
    assert charge["currency"] == "EUR"
    assert charge["client_secret"] is None
    assert charge["next_action"] is None
    assert charge["failure"] is None
    assert charge["created"] == pytest.approx(time.time(), abs=5)

    webhook = await sandbox.recorder.wait_for_event(charge["id"], "charge.succeeded")
    verify(webhook.headers["sandbox-signature"], webhook.body, [WEBHOOK_SECRET], 60, time.time())
    event = webhook.json()
    assert event["id"].startswith("evt_")
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["amount"] == 1250
    assert event["data"]["metadata"] == {"payment_id": "pay-1", "workflow_id": "payment:demo:1"}
    latest = (await sandbox.client.get(f"/v1/charges/{charge['id']}")).json()
    assert latest["status"] == "succeeded"


async def test_ok_with_manual_capture_is_authorized(sandbox: Sandbox) -> None:
    """With capture=manual the charge settles as authorized and the event is charge.authorized."""
    _, charge = await sandbox.charge(capture="manual")
    webhook = await sandbox.recorder.wait_for_event(charge["id"], "charge.authorized")
    assert webhook.json()["data"]["status"] == "authorized"


async def test_unlisted_pm_token_behaves_like_ok(sandbox: Sandbox) -> None:
    """Any pm_ token without a script approves, like an ordinary test card."""
    _, charge = await sandbox.charge(payment_method="pm_card_visa")
    assert charge["status"] == "pending"
    await sandbox.recorder.wait_for_event(charge["id"], "charge.succeeded")


async def test_decline_is_an_immediate_outcome(sandbox: Sandbox) -> None:
    """pm_sandbox_decline answers declined with card_declined, and announces charge.failed."""
    response, charge = await sandbox.charge(payment_method="pm_sandbox_decline")
    assert response.status_code == 200
    assert charge["status"] == "declined"
    assert charge["failure"]["code"] == "card_declined"
    assert charge["failure"]["retryable"] is False
    webhook = await sandbox.recorder.wait_for_event(charge["id"], "charge.failed")
    assert webhook.json()["data"]["failure"]["code"] == "card_declined"


async def test_3ds_requires_action_then_succeeds(sandbox: Sandbox) -> None:
    """pm_sandbox_3ds needs a challenge; completing it with the client secret succeeds."""
    _, charge = await sandbox.charge(payment_method="pm_sandbox_3ds")
    assert charge["status"] == "requires_action"
    assert charge["client_secret"].startswith(f"{charge['id']}_secret_")
    redirect = charge["next_action"]["redirect_url"]
    assert charge["next_action"]["type"] == "redirect_to_url"
    assert redirect == f"http://sandbox.test/v1/charges/{charge['id']}/3ds"
    assert sandbox.background == 0  # Nothing happens until the customer acts.

    async with httpx.AsyncClient(transport=httpx.ASGITransport(sandbox.app)) as browser:
        wrong = await browser.post(redirect, json={"client_secret": "nope", "result": "success"})
        assert_error(wrong, 403, "invalid_client_secret")
        done = await browser.post(
            redirect, json={"client_secret": charge["client_secret"], "result": "success"}
        )
        assert done.status_code == 200
        assert done.json()["status"] == "succeeded"
        assert done.json()["next_action"] is None
        again = await browser.post(
            redirect, json={"client_secret": charge["client_secret"], "result": "failure"}
        )
        assert_error(again, 409, "charge_not_actionable")
    await sandbox.recorder.wait_for_event(charge["id"], "charge.succeeded")


async def test_3ds_failure_fails_the_charge(sandbox: Sandbox) -> None:
    """A failed challenge declines the charge with authentication_failed and charge.failed."""
    _, charge = await sandbox.charge(payment_method="pm_sandbox_3ds")
    done = await sandbox.client.post(
        charge["next_action"]["redirect_url"],
        json={"client_secret": charge["client_secret"], "result": "failure"},
    )
    assert done.json()["status"] == "declined"
    assert done.json()["failure"]["code"] == "authentication_failed"
    webhook = await sandbox.recorder.wait_for_event(charge["id"], "charge.failed")
    assert webhook.json()["data"]["failure"]["code"] == "authentication_failed"


async def test_silent_stays_pending_without_a_webhook(sandbox: Sandbox) -> None:
    """pm_sandbox_silent stays pending and schedules no webhook; polling shows pending."""
    _, charge = await sandbox.charge(payment_method="pm_sandbox_silent")
    assert charge["status"] == "pending"
    assert sandbox.background == 0
    latest = (await sandbox.client.get(f"/v1/charges/{charge['id']}")).json()
    assert latest["status"] == "pending"


async def test_flaky_fails_before_creating_then_charges_once(sandbox: Sandbox) -> None:
    """pm_sandbox_flaky answers 503 twice per key, creates nothing then, and charges once."""
    key, body = new_key(), charge_body(payment_method="pm_sandbox_flaky")
    answers = []
    for _ in range(4):
        response = await sandbox.client.post(
            "/v1/charges", json=body, headers={"Idempotency-Key": key}
        )
        answers.append(response)
    assert [r.status_code for r in answers] == [503, 503, 200, 200]
    assert_error(answers[0], 503, "service_unavailable")
    assert answers[2].json()["id"] == answers[3].json()["id"]
    stats = await sandbox.stats()
    assert stats["requests_by_key"][key] == 4
    assert stats["charges_by_reference"][body["reference"]] == 1


async def test_flaky_counts_failures_per_key(sandbox: Sandbox) -> None:
    """A new idempotency key gets its own run of 503s."""
    for _ in range(2):
        first, _ = await sandbox.charge(payment_method="pm_sandbox_flaky")
        assert first.status_code == 503


async def test_slow_answers_after_the_delay(sandbox: Sandbox) -> None:
    """pm_sandbox_slow holds the request for slow_delay, then behaves like ok."""
    started = time.monotonic()
    _, charge = await sandbox.charge(payment_method="pm_sandbox_slow")
    assert time.monotonic() - started >= CONFIG.slow_delay
    assert charge["status"] == "pending"
    await sandbox.recorder.wait_for_event(charge["id"], "charge.succeeded")


async def test_concurrent_retries_of_one_key_charge_once(sandbox: Sandbox) -> None:
    """Two requests racing on one key (a client retry during a slow answer) share one charge."""
    key, body = new_key(), charge_body(payment_method="pm_sandbox_slow")
    first, second = await asyncio.gather(
        sandbox.client.post("/v1/charges", json=body, headers={"Idempotency-Key": key}),
        sandbox.client.post("/v1/charges", json=body, headers={"Idempotency-Key": key}),
    )
    assert first.json()["id"] == second.json()["id"]
    assert (await sandbox.stats())["charges_by_reference"][body["reference"]] == 1


async def test_retryable_fails_first_attempt_of_a_reference_only(sandbox: Sandbox) -> None:
    """pm_sandbox_retryable fails the first charge of a reference; a new key succeeds."""
    body = charge_body(payment_method="pm_sandbox_retryable")
    first = await sandbox.client.post(
        "/v1/charges", json=body, headers={"Idempotency-Key": new_key()}
    )
    assert first.json()["status"] == "failed"
    assert first.json()["failure"] == {
        "code": "processor_unavailable",
        "message": first.json()["failure"]["message"],
        "retryable": True,
    }
    replay = await sandbox.client.post(
        "/v1/charges",
        json=body,
        headers={"Idempotency-Key": first.request.headers["Idempotency-Key"]},
    )
    assert replay.json()["status"] == "failed"  # Same key, same answer.
    second = await sandbox.client.post(
        "/v1/charges", json=body, headers={"Idempotency-Key": new_key()}
    )
    assert second.json()["status"] == "pending"
    assert second.json()["id"] != first.json()["id"]
    assert (await sandbox.stats())["charges_by_reference"][body["reference"]] == 2
    await sandbox.recorder.wait_for_event(first.json()["id"], "charge.failed")
    await sandbox.recorder.wait_for_event(second.json()["id"], "charge.succeeded")


async def test_same_key_same_body_replays_the_charge(sandbox: Sandbox) -> None:
    """A retried request returns the original charge, marked as a replay, and charges once."""
    key, body = new_key(), charge_body()
    first = await sandbox.client.post("/v1/charges", json=body, headers={"Idempotency-Key": key})
    second = await sandbox.client.post("/v1/charges", json=body, headers={"Idempotency-Key": key})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    stats = await sandbox.stats()
    assert stats == {
        "charges_by_reference": {body["reference"]: 1},
        "charges_by_key": {key: 1},
        "requests_by_key": {key: 2},
        "refunds_by_charge": {},
    }


async def test_same_key_different_body_conflicts(sandbox: Sandbox) -> None:
    """Reusing a key for a different charge is 409 `idempotency_conflict` and charges nothing."""
    key, body = new_key(), charge_body()
    await sandbox.client.post("/v1/charges", json=body, headers={"Idempotency-Key": key})
    response = await sandbox.client.post(
        "/v1/charges", json={**body, "amount": 9999}, headers={"Idempotency-Key": key}
    )
    assert_error(response, 409, "idempotency_conflict")
    assert (await sandbox.stats())["charges_by_reference"] == {body["reference"]: 1}


async def test_charges_can_be_found_by_id_and_by_key(sandbox: Sandbox) -> None:
    """GET by id and by idempotency key return the charge; unknown ones are 404 `not_found`."""
    key = new_key()
    _, charge = await sandbox.charge(key, payment_method="pm_sandbox_silent")
    by_id = await sandbox.client.get(f"/v1/charges/{charge['id']}")
    by_key = await sandbox.client.get("/v1/charges", params={"idempotency_key": key})
    assert by_id.json() == charge
    assert by_key.json() == charge
    assert_error(await sandbox.client.get("/v1/charges/ch_missing"), 404, "not_found")
    missing = await sandbox.client.get("/v1/charges", params={"idempotency_key": "nope"})
    assert_error(missing, 404, "not_found")
    assert_error(await sandbox.client.get("/v1/charges"), 400, "invalid_request")


async def test_cancel_a_pending_charge(sandbox: Sandbox) -> None:
    """A pending charge cancels, announces charge.canceled once, and cancels idempotently."""
    _, charge = await sandbox.charge(payment_method="pm_sandbox_silent")
    path = f"/v1/charges/{charge['id']}/cancel"
    first = await sandbox.client.post(path, headers={"Idempotency-Key": new_key()})
    again = await sandbox.client.post(path, headers={"Idempotency-Key": new_key()})
    assert first.json()["status"] == again.json()["status"] == "canceled"
    await sandbox.settled()
    assert [e["type"] for e in sandbox.recorder.events_for(charge["id"])] == ["charge.canceled"]


async def test_cancel_wins_over_a_pending_settlement(sandbox: Sandbox) -> None:
    """Canceling before the ok webhook fires stops the charge from succeeding."""
    slow_webhooks = replace(CONFIG, webhook_delay=0.1)
    async with running_sandbox(slow_webhooks) as slow:
        _, charge = await slow.charge(payment_method="pm_sandbox_ok")
        canceled = await slow.client.post(
            f"/v1/charges/{charge['id']}/cancel", headers={"Idempotency-Key": new_key()}
        )
        assert canceled.json()["status"] == "canceled"
        await slow.recorder.wait_for_event(charge["id"], "charge.canceled")
        await slow.settled()
        latest = (await slow.client.get(f"/v1/charges/{charge['id']}")).json()
        assert latest["status"] == "canceled"
        assert [e["type"] for e in slow.recorder.events_for(charge["id"])] == ["charge.canceled"]


async def test_cancel_refuses_a_final_charge(sandbox: Sandbox) -> None:
    """Canceling a declined charge is 409 `charge_not_cancelable` carrying its state."""
    _, charge = await sandbox.charge(payment_method="pm_sandbox_decline")
    response = await sandbox.client.post(
        f"/v1/charges/{charge['id']}/cancel", headers={"Idempotency-Key": new_key()}
    )
    error = assert_error(response, 409, "charge_not_cancelable")
    assert error["charge"]["status"] == "declined"


async def test_cancel_needs_a_key_and_a_known_charge(sandbox: Sandbox) -> None:
    """Cancel without Idempotency-Key is 400; an unknown charge is 404."""
    _, charge = await sandbox.charge(payment_method="pm_sandbox_silent")
    no_key = await sandbox.client.post(f"/v1/charges/{charge['id']}/cancel")
    assert_error(no_key, 400, "missing_idempotency_key")
    unknown = await sandbox.client.post(
        "/v1/charges/ch_missing/cancel", headers={"Idempotency-Key": new_key()}
    )
    assert_error(unknown, 404, "not_found")


async def test_webhook_is_retried_until_accepted_with_a_stable_event_id() -> None:
    """A failing receiver gets the same event id again (re-signed) until it answers 2xx."""
    async with running_sandbox(fail_first=2) as sandbox:
        _, charge = await sandbox.charge()
        await sandbox.recorder.wait_for_event(charge["id"], "charge.succeeded")
        attempts = sandbox.recorder.received
        assert [w.status for w in attempts] == [500, 500, 200]
        assert len({w.json()["id"] for w in attempts}) == 1
        assert len({w.body for w in attempts}) == 1


async def test_webhook_delivery_gives_up_after_max_attempts() -> None:
    """Delivery stops after webhook_max_attempts failures instead of retrying forever."""
    async with running_sandbox(replace(CONFIG, webhook_max_attempts=2), fail_first=99) as sandbox:
        await sandbox.charge()
        await sandbox.settled()
        assert [w.status for w in sandbox.recorder.received] == [500, 500]


async def test_shutdown_cancels_pending_background_work() -> None:
    """Leaving the lifespan stops scheduled settlements; nothing is sent afterwards."""
    async with running_sandbox(replace(CONFIG, webhook_delay=30)) as sandbox:
        await sandbox.charge()
        assert sandbox.background == 1
    assert sandbox.background == 0
    assert sandbox.recorder.received == []


async def test_unknown_route_answers_json(sandbox: Sandbox) -> None:
    """Unknown paths get the same JSON error shape as every other error."""
    assert_error(await sandbox.client.get("/v2/whatever"), 404, "not_found")


async def test_instant_succeeds_in_the_answer_and_announces_it(sandbox: Sandbox) -> None:
    """pm_sandbox_instant answers succeeded (all of it captured) and still sends the webhook."""
    charge = await sandbox.succeeded_charge()
    assert charge["amount_captured"] == charge["amount"] == 1250
    assert charge["payment_method"] == "pm_sandbox_instant"
    webhook = await sandbox.recorder.wait_for_event(charge["id"], "charge.succeeded")
    assert webhook.json()["data"]["status"] == "succeeded"


async def test_unavailable_answers_503_and_creates_nothing(sandbox: Sandbox) -> None:
    """pm_sandbox_unavailable answers 503 to every request and never creates a charge."""
    key, body = new_key(), charge_body(payment_method="pm_sandbox_unavailable")
    for _ in range(3):
        response = await sandbox.client.post(
            "/v1/charges", json=body, headers={"Idempotency-Key": key}
        )
        assert_error(response, 503, "service_unavailable")
    stats = await sandbox.stats()
    assert stats["charges_by_key"] == {}
    assert stats["charges_by_reference"] == {}
    assert sandbox.background == 0


async def test_capture_takes_an_authorized_charge_to_succeeded(sandbox: Sandbox) -> None:
    """Capturing an authorized charge succeeds, announces charge.succeeded, and replays by key."""
    _, charge = await sandbox.charge(payment_method="pm_sandbox_instant", capture="manual")
    assert (charge["status"], charge["amount_captured"]) == ("authorized", 0)
    await sandbox.recorder.wait_for_event(charge["id"], "charge.authorized")

    key = new_key()
    first, captured = await sandbox.capture(charge["id"], key)
    assert first.status_code == 200
    assert (captured["status"], captured["amount_captured"]) == ("succeeded", 1250)
    assert "idempotent-replayed" not in first.headers
    replay, replayed = await sandbox.capture(charge["id"], key)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replayed == captured
    webhook = await sandbox.recorder.wait_for_event(charge["id"], "charge.succeeded")
    assert webhook.json()["data"]["amount_captured"] == 1250

    again, _ = await sandbox.capture(charge["id"])  # A new key: a second capture.
    error = assert_error(again, 409, "charge_not_capturable")
    assert error["charge"]["status"] == "succeeded"


async def test_partial_capture_captures_only_the_amount(sandbox: Sandbox) -> None:
    """A capture of part of the authorization captures that amount, and refunds are held to it."""
    _, charge = await sandbox.charge(payment_method="pm_sandbox_instant", capture="manual")
    response, captured = await sandbox.capture(charge["id"], amount=1000, currency="eur")
    assert response.status_code == 200
    assert (captured["amount"], captured["amount_captured"]) == (1250, 1000)
    too_much, _ = await sandbox.refund(charge=charge["id"], amount=1001)
    assert assert_error(too_much, 400, "refund_exceeds_charge")["refundable"] == 1000


async def test_capture_refuses_more_than_authorized_or_another_currency(sandbox: Sandbox) -> None:
    """Capturing above the authorization or in another currency is 400 and captures nothing."""
    _, charge = await sandbox.charge(payment_method="pm_sandbox_instant", capture="manual")
    over, _ = await sandbox.capture(charge["id"], amount=1251)
    assert_error(over, 400, "amount_exceeds_authorized")
    other, _ = await sandbox.capture(charge["id"], currency="USD")
    assert_error(other, 400, "currency_mismatch")
    invalid, _ = await sandbox.capture(charge["id"], amount=0)
    assert_error(invalid, 400, "invalid_request")
    latest = (await sandbox.client.get(f"/v1/charges/{charge['id']}")).json()
    assert (latest["status"], latest["amount_captured"]) == ("authorized", 0)


@pytest.mark.parametrize(
    ("payment_method", "capture", "status"),
    [
        ("pm_sandbox_silent", "manual", "pending"),
        ("pm_sandbox_instant", "automatic", "succeeded"),
        ("pm_sandbox_decline", "manual", "declined"),
    ],
)
async def test_capture_refuses_a_charge_that_is_not_authorized(
    sandbox: Sandbox, payment_method: str, capture: str, status: str
) -> None:
    """Only an authorized charge captures; otherwise 409 `charge_not_capturable` with its state."""
    _, charge = await sandbox.charge(payment_method=payment_method, capture=capture)
    response, _ = await sandbox.capture(charge["id"])
    assert assert_error(response, 409, "charge_not_capturable")["charge"]["status"] == status


async def test_capture_key_reused_for_another_capture_conflicts(sandbox: Sandbox) -> None:
    """A capture key reused with another amount or charge is 409 `idempotency_conflict`."""
    _, first = await sandbox.charge(payment_method="pm_sandbox_instant", capture="manual")
    _, second = await sandbox.charge(payment_method="pm_sandbox_instant", capture="manual")
    key = new_key()
    await sandbox.capture(first["id"], key, amount=500)
    other_amount, _ = await sandbox.capture(first["id"], key, amount=600)
    assert_error(other_amount, 409, "idempotency_conflict")
    other_charge, _ = await sandbox.capture(second["id"], key, amount=500)
    assert_error(other_charge, 409, "idempotency_conflict")
    latest = (await sandbox.client.get(f"/v1/charges/{second['id']}")).json()
    assert latest["status"] == "authorized"


async def test_capture_needs_a_key_and_a_known_charge(sandbox: Sandbox) -> None:
    """Capture without Idempotency-Key is 400; an unknown charge is 404; no body means all."""
    _, charge = await sandbox.charge(payment_method="pm_sandbox_instant", capture="manual")
    no_key = await sandbox.client.post(f"/v1/charges/{charge['id']}/capture")
    assert_error(no_key, 400, "missing_idempotency_key")
    unknown, _ = await sandbox.capture("ch_missing")
    assert_error(unknown, 404, "not_found")
    empty = await sandbox.client.post(
        f"/v1/charges/{charge['id']}/capture", headers={"Idempotency-Key": new_key()}
    )
    assert empty.json()["amount_captured"] == 1250


async def test_refund_is_pending_then_succeeds_with_a_signed_webhook(sandbox: Sandbox) -> None:
    """A refund answers pending, then a signed refund.succeeded carries the refund object."""
    charge = await sandbox.succeeded_charge()
    response, refund = await sandbox.refund(
        charge=charge["id"],
        amount=500,
        currency="eur",
        reason="requested_by_customer",
        metadata={"payment_id": "pay-1"},
    )
    assert response.status_code == 200, response.text
    assert refund["id"].startswith("re_")
    assert refund["status"] == "pending"

    webhook = await sandbox.recorder.wait_for_event(refund["id"], "refund.succeeded")
    verify(webhook.headers["sandbox-signature"], webhook.body, [WEBHOOK_SECRET], 60, time.time())
    event = webhook.json()
    assert event["id"].startswith("evt_")
    assert event["data"] == {
        "id": refund["id"],
        "object": "refund",
        "charge": charge["id"],
        "amount": 500,
        "currency": "EUR",
        "status": "succeeded",
        "reason": "requested_by_customer",
        "metadata": {"payment_id": "pay-1"},
        "failure": None,
        "created": refund["created"],
    }
    latest = await sandbox.client.get(f"/v1/refunds/{refund['id']}")
    assert latest.json() == event["data"]
    assert (await sandbox.stats())["refunds_by_charge"] == {charge["id"]: 1}


async def test_same_refund_key_replays_the_refund(sandbox: Sandbox) -> None:
    """A retried refund returns the original, marked as a replay, and refunds once."""
    charge = await sandbox.succeeded_charge()
    key = new_key()
    first, refund = await sandbox.refund(key, charge=charge["id"], amount=1250)
    second, replayed = await sandbox.refund(key, charge=charge["id"], amount=1250)
    assert second.status_code == 200, second.text
    assert replayed["id"] == refund["id"]
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    await sandbox.settled()
    # Even after the charge is fully refunded, the key still answers with its refund.
    late, settled = await sandbox.refund(key, charge=charge["id"], amount=1250)
    assert late.status_code == 200
    assert (settled["id"], settled["status"]) == (refund["id"], "succeeded")
    assert (await sandbox.stats())["refunds_by_charge"] == {charge["id"]: 1}
    events = sandbox.recorder.events_for(refund["id"])
    assert [e["type"] for e in events] == ["refund.succeeded"]


async def test_refund_key_reused_for_another_refund_conflicts(sandbox: Sandbox) -> None:
    """Reusing a refund key with a different body is 409 `idempotency_conflict`."""
    charge = await sandbox.succeeded_charge()
    key = new_key()
    await sandbox.refund(key, charge=charge["id"], amount=100)
    response, _ = await sandbox.refund(key, charge=charge["id"], amount=200)
    assert_error(response, 409, "idempotency_conflict")
    assert (await sandbox.stats())["refunds_by_charge"] == {charge["id"]: 1}


async def test_refunds_may_not_exceed_the_charge(sandbox: Sandbox) -> None:
    """Refunds of a charge add up to at most its amount; the excess is 400 and refunds nothing."""
    charge = await sandbox.succeeded_charge()
    assert (await sandbox.refund(charge=charge["id"], amount=1000))[0].status_code == 200
    over, _ = await sandbox.refund(charge=charge["id"], amount=300)
    assert assert_error(over, 400, "refund_exceeds_charge")["refundable"] == 250
    assert (await sandbox.refund(charge=charge["id"], amount=250))[0].status_code == 200
    nothing_left, _ = await sandbox.refund(charge=charge["id"], amount=1)
    assert assert_error(nothing_left, 400, "refund_exceeds_charge")["refundable"] == 0
    assert (await sandbox.stats())["refunds_by_charge"] == {charge["id"]: 2}


async def test_concurrent_refunds_cannot_over_refund(sandbox: Sandbox) -> None:
    """Two racing refunds under different keys cannot together exceed the charge."""
    charge = await sandbox.succeeded_charge()
    answers = await asyncio.gather(
        *(sandbox.refund(charge=charge["id"], amount=1000) for _ in range(2))
    )
    assert sorted(response.status_code for response, _ in answers) == [200, 400]


async def test_scripted_refund_failure_ends_failed_and_frees_the_amount(sandbox: Sandbox) -> None:
    """A refund of a pm_sandbox_refund_fails charge ends failed with a signed refund.failed."""
    charge = await sandbox.succeeded_charge(payment_method="pm_sandbox_refund_fails")
    _, refund = await sandbox.refund(charge=charge["id"], amount=1250)
    assert refund["status"] == "pending"
    webhook = await sandbox.recorder.wait_for_event(refund["id"], "refund.failed")
    verify(webhook.headers["sandbox-signature"], webhook.body, [WEBHOOK_SECRET], 60, time.time())
    data = webhook.json()["data"]
    assert data["status"] == "failed"
    assert data["failure"] == {
        "code": "refund_declined",
        "message": data["failure"]["message"],
        "retryable": False,
    }
    latest = (await sandbox.client.get(f"/v1/refunds/{refund['id']}")).json()
    assert latest["status"] == "failed"
    # A failed refund gave nothing back, so the whole amount may be refunded again.
    retry, _ = await sandbox.refund(charge=charge["id"], amount=1250)
    assert retry.status_code == 200


@pytest.mark.parametrize(
    ("payment_method", "capture", "status"),
    [
        ("pm_sandbox_silent", "automatic", "pending"),
        ("pm_sandbox_decline", "automatic", "declined"),
        ("pm_sandbox_instant", "manual", "authorized"),
    ],
)
async def test_refund_refuses_a_charge_that_has_not_succeeded(
    sandbox: Sandbox, payment_method: str, capture: str, status: str
) -> None:
    """Only a succeeded charge refunds; otherwise 409 `charge_not_refundable` with its state."""
    _, charge = await sandbox.charge(payment_method=payment_method, capture=capture)
    response, _ = await sandbox.refund(charge=charge["id"], amount=100)
    assert assert_error(response, 409, "charge_not_refundable")["charge"]["status"] == status
    assert (await sandbox.stats())["refunds_by_charge"] == {}


async def test_refund_needs_a_key_a_known_charge_and_its_currency(sandbox: Sandbox) -> None:
    """Refunds need Idempotency-Key (400), a known charge (404) and the charge's currency (400)."""
    charge = await sandbox.succeeded_charge()
    no_key = await sandbox.client.post("/v1/refunds", json={"charge": charge["id"], "amount": 1})
    assert_error(no_key, 400, "missing_idempotency_key")
    unknown, _ = await sandbox.refund(charge="ch_missing", amount=1)
    assert_error(unknown, 404, "not_found")
    other, _ = await sandbox.refund(charge=charge["id"], amount=1, currency="USD")
    assert_error(other, 400, "currency_mismatch")
    assert_error(await sandbox.client.get("/v1/refunds/re_missing"), 404, "not_found")
    assert (await sandbox.stats())["refunds_by_charge"] == {}


@pytest.mark.parametrize(
    "body",
    [
        {"charge": "ch_x", "amount": 0},
        {"charge": "ch_x", "amount": "100"},
        {"charge": "ch_x", "amount": 100, "currency": "EURO"},
        {"charge": "ch_x", "amount": 100, "reason": ""},
        {"charge": "ch_x", "amount": 100, "metadata": {"n": 1}},
        {"charge": "ch_x", "amount": 100, "surprise": "field"},
        {"amount": 100},
        [{"charge": "ch_x", "amount": 100}],
    ],
)
async def test_invalid_refund_body_is_rejected(sandbox: Sandbox, body: Any) -> None:
    """A body that is not a valid refund is 400 `invalid_request`."""
    response = await sandbox.client.post(
        "/v1/refunds", json=body, headers={"Idempotency-Key": new_key()}
    )
    assert_error(response, 400, "invalid_request")


async def test_outage_refuses_every_charge_until_it_ends(sandbox: Sandbox) -> None:
    """`POST /v1/_test/outage` makes charges 503 with nothing recorded; `seconds: 0` ends it."""
    started = await sandbox.client.post("/v1/_test/outage", json={"seconds": 60})
    assert started.status_code == 200, started.text
    assert 0 < started.json()["outage_seconds_remaining"] <= 60
    refused, _ = await sandbox.charge(key="key-outage")
    assert_error(refused, 503, "service_unavailable")
    assert (await sandbox.stats())["requests_by_key"] == {}
    anonymous = await sandbox.client.post(
        "/v1/_test/outage", json={"seconds": 0}, headers={"Authorization": ""}
    )
    assert_error(anonymous, 401, "unauthorized")
    for bad in ({"seconds": -1}, {"seconds": "5"}, {"seconds": True}, {}):
        refused = await sandbox.client.post("/v1/_test/outage", json=bad)
        assert_error(refused, 400, "invalid_request")
    ended = await sandbox.client.post("/v1/_test/outage", json={"seconds": 0})
    assert ended.json() == {"outage_seconds_remaining": 0.0}
    response, _ = await sandbox.charge(key="key-outage")
    assert response.status_code == 200, response.text
    assert (await sandbox.stats())["charges_by_key"] == {"key-outage": 1}


async def test_dispute_opens_on_a_succeeded_charge_with_a_signed_webhook(sandbox: Sandbox) -> None:
    """Opening a dispute answers needs_response with the evidence due date; dispute.created is
    signed and carries the charge's metadata, and the adapter's verifier reads it."""
    charge = await sandbox.succeeded_charge()
    before = int(time.time())
    response = await sandbox.client.post(
        f"/v1/charges/{charge['id']}/dispute",
        json={"reason": "product_not_received", "evidence_due_in_seconds": 3600},
    )
    assert response.status_code == 200, response.text
    dispute = response.json()
    assert (dispute["status"], dispute["amount"], dispute["charge"]) == (
        "needs_response",
        1250,
        charge["id"],
    )
    assert before + 3600 <= dispute["evidence_due_by"] <= int(time.time()) + 3600

    webhook = await sandbox.recorder.wait_for_event(dispute["id"], "dispute.created")
    verify(webhook.headers["sandbox-signature"], webhook.body, [WEBHOOK_SECRET], 60, time.time())
    assert webhook.json()["data"]["metadata"] == {
        "payment_id": "pay-1",
        "workflow_id": "payment:demo:1",
    }
    [event] = SandboxWebhookVerifier([WEBHOOK_SECRET], 60).verify(webhook.headers, webhook.body)
    assert event.dispute is not None
    assert (event.dispute.dispute_reference, event.dispute.state) == (
        dispute["id"],
        DisputeState.NEEDS_RESPONSE,
    )
    assert event.dispute.reason == "product_not_received"
    assert event.dispute.evidence_due_by is not None
    assert (event.payment_id, event.gateway_reference) == ("pay-1", charge["id"])


async def test_dispute_closes_once_won_or_lost(sandbox: Sandbox) -> None:
    """Closing sends dispute.closed with the outcome; deciding again is 409 dispute_closed."""
    charge = await sandbox.succeeded_charge()
    dispute = (await sandbox.client.post(f"/v1/charges/{charge['id']}/dispute")).json()

    closed = await sandbox.client.post(
        f"/v1/disputes/{dispute['id']}/close", json={"outcome": "lost"}
    )
    again = await sandbox.client.post(
        f"/v1/disputes/{dispute['id']}/close", json={"outcome": "won"}
    )

    assert (closed.status_code, closed.json()["status"]) == (200, "lost")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "dispute_closed")
    webhook = await sandbox.recorder.wait_for_event(dispute["id"], "dispute.closed")
    assert webhook.json()["data"]["status"] == "lost"
    read = await sandbox.client.get(f"/v1/disputes/{dispute['id']}")
    assert read.json()["status"] == "lost"


async def test_dispute_is_refused_on_an_unsettled_or_already_disputed_charge(
    sandbox: Sandbox,
) -> None:
    """Only a succeeded charge can be disputed, once; a bad outcome is 400."""
    _, pending = await sandbox.charge(payment_method="pm_sandbox_silent")
    charge = await sandbox.succeeded_charge()
    first = await sandbox.client.post(f"/v1/charges/{charge['id']}/dispute")

    unsettled = await sandbox.client.post(f"/v1/charges/{pending['id']}/dispute")
    twice = await sandbox.client.post(f"/v1/charges/{charge['id']}/dispute")
    bad = await sandbox.client.post(
        f"/v1/disputes/{first.json()['id']}/close", json={"outcome": "maybe"}
    )
    unknown = await sandbox.client.post("/v1/disputes/dp_nope/close", json={"outcome": "won"})

    assert (unsettled.status_code, unsettled.json()["error"]["code"]) == (
        409,
        "charge_not_disputable",
    )
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "charge_already_disputed")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_request")
    assert unknown.status_code == 404

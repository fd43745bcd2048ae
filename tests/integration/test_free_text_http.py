"""Control characters in free text are refused at the edge over real HTTP, on SQLite and
PostgreSQL: 422 invalid_characters for the field, and nothing is started or written."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import SQLModel, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api import idempotency
from ledger.engine import session_factory, transaction
from ledger.models import Payment, PaymentEvent, RefundRecord, WebhookEndpoint
from tests.integration.stack import Stack, running_stack

pytestmark = pytest.mark.integration

# One of each kind the rule refuses: NUL, another C0, a line break, DEL, C1, U+2028. A lone
# surrogate (the JSON escape \ud800) never reaches a field: the body parser refuses it first
# (tests/integration/test_hostile_json_http.py).
BAD = ["\x00", "\x1b", "\n", "\x7f", "\x85", "\u2028"]


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, empty_database_url: str) -> AsyncIterator[Stack]:
    """A ledger of its own (SQLite and PostgreSQL), so "nothing was written" is an exact count.
    The endpoint's name resolves to a public address only here (the machine has no DNS)."""

    async def public_dns(host: str, port: int) -> Sequence[str]:
        return ["93.184.216.34"]

    async with running_stack(dev_env.client, empty_database_url, resolver=public_dns) as running:
        yield running


def _count(stack: Stack, table: type[SQLModel]) -> int:
    with transaction(session_factory(stack.engine)) as session:
        return int(session.exec(select(func.count()).select_from(table)).one())


def _refused_field(answer: httpx.Response) -> str:
    """The one field a 422 invalid_characters answer names."""
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "validation_failed", error
    [detail] = error["details"]
    assert detail["code"] == "invalid_characters", detail
    assert "found U+" in detail["message"], detail
    return str(detail["field"])


async def _post(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """POST ``body`` as ASCII JSON (escapes such as \\ud800 intact: httpx would refuse to
    encode a lone surrogate itself)."""
    content = json.dumps(body).encode()
    headers = {**headers, "Content-Type": "application/json"}
    return await client.post(url, content=content, headers=headers)


def _payment(**changes: Any) -> dict[str, Any]:
    return {
        "amount": 1999,
        "currency": "USD",
        "customer_id": "cus_text",
        "payment_method": "pm_sandbox_ok",
        "order_id": f"order_{uuid.uuid4().hex[:8]}",
        **changes,
    }


async def _workflow_exists(client: Client, stack: Stack, key: str) -> bool:
    workflow = idempotency.workflow_id(stack.settings.default_merchant, key)
    try:
        await client.get_workflow_handle(workflow).describe()
    except RPCError as error:
        assert error.status is RPCStatusCode.NOT_FOUND, error
        return False
    return True


async def test_nul_in_description_is_422_and_no_payment_or_workflow_exists(
    dev_env: WorkflowEnvironment, stack: Stack
) -> None:
    """The review's case: a NUL in description is 422 invalid_characters at once (PostgreSQL
    refuses NUL in text, so it used to be a 202 for a payment that never existed); no workflow
    is started and the ledger holds no payment and no event."""
    key = uuid.uuid4().hex
    answer = await stack.pay(key, description="order\x00 77")
    assert _refused_field(answer) == "description"
    assert not await _workflow_exists(dev_env.client, stack, key)
    assert _count(stack, Payment) == 0
    assert _count(stack, PaymentEvent) == 0


async def test_every_free_text_field_refuses_control_characters_and_changes_nothing(
    dev_env: WorkflowEnvironment, stack: Stack
) -> None:
    """Each free-text field of a payment, cancel, review, refund and webhook endpoint body
    (ids, email, city, metadata keys and values included) answers 422 invalid_characters for
    each kind of refused character, and nothing is created or changed."""
    payment_fields: dict[str, Any] = {
        "customer_id": lambda bad: {"customer_id": f"cus{bad}1"},
        "payment_method": lambda bad: {"payment_method": f"pm_sandbox_ok{bad}"},
        "order_id": lambda bad: {"order_id": f"o{bad}"},
        "description": lambda bad: {"description": f"line one{bad}line two"},
        "metadata.note": lambda bad: {"metadata": {"note": f"a{bad}b"}},
        # A key is named by its place, never echoed back: "metadata" itself is the field.
        "metadata": lambda bad: {"metadata": {"ok": "v", f"k{bad}": "v"}},
        "device_id": lambda bad: {"device_id": f"dev{bad}"},
        "location.city": lambda bad: {"location": {"country": "FR", "city": f"Paris{bad}"}},
        "customer_email": lambda bad: {"customer_email": f"ana{bad}@example.com"},
    }
    ok = await stack.pay()
    assert ok.status_code == 201, ok.text
    payment = await stack.wait_final(ok.json()["id"])
    assert payment["status"] == "succeeded"
    for field, body in payment_fields.items():
        for bad in BAD:
            key = uuid.uuid4().hex
            answer = await _post(
                stack.api, "/payments", _payment(**body(bad)), {"Idempotency-Key": key}
            )
            refused = _refused_field(answer)
            assert refused == field, (field, bad)
            assert not await _workflow_exists(dev_env.client, stack, key)

    path = f"/payments/{payment['id']}"
    review = {"decision": "approve", "reviewer": "ana", "reason": "known customer"}
    endpoint = {"url": "https://merchant.example.com/hooks", "events": ["payment.succeeded"]}
    created = await stack.api.post("/webhook-endpoints", json=endpoint)
    assert created.status_code == 201, created.text
    endpoint_path = f"/webhook-endpoints/{created.json()['id']}"
    for bad in BAD:
        refund = {"Idempotency-Key": uuid.uuid4().hex}
        for client, url, body, field, headers in [
            (stack.api, f"{path}/cancel", {"reason": f"dup{bad}"}, "reason", {}),
            (stack.operator, f"{path}/review", {**review, "reviewer": f"a{bad}"}, "reviewer", {}),
            (stack.operator, f"{path}/review", {**review, "reason": f"r{bad}"}, "reason", {}),
            (stack.api, f"{path}/refunds", {"reason": f"r{bad}"}, "reason", refund),
            (stack.api, f"{path}/refunds", {"metadata": {"k": bad}}, "metadata.k", refund),
            (stack.api, "/webhook-endpoints", {**endpoint, "description": bad}, "description", {}),
            (
                stack.api,
                "/webhook-endpoints",
                {**endpoint, "url": endpoint["url"] + bad},
                "url",
                {},
            ),
            (stack.api, endpoint_path, {"description": f"d{bad}"}, "description", {}),
        ]:
            answer = await _post(client, url, body, headers)
            assert _refused_field(answer) == field, (url, body)

    assert (await stack.api.get(path)).json()["status"] == "succeeded"
    assert (await stack.api.get(endpoint_path)).json()["description"] is None
    assert _count(stack, Payment) == 1
    assert _count(stack, RefundRecord) == 0
    assert _count(stack, WebhookEndpoint) == 1


async def test_control_characters_in_paths_and_queries_are_400_not_a_ledger_error(
    stack: Stack,
) -> None:
    """A NUL or other control character in a path id or a query value is 400
    invalid_characters before any route or ledger read (PostgreSQL refuses NUL in text)."""
    paid = await stack.pay(key=f"path-{uuid.uuid4().hex[:8]}")
    assert paid.status_code in (201, 202), paid.text
    payment_id = paid.json()["id"]
    for target in [
        "/payments/pay_%00x",
        f"/payments/{payment_id}%1b",
        "/payments/pay_x%E2%80%A8/refunds",
        "/payments?customer_id=cus_%00",
        "/payments?status=%0Asucceeded",
        "/webhook-deliveries?status=failed%00",
        "/webhook-endpoints/we_%00",
    ]:
        answer = await stack.api.get(target)
        assert answer.status_code == 400, (target, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_characters", (target, error)
        assert "U+" in error["message"], (target, error)
    # The same payment, read without the character, is untouched and readable.
    assert (await stack.api.get(f"/payments/{payment_id}")).status_code == 200

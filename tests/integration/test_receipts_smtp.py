"""Customer email receipts end to end: a JPY payment and its refund through the API, the real
worker and Temporal dev server, and paytide's own SMTP sink on a loopback port (SQLite and
PostgreSQL). The address is personal data: it must be nowhere in clear but in the email."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.notify import event_id
from ledger.engine import session_factory, transaction
from ledger.models import Payment
from paytide.settings import Settings
from paytide.smtp_sink import SmtpSink
from paytide.temporal import connect
from tests.integration.stack import running_stack


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[tuple[SmtpSink, int]]:
    mail = SmtpSink(tmp_path / "mail")
    server = await mail.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield mail, port


async def next_message(sink: SmtpSink, count: int) -> EmailMessage:
    """The ``count``-th message the sink stored, waiting for it."""
    async with asyncio.timeout(30):
        while len(sink.messages()) < count:
            await asyncio.sleep(0.1)
    raw = sink.messages()[count - 1].read_bytes()
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    plain = message.get_body(preferencelist=("plain",))
    rich = message.get_body(preferencelist=("html",))
    assert plain is not None and rich is not None
    return plain.get_content(), rich.get_content()


async def raw_history(client: Client, workflow_id: str) -> bytes:
    """The workflow's history as Temporal stores it: fetched without the payload codec."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return b"".join(event.SerializeToString() for event in history.events)


async def test_jpy_payment_and_refund_receipts_reach_the_smtp_sink(
    dev_env: WorkflowEnvironment,
    database_url: str,
    sink: tuple[SmtpSink, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A JPY payment with customer_email gets a plain-text and HTML receipt of "1500 JPY" (no
    decimals), its refund one of "500 JPY"; the address is not in clear in any Temporal
    history, in the ledger or in the logs."""
    mail, port = sink
    email = f"hanako.{uuid.uuid4().hex[:6]}@example.jp"
    codec_client = await connect(
        Settings(
            temporal_address=dev_env.client.service_client.config.target_host,
            temporal_namespace=dev_env.client.namespace,
        )
    )
    caplog.set_level("DEBUG")
    extra = {"smtp_host": "127.0.0.1", "smtp_port": port, "receipt_from": "shop@example.com"}
    async with running_stack(codec_client, database_url, **extra) as stack:
        created = await stack.pay(
            amount=1500, currency="JPY", payment_method="pm_sandbox_instant", customer_email=email
        )
        assert created.status_code == 201, created.text
        assert "customer_email" not in created.json()
        payment = await stack.wait_final(created.json()["id"])
        assert payment["status"] == "succeeded"

        receipt = await next_message(mail, 1)
        assert receipt["To"] == email
        assert receipt["From"] == "shop@example.com"
        assert receipt["Subject"] == "Receipt for your payment of 1500 JPY"
        assert receipt["X-Paytide-Event-Id"] == event_id(payment["id"], "payment.succeeded")
        plain, rich = parts(receipt)
        assert "Amount: 1500 JPY" in plain
        assert "15.00" not in plain
        assert "1500 JPY" in rich
        assert payment["id"] in plain

        refunded = await stack.api.post(
            f"/payments/{payment['id']}/refunds",
            json={"amount": 500},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert refunded.status_code in (201, 202), refunded.text
        refund_receipt = await next_message(mail, 2)
        assert refund_receipt["To"] == email
        assert refund_receipt["Subject"] == "Refund of 500 JPY"
        assert "Amount: 500 JPY" in parts(refund_receipt)[0]

        with transaction(session_factory(stack.engine)) as session:
            row = session.get(Payment, payment["id"])
            assert row is not None and row.customer_email_sealed is not None
            assert email not in row.customer_email_sealed
            workflow_id = row.workflow_id
        for workflow in (
            workflow_id,
            f"receipt-{event_id(payment['id'], 'payment.succeeded')}",
        ):
            assert email.encode() not in await raw_history(dev_env.client, workflow)
        assert email not in caplog.text


async def test_a_payment_without_an_email_sends_no_receipt(
    dev_env: WorkflowEnvironment, database_url: str, sink: tuple[SmtpSink, int]
) -> None:
    """No customer_email, no receipt; an invalid address is a 422 that starts nothing."""
    mail, port = sink
    async with running_stack(
        dev_env.client, database_url, smtp_host="127.0.0.1", smtp_port=port
    ) as stack:
        refused = await stack.pay(customer_email="not an address\r\nBcc: x@example.com")
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"][0]["field"] == "customer_email"

        created = await stack.pay(payment_method="pm_sandbox_instant")
        payment = await stack.wait_final(created.json()["id"])
        assert payment["status"] == "succeeded"
        # The merchant's callback comes after the receipt would have been started.
        await stack.merchant.wait_for(lambda w: w.json()["data"]["id"] == payment["id"])
        receipt = dev_env.client.get_workflow_handle(
            f"receipt-{event_id(payment['id'], 'payment.succeeded')}"
        )
        with pytest.raises(RPCError):
            await receipt.describe()
        assert mail.messages() == []

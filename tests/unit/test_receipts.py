"""The receipt email (paytide/receipts.py) and the local SMTP sink that receives it."""

from __future__ import annotations

import asyncio
import smtplib
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from paytide.receipts import compose
from paytide.smtp_sink import SmtpSink

pytestmark = pytest.mark.unit


def receipt(amount: int, currency: str, event_type: str = "payment.succeeded") -> str:
    message = compose(
        sender="shop@example.com",
        to="ana@example.com",
        event_type=event_type,
        payment_id="pay_1",
        amount_minor=amount,
        currency=currency,
        order_id="order <7>",
        event_id="evt_1",
    )
    plain = message.get_body(preferencelist=("plain",))
    rich = message.get_body(preferencelist=("html",))
    assert plain is not None and rich is not None
    return f"{message['Subject']}\n{plain.get_content()}\n{rich.get_content()}"


def test_amounts_follow_each_currency_exponent() -> None:
    """JPY has no decimals, USD two, BHD three: the receipt never shows 1500 JPY as 15.00."""
    assert "1500 JPY" in receipt(1500, "JPY")
    assert "15.00" not in receipt(1500, "JPY")
    assert "15.00 USD" in receipt(1500, "USD")
    assert "1.500 BHD" in receipt(1500, "BHD")


def test_refund_receipt_and_html_escaping() -> None:
    """A refund says so in its subject; merchant text is escaped in the HTML part."""
    text = receipt(500, "EUR", "refund.succeeded")
    assert text.startswith("Refund of 5.00 EUR")
    assert "order &lt;7&gt;" in text


async def test_sink_stores_what_smtplib_sends(tmp_path: Path) -> None:
    """A message sent with smtplib (dot-stuffed lines included) is stored as an .eml file that
    parses back to the same headers and text."""
    sink = SmtpSink(tmp_path)
    server = await sink.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    message = EmailMessage()
    message["From"] = "shop@example.com"
    message["To"] = "ana@example.com"
    message["Message-ID"] = "<evt_1@paytide.receipts>"
    # smtplib doubles a leading dot; the sink must undo it, and a lone "." must not end DATA.
    message.set_content("first\n.leading dot\n.\nlast\n")

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.send_message(message)

    async with server:
        await asyncio.to_thread(send)
        async with asyncio.timeout(5):
            while not sink.messages():
                await asyncio.sleep(0.05)
    stored = BytesParser(policy=policy.default).parsebytes(sink.messages()[0].read_bytes())
    assert stored["To"] == "ana@example.com"
    assert stored["Message-ID"] == message["Message-ID"]
    plain = stored.get_body(preferencelist=("plain",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n") == "first\n.leading dot\n.\nlast\n"

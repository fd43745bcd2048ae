"""The customer's receipt as an email: plain text and HTML, the amount in its currency's units."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from paytide.money import format_amount


def compose(
    *,
    sender: str,
    to: str,
    event_type: str,
    payment_id: str,
    amount_minor: int,
    currency: str,
    order_id: str = "",
    refund_id: str | None = None,
    event_id: str,
) -> EmailMessage:
    amount = format_amount(amount_minor, currency)
    refund = event_type == "refund.succeeded"
    subject = f"Refund of {amount}" if refund else f"Receipt for your payment of {amount}"
    lines = [
        "Your refund has been processed." if refund else "Thank you: your payment succeeded.",
        "",
        f"Amount: {amount}",
        f"Payment: {payment_id}",
    ]
    if order_id:
        lines.append(f"Order: {order_id}")
    if refund_id:
        lines.append(f"Refund: {refund_id}")
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(datetime.now(UTC))
    # The same event id on every retry: a mail system that saw it once can drop the copy.
    message["Message-ID"] = make_msgid(idstring=event_id, domain="paytide.receipts")
    message["X-Paytide-Event-Id"] = event_id
    message.set_content("\n".join(lines) + "\n")
    rows = "".join(
        f"<tr><th align='left'>{html.escape(key)}</th><td>{html.escape(value)}</td></tr>"
        for key, value in (line.split(": ", 1) for line in lines[2:])
    )
    message.add_alternative(
        f"<html><body><p>{html.escape(lines[0])}</p><table>{rows}</table></body></html>",
        subtype="html",
    )
    return message

"""Email receipts: the customer's address is unsealed from the ledger and the message goes out
over SMTP (standard library, in the activity's thread), with the configured TLS and login."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

from ledger.engine import SessionFactory, transaction
from ledger.models import Payment
from paytide.codec import KeyRing
from paytide.receipts import compose
from paytide.sealing import unseal
from paytide.settings import SmtpTls
from workflows.delivery_contract import ReceiptInput, ReceiptResult


@dataclass(frozen=True, kw_only=True)
class SmtpConfig:
    host: str
    port: int
    tls: SmtpTls
    username: str
    password: str | None
    timeout: float
    sender: str


class ReceiptActivities:
    def __init__(self, sessions: SessionFactory, ring: KeyRing, smtp: SmtpConfig | None) -> None:
        self._sessions = sessions
        self._ring = ring
        self._smtp = smtp

    def _address(self, payment_id: str) -> str | None:
        with transaction(self._sessions) as session:
            row = session.get(Payment, payment_id)
            if row is None or row.customer_email_sealed is None:
                return None
            return unseal(self._ring, row.customer_email_sealed, bound_to=payment_id)

    # Synchronous: the worker runs it on its activity thread pool, where smtplib may block.
    @activity.defn(name="send_receipt")
    def send_receipt(self, receipt: ReceiptInput) -> ReceiptResult:
        """Send the customer's receipt; skipped when no SMTP host or no address is known."""
        if self._smtp is None:
            return ReceiptResult(sent=False, skipped_reason="no_smtp_host")
        address = self._address(receipt.payment_id)
        if address is None:
            return ReceiptResult(sent=False, skipped_reason="no_customer_email")
        smtp = self._smtp
        message = compose(
            sender=smtp.sender,
            to=address,
            event_type=receipt.event_type,
            payment_id=receipt.payment_id,
            amount_minor=receipt.amount_minor,
            currency=receipt.currency,
            order_id=receipt.order_id,
            refund_id=receipt.refund_id,
            event_id=receipt.event_id,
        )
        try:
            if smtp.tls is SmtpTls.TLS:
                server: smtplib.SMTP = smtplib.SMTP_SSL(
                    smtp.host, smtp.port, timeout=smtp.timeout, context=ssl.create_default_context()
                )
            else:
                server = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
            with server:
                if smtp.tls is SmtpTls.STARTTLS:
                    server.starttls(context=ssl.create_default_context())
                if smtp.username:
                    server.login(smtp.username, smtp.password or "")
                server.send_message(message)
        except smtplib.SMTPRecipientsRefused:
            # The address itself is refused: no retry will change that. The error names no one.
            raise ApplicationError(
                "the SMTP server refused the customer's address",
                type="receipt_refused",
                non_retryable=True,
            ) from None
        except (smtplib.SMTPException, OSError) as error:
            # Retryable; the message is the error's class only, never an address.
            raise ApplicationError(
                f"SMTP delivery failed: {type(error).__name__}", type="smtp_failed"
            ) from None
        return ReceiptResult(sent=True)

"""`AdyenWebhookVerifier`: Basic auth, an HMAC on every item, and the mapping to `GatewayEvent`s.

Items are signed with the Adyen SDK's own helper (`Adyen.util.generate_notification_sig`), so the
verifier's signature code is checked against Adyen's, not against itself.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest
from Adyen.util import generate_notification_sig

from gateways.adyen import AdyenWebhookVerifier
from gateways.base import WebhookRejected
from workflows.contract import ChargeState, DisputeState, GatewayName, RefundState

USERNAME = "adyen-webhooks"
PASSWORD = "correct horse battery staple"
KEY = secrets.token_hex(32).upper()
OLD_KEY = secrets.token_hex(32).upper()

# Adyen's documented example (docs "Verify HMAC signatures", SDK test UtilTest.py).
DOCUMENTED_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
DOCUMENTED_SIGNATURE = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="


def auth(username: str = USERNAME, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def item(
    event_code: str = "AUTHORISATION",
    *,
    success: bool = True,
    psp: str = "8816178952380553",
    reference: str = "pay_0123456789",
    value: int = 4200,
    original: str | None = None,
    reason: str = "",
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "amount": {"value": value, "currency": "EUR"},
        "eventCode": event_code,
        "eventDate": "2026-03-01T12:00:00+01:00",
        "merchantAccountCode": "PaytideECOM",
        "merchantReference": reference,
        "paymentMethod": "visa",
        "pspReference": psp,
        "reason": reason,
        "success": "true" if success else "false",
    }
    if original is not None:
        fields["originalReference"] = original
    return fields


def signed(fields: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    signature = generate_notification_sig(fields, key).decode()
    return {**fields, "additionalData": {"hmacSignature": signature}}


def body(*items: dict[str, Any]) -> bytes:
    wrapped = [{"NotificationRequestItem": i} for i in items]
    return json.dumps({"live": "false", "notificationItems": wrapped}).encode()


@pytest.fixture
def verifier() -> AdyenWebhookVerifier:
    return AdyenWebhookVerifier([KEY], USERNAME, PASSWORD)


def rejected(verifier: AdyenWebhookVerifier, headers: dict[str, str], raw: bytes) -> str:
    with pytest.raises(WebhookRejected) as error:
        verifier.verify(headers, raw)
    return error.value.reason


def test_documented_example_is_accepted() -> None:
    """Adyen's own signed example verifies, so our signing string matches Adyen's."""
    fields = {
        "pspReference": "7914073381342284",
        "merchantReference": "TestPayment-1407325143704",
        "merchantAccountCode": "TestMerchant",
        "amount": {"currency": "EUR", "value": 1130},
        "eventCode": "AUTHORISATION",
        "success": "true",
        "additionalData": {"hmacSignature": DOCUMENTED_SIGNATURE},
    }
    verifier = AdyenWebhookVerifier([DOCUMENTED_KEY], USERNAME, PASSWORD)
    [event] = verifier.verify(auth(), body(fields))
    assert (event.gateway_reference, event.amount_minor, event.currency) == (
        "7914073381342284",
        1130,
        "EUR",
    )


def test_valid_authorisation_becomes_an_authorized_event(verifier: AdyenWebhookVerifier) -> None:
    """A signed AUTHORISATION success=true is an AUTHORIZED event carrying the payment's ids."""
    [event] = verifier.verify(auth(), body(signed(item())))
    assert event.provider is GatewayName.ADYEN
    assert event.state is ChargeState.AUTHORIZED
    assert event.event_type == "AUTHORISATION"
    assert event.gateway_reference == "8816178952380553"
    assert event.payment_id == "pay_0123456789"
    assert (event.amount_minor, event.currency) == (4200, "EUR")
    assert event.failure is None


def test_headers_are_read_case_insensitively(verifier: AdyenWebhookVerifier) -> None:
    """A lower-case ``authorization`` header (as ASGI servers give it) is accepted."""
    headers = {"authorization": auth()["Authorization"]}
    assert len(verifier.verify(headers, body(signed(item())))) == 1


def test_wrong_key_is_rejected(verifier: AdyenWebhookVerifier) -> None:
    """An item signed with a key we do not hold is rejected as bad_signature."""
    forged = signed(item(), key=secrets.token_hex(32))
    assert rejected(verifier, auth(), body(forged)) == "bad_signature"


def test_tampered_amount_is_rejected(verifier: AdyenWebhookVerifier) -> None:
    """Changing the amount after signing breaks the signature."""
    tampered = signed(item(value=4200))
    tampered["amount"] = {"value": 1, "currency": "EUR"}
    assert rejected(verifier, auth(), body(tampered)) == "bad_signature"


def test_rotated_keys_accept_old_and_new() -> None:
    """During rotation, items signed with the old key and with the new key both verify."""
    verifier = AdyenWebhookVerifier([KEY, OLD_KEY], USERNAME, PASSWORD)
    old = signed(item(psp="1111111111111111"), key=OLD_KEY)
    new = signed(item(psp="2222222222222222"), key=KEY)
    events = verifier.verify(auth(), body(old, new))
    assert [e.gateway_reference for e in events] == ["1111111111111111", "2222222222222222"]


def test_a_forged_second_item_rejects_the_whole_batch(verifier: AdyenWebhookVerifier) -> None:
    """Every item is checked, not just the first: one forged item rejects the request."""
    genuine = signed(item(psp="1111111111111111"))
    forged = signed(item(psp="2222222222222222"), key=secrets.token_hex(32))
    assert rejected(verifier, auth(), body(genuine, forged)) == "bad_signature"


def test_an_unsigned_item_is_rejected(verifier: AdyenWebhookVerifier) -> None:
    """An item without additionalData.hmacSignature is rejected, even next to a signed one."""
    assert rejected(verifier, auth(), body(signed(item()), item())) == "missing_signature"


def test_missing_basic_auth_is_rejected_before_anything_else(
    verifier: AdyenWebhookVerifier,
) -> None:
    """Without Authorization the request is rejected before the body is even parsed."""
    assert rejected(verifier, {}, b"not json at all") == "missing_auth"
    assert rejected(verifier, {}, body(signed(item()))) == "missing_auth"


@pytest.mark.parametrize(
    "headers",
    [
        auth(password="wrong"),
        auth(username="someone-else"),
        {"Authorization": "Bearer " + base64.b64encode(b"adyen-webhooks:x").decode()},
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    ],
    ids=["wrong-password", "wrong-username", "not-basic", "not-base64", "no-colon"],
)
def test_wrong_basic_auth_is_rejected(
    verifier: AdyenWebhookVerifier, headers: dict[str, str]
) -> None:
    """Wrong or malformed credentials are rejected as bad_auth, however well signed the body."""
    assert rejected(verifier, headers, body(signed(item()))) == "bad_auth"


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"{}",
        b'{"notificationItems": []}',
        b'{"notificationItems": [{"x": 1}]}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"notificationItems": ' + b"9" * 5000 + b"}",
    ],
    ids=["not-json", "no-items", "empty-items", "no-request-item", "deep", "long-number"],
)
def test_malformed_body_is_rejected(verifier: AdyenWebhookVerifier, raw: bytes) -> None:
    """A body that is not a standard notification is rejected as malformed_payload."""
    assert rejected(verifier, auth(), raw) == "malformed_payload"


def test_refused_authorisation_is_declined_with_the_reason(
    verifier: AdyenWebhookVerifier,
) -> None:
    """AUTHORISATION success=false is DECLINED, non-retryable, with Adyen's reason."""
    [event] = verifier.verify(auth(), body(signed(item(success=False, reason="CVC Declined"))))
    assert event.state is ChargeState.DECLINED
    assert event.failure is not None
    assert (event.failure.code, event.failure.message) == ("refused", "CVC Declined")
    assert event.failure.retryable is False


def test_cancellation_is_canceled_under_the_payments_reference(
    verifier: AdyenWebhookVerifier,
) -> None:
    """CANCELLATION success=true is CANCELED and points at the payment (originalReference)."""
    cancellation = item("CANCELLATION", psp="9999999999999999", original="8816178952380553")
    [event] = verifier.verify(auth(), body(signed(cancellation)))
    assert event.state is ChargeState.CANCELED
    assert event.gateway_reference == "8816178952380553"
    assert event.payment_id == "pay_0123456789"
    assert event.amount_minor is None


def test_failed_cancellation_is_no_event(verifier: AdyenWebhookVerifier) -> None:
    """CANCELLATION success=false changes nothing about the payment: no event."""
    failed = item("CANCELLATION", success=False, original="8816178952380553")
    assert verifier.verify(auth(), body(signed(failed))) == []


@pytest.mark.parametrize("event_code", ["REPORT_AVAILABLE", "AUTORESCUE"])
def test_other_event_codes_are_acknowledged_without_events(
    verifier: AdyenWebhookVerifier, event_code: str
) -> None:
    """Codes paytide does not handle verify but yield no event."""
    assert verifier.verify(auth(), body(signed(item(event_code)))) == []


@pytest.mark.parametrize(
    ("event_code", "success", "state"),
    [
        ("REFUND", True, RefundState.SUCCEEDED),
        ("REFUND", False, RefundState.FAILED),
        ("REFUND_FAILED", True, RefundState.FAILED),
    ],
)
def test_refund_notifications_are_refund_events(
    verifier: AdyenWebhookVerifier, event_code: str, success: bool, state: RefundState
) -> None:
    """REFUND names our refund id (merchantReference), the refund's own pspReference and the
    payment (originalReference); success=false or REFUND_FAILED is a failed refund with Adyen's
    reason."""
    refund = item(
        event_code,
        success=success,
        psp="refund_psp_1",
        reference="ref_unit_1",
        original="8816178952380553",
        value=1500,
        reason="" if state is RefundState.SUCCEEDED else "Insufficient balance",
    )
    [event] = verifier.verify(auth(), body(signed(refund)))
    assert event.refund is not None
    assert (event.refund.state, event.refund.refund_id, event.refund.refund_reference) == (
        state,
        "ref_unit_1",
        "refund_psp_1",
    )
    assert (event.refund.amount_minor, event.gateway_reference) == (1500, "8816178952380553")
    if state is RefundState.FAILED:
        assert event.refund.failure is not None
        assert event.refund.failure.message == "Insufficient balance"
    else:
        assert event.refund.failure is None


@pytest.mark.parametrize(
    ("event_code", "state"),
    [
        ("NOTIFICATION_OF_CHARGEBACK", DisputeState.NEEDS_RESPONSE),
        ("CHARGEBACK", DisputeState.LOST),
        ("SECOND_CHARGEBACK", DisputeState.LOST),
        ("CHARGEBACK_REVERSED", DisputeState.WON),
    ],
)
def test_chargeback_notifications_are_dispute_events(
    verifier: AdyenWebhookVerifier, event_code: str, state: DisputeState
) -> None:
    """Every chargeback notification is keyed by the disputed payment (originalReference), so
    the dispute's notifications reach one workflow; the defence deadline is the due date."""
    fields = item(event_code, psp="dispute_psp_1", original="8816178952380553", reason="Fraud")
    fields["additionalData"] = {"defensePeriodEndsAt": "2026-03-20T12:00:00+01:00"}
    signature = generate_notification_sig(fields, KEY).decode()
    fields["additionalData"]["hmacSignature"] = signature
    [event] = verifier.verify(auth(), body(fields))
    assert event.dispute is not None
    assert (event.dispute.dispute_reference, event.dispute.state) == ("8816178952380553", state)
    assert (event.dispute.reason, event.dispute.amount_minor) == ("Fraud", 4200)
    assert event.dispute.evidence_due_by == "2026-03-20T12:00:00+01:00"
    assert event.gateway_reference == "8816178952380553"


def test_capture_is_an_event_about_the_original_payment(verifier: AdyenWebhookVerifier) -> None:
    """CAPTURE success settles the payment named by originalReference with its amount as the
    captured amount; CAPTURE_FAILED declines and captures nothing."""
    [captured] = verifier.verify(
        auth(), body(signed(item("CAPTURE", psp="cap_1", original="8816178952380553")))
    )
    assert captured.state is ChargeState.SUCCEEDED
    assert captured.gateway_reference == "8816178952380553"
    assert captured.amount_minor == 4200
    assert captured.amount_captured == 4200
    [partial] = verifier.verify(
        auth(), body(signed(item("CAPTURE", psp="cap_3", original="8816178952380553", value=300)))
    )
    assert partial.amount_captured == 300  # the modification's amount: what was captured
    [failed] = verifier.verify(
        auth(), body(signed(item("CAPTURE_FAILED", psp="cap_2", original="8816178952380553")))
    )
    assert failed.state is ChargeState.DECLINED
    assert failed.amount_captured is None
    assert failed.failure is not None and failed.failure.code == "capture_failed"


def test_event_id_is_stable_across_redeliveries(verifier: AdyenWebhookVerifier) -> None:
    """A re-delivered item has the same event id; a different outcome has another."""
    first = item()
    again = {**item(), "eventDate": "2026-03-01T12:05:00+01:00"}
    refused = item(success=False)
    [a] = verifier.verify(auth(), body(signed(first)))
    [b] = verifier.verify(auth(), body(signed(again)))
    [c] = verifier.verify(auth(), body(signed(refused)))
    assert a.event_id == b.event_id == "8816178952380553:AUTHORISATION:true"
    assert c.event_id != a.event_id


def test_configuration_errors_are_caught_at_construction() -> None:
    """No keys, a non-hex key or missing credentials fail when the verifier is built."""
    with pytest.raises(ValueError, match="at least one HMAC key"):
        AdyenWebhookVerifier([], USERNAME, PASSWORD)
    with pytest.raises(ValueError, match="hexadecimal"):
        AdyenWebhookVerifier(["not-hex"], USERNAME, PASSWORD)
    with pytest.raises(ValueError, match="Basic auth"):
        AdyenWebhookVerifier([KEY], USERNAME, "")

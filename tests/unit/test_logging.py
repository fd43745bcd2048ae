"""Logging: JSON lines on stderr, credentials and card numbers redacted, stdlib records included."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from temporalio import activity, workflow

from paytide.logging import REDACTED, configure_logging, get_logger
from paytide.settings import Settings

pytestmark = pytest.mark.unit


def _is_pytest_handler(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("_pytest")


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """Whatever a test does to logging, the previous set-up is put back after it."""
    root = logging.getLogger()
    saved_handlers = [h for h in root.handlers if not _is_pytest_handler(h)]
    saved_levels = {name: logging.getLogger(name).level for name in ("", "uvicorn.access", "httpx")}
    saved_structlog = structlog.get_config()
    saved_flags = (
        workflow.logger.workflow_info_on_message,
        activity.logger.activity_info_on_message,
    )
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if not _is_pytest_handler(handler) and handler not in saved_handlers:
                root.removeHandler(handler)
        for handler in saved_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        structlog.configure(**saved_structlog)
        workflow.logger.workflow_info_on_message = saved_flags[0]
        activity.logger.activity_info_on_message = saved_flags[1]


def log_json_to_stderr() -> None:
    """Configure logging as a paytide process without a terminal does."""
    # Called in the test body: pytest swaps sys.stderr between setup and call, and the handler
    # keeps the stream it was given.
    configure_logging(Settings(log_format="json"))


def emitted(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """Every line written to stderr so far, each parsed as one JSON object."""
    lines = capsys.readouterr().err.splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]


def only(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    (event,) = emitted(capsys)
    return event


def test_secret_named_field_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """A field whose name says credential (api_key) is replaced, whatever its value."""
    log_json_to_stderr()
    get_logger("test").info("gateway_configured", api_key="sk_live_abc")
    event = only(capsys)
    assert event["api_key"] == REDACTED
    assert "sk_live_abc" not in json.dumps(event)


def test_bearer_token_in_a_value_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """A Bearer token inside an ordinary field's value is cut out, the rest of the text kept."""
    log_json_to_stderr()
    get_logger("test").info("request_sent", header_dump="sent Bearer xyz to the gateway")
    event = only(capsys)
    assert event["header_dump"] == f"sent {REDACTED} to the gateway"


def test_webhook_secret_in_the_message_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """A whsec_ signing secret written into the event text itself is cut out."""
    log_json_to_stderr()
    get_logger("test").info("rotated secret to whsec_5f8e9aB0c1 today")
    event = only(capsys)
    assert event["event"] == f"rotated secret to {REDACTED} today"


@pytest.mark.parametrize("card", ["4242424242424242", "4242 4242 4242 4242", "4242-4242-4242-4242"])
def test_card_number_in_the_message_is_redacted(
    capsys: pytest.CaptureFixture[str], card: str
) -> None:
    """A 16-digit card number, plain or grouped, never reaches the log."""
    log_json_to_stderr()
    get_logger("test").info(f"merchant sent card {card} instead of a token")
    event = only(capsys)
    assert event["event"] == f"merchant sent card {REDACTED} instead of a token"


def test_secrets_nested_in_a_dict_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """Credential-named keys and credential-shaped values inside a dict field are redacted."""
    log_json_to_stderr()
    get_logger("test").info(
        "gateway_called", request={"client_secret": "pi_1_secret_2", "note": "key sk_test_42"}
    )
    event = only(capsys)
    assert event["request"] == {"client_secret": REDACTED, "note": f"key {REDACTED}"}


def test_ordinary_fields_survive(capsys: pytest.CaptureFixture[str]) -> None:
    """Fields that are not credentials pass through unchanged, with level, logger and time."""
    log_json_to_stderr()
    get_logger("paytide.test").info(
        "payment_authorized", payment_id="pay_abc", amount_minor=4200, currency="USD"
    )
    event = only(capsys)
    assert event["event"] == "payment_authorized"
    assert event["payment_id"] == "pay_abc"
    assert event["amount_minor"] == 4200
    assert event["currency"] == "USD"
    assert event["level"] == "info"
    assert event["logger"] == "paytide.test"
    assert event["timestamp"].endswith("Z")


def test_bound_context_is_merged(capsys: pytest.CaptureFixture[str]) -> None:
    """Context bound with bind_contextvars appears on every event until cleared."""
    log_json_to_stderr()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id="req_1")
    try:
        get_logger("test").info("payment_read")
    finally:
        structlog.contextvars.clear_contextvars()
    assert only(capsys)["request_id"] == "req_1"


def test_stdlib_record_is_a_json_line_with_its_extras(capsys: pytest.CaptureFixture[str]) -> None:
    """A plain logging call comes out as JSON carrying its extra fields, and is redacted too."""
    log_json_to_stderr()
    logging.getLogger("x").info("charge retried with Bearer abc.def", extra={"payment_id": "pay_1"})
    event = only(capsys)
    assert event["payment_id"] == "pay_1"
    assert event["logger"] == "x"
    assert event["level"] == "info"
    assert event["event"] == f"charge retried with {REDACTED}"


def test_level_filter_applies(capsys: pytest.CaptureFixture[str]) -> None:
    """At the default INFO level, debug records are dropped."""
    log_json_to_stderr()
    logging.getLogger("x").debug("noise")
    get_logger("test").debug("noise")
    get_logger("test").info("kept")
    assert [event["event"] for event in emitted(capsys)] == ["kept"]


def test_paytide_api_key_is_redacted_and_its_prefix_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A full paytide key in any field or message is cut out; its public prefix is not."""
    log_json_to_stderr()
    key = "pt_live_0123456789ab_" + "9f" * 32
    get_logger("test").info(
        f"merchant pasted {key} into a ticket",
        note=f"header was {key}",
        key_prefix="pt_live_0123456789ab",
        authorization=f"Bearer {key}",
    )
    event = only(capsys)
    assert "9f" * 32 not in json.dumps(event)
    assert event["event"] == f"merchant pasted {REDACTED} into a ticket"
    assert event["note"] == f"header was {REDACTED}"
    assert event["authorization"] == REDACTED
    assert event["key_prefix"] == "pt_live_0123456789ab"

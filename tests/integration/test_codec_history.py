"""Payments are ciphertext in Temporal's history, and the API's codec endpoint reads them back."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import History, HistoryEvent
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.idempotency import workflow_id
from paytide.codec import ENCODING, KEY_ID_METADATA, EncryptionCodec, data_converter, parse_keys
from paytide.search_attributes import customer_search_value
from tests.integration.stack import Stack, running_stack

KEYS = (
    "it-2:" + base64.b64encode(b"I" * 32).decode() + ",it-1:" + base64.b64encode(b"J" * 32).decode()
)
UI_ORIGIN = "http://localhost:8233"
TOKEN = "codec-token-for-tests"
MARK = uuid.uuid4().hex[:10]
CUSTOMER = f"cus_codec_{MARK}"
ORDER = f"order_codec_{MARK}"
TOKEN_PM = f"pm_codec_{MARK}"
METADATA_VALUE = f"meta_codec_{MARK}"
SECRETS = (CUSTOMER, ORDER, TOKEN_PM, METADATA_VALUE)


async def _connect(dev_env: WorkflowEnvironment, *, encrypted: bool) -> Client:
    codec = EncryptionCodec(parse_keys(KEYS)) if encrypted else None
    return await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace,
        data_converter=data_converter(codec),
    )


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, sqlite_url: str) -> AsyncIterator[Stack]:
    client = await _connect(dev_env, encrypted=True)
    async with running_stack(client, sqlite_url, payload_keys=KEYS) as running:
        yield running


def _attributes(event: HistoryEvent) -> Message:
    name = event.WhichOneof("attributes")
    assert name is not None
    attributes: Message = getattr(event, name)
    return attributes


def _without_search_attributes(history: History) -> History:
    """A copy with every search-attribute field cleared: those are indexed, so never encrypted."""
    stripped = History()
    stripped.CopyFrom(history)
    for event in stripped.events:
        attributes = _attributes(event)
        if "search_attributes" in attributes.DESCRIPTOR.fields_by_name:
            attributes.ClearField("search_attributes")
    return stripped


def _without_sdk_bookkeeping(history: History) -> History:
    """A copy without the SDK's own marker records, which Core writes unencoded and which hold
    no payment data: a local activity's bookkeeping (sequence number, attempt, activity type,
    times) and a ``workflow.patched`` marker's patch id. A local activity's result, its return
    value, stays and must be ciphertext."""
    stripped = History()
    stripped.CopyFrom(history)
    for event in stripped.events:
        marker = event.marker_recorded_event_attributes
        if not event.HasField("marker_recorded_event_attributes"):
            continue
        if marker.marker_name == "core_local_activity":
            del marker.details["data"]
        elif marker.marker_name == "core_patch":
            del marker.details["patch-data"]
    return stripped


def _payloads(message: Message) -> Iterator[Payload]:
    """Every Payload inside ``message``, at any depth (inputs, results, headers, memo, failures)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            entries = value.values()
            if field.message_type.fields_by_name["value"].message_type is None:
                continue
            for entry in entries:
                yield from _payloads(entry)
        elif field.is_repeated:
            for item in value:
                yield from _payloads(item)
        else:
            yield from _payloads(value)


async def _paid_history(stack: Stack, dev_env: WorkflowEnvironment) -> History:
    key = uuid.uuid4().hex
    created = await stack.pay(
        key,
        amount=4242,
        customer_id=CUSTOMER,
        order_id=ORDER,
        payment_method=TOKEN_PM,
        metadata={"note": METADATA_VALUE},
    )
    assert created.status_code == 201, created.text
    assert (await stack.wait_final(created.json()["id"]))["status"] == "succeeded"
    plain = await _connect(dev_env, encrypted=False)
    handle = plain.get_workflow_handle(workflow_id(stack.settings.default_merchant, key))
    fetched = await handle.fetch_history()
    return History(events=fetched.events)


async def _post(stack: Stack, path: str, payloads: list[Payload], **headers: str) -> Any:
    body = {"payloads": [json_format.MessageToDict(payload) for payload in payloads]}
    return await stack.api.post(path, json=body, headers=headers)


def _from_json(answer: Any) -> list[Payload]:
    return [json_format.ParseDict(item, Payload()) for item in answer["payloads"]]


async def test_payment_data_is_ciphertext_in_history(
    stack: Stack, dev_env: WorkflowEnvironment
) -> None:
    """Customer, order, token and metadata appear nowhere in history outside search attributes."""
    history = await _paid_history(stack, dev_env)
    stripped = _without_search_attributes(history)
    payloads = list(_payloads(_without_sdk_bookkeeping(stripped)))
    kinds = {event.WhichOneof("attributes") for event in history.events}
    assert "activity_task_completed_event_attributes" in kinds
    assert "workflow_execution_signaled_event_attributes" in kinds
    assert "workflow_execution_update_accepted_event_attributes" in kinds
    assert len(payloads) > 10
    for payload in payloads:
        assert payload.metadata["encoding"] == ENCODING, payload
        assert payload.metadata[KEY_ID_METADATA] == b"it-2"
    raw = stripped.SerializeToString()
    text = json_format.MessageToJson(stripped)
    for secret in SECRETS:
        assert secret.encode() not in raw, secret
        assert secret not in text, secret


async def test_codec_endpoint_decodes_history_payloads(
    stack: Stack, dev_env: WorkflowEnvironment
) -> None:
    """POST /codec/decode turns the started event's ciphertext back into the payment's fields."""
    history = await _paid_history(stack, dev_env)
    started = history.events[0].workflow_execution_started_event_attributes
    response = await _post(
        stack,
        "/codec/decode",
        list(started.input.payloads),
        Origin=UI_ORIGIN,
        **{"X-Namespace": stack.settings.temporal_namespace},
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == UI_ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    [decoded] = _from_json(response.json())
    assert decoded.metadata["encoding"] == b"json/plain"
    clear = decoded.data.decode()
    for secret in SECRETS:
        assert secret in clear, secret
    assert json.loads(clear)["request"]["amount_minor"] == 4242


async def test_codec_endpoint_encode_round_trip(stack: Stack) -> None:
    """/codec/encode seals with the current key id; /codec/decode gives the same payload back."""
    plain = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(CUSTOMER).encode())
    encoded = await _post(stack, "/codec/encode", [plain])
    assert encoded.status_code == 200, encoded.text
    [sealed] = _from_json(encoded.json())
    assert sealed.metadata[KEY_ID_METADATA] == b"it-2"
    assert CUSTOMER.encode() not in sealed.data
    decoded = await _post(stack, "/codec/decode", [sealed])
    assert _from_json(decoded.json()) == [plain]
    nothings: list[dict[str, Any]] = [{"payloads": []}, {}]
    for nothing in nothings:  # proto3 JSON may leave an empty list out
        empty = await stack.api.post("/codec/encode", json=nothing)
        assert empty.json() == {"payloads": []}


async def test_codec_endpoint_rejects_bad_input_with_the_error_shape(stack: Stack) -> None:
    """Malformed bodies, foreign namespaces and undecodable payloads answer in the error shape."""
    cases: list[tuple[Any, dict[str, str], int, str]] = [
        ([], {}, 400, "invalid_payloads"),
        ({"payloads": {}}, {}, 400, "invalid_payloads"),
        ({"payloads": [{"data": "not base64!"}]}, {}, 400, "invalid_payloads"),
        ({"payloads": []}, {"X-Namespace": "someone-else"}, 403, "wrong_namespace"),
        (
            {
                "payloads": [
                    {
                        "metadata": {
                            "encoding": "YmluYXJ5L2VuY3J5cHRlZA==",
                            "encryption-key-id": "Z29uZQ==",
                        },
                        "data": "AAAA",
                    }
                ]
            },
            {},
            400,
            "payload_undecodable",
        ),
    ]
    for body, headers, status, code in cases:
        response = await stack.api.post("/codec/decode", json=body, headers=headers)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code
        assert set(error) == {"code", "message", "details"}
    unknown = (await stack.api.post("/codec/decode", json=cases[4][0])).json()["error"]
    assert "'gone'" in unknown["message"]
    garbage = await stack.api.post("/codec/decode", content=b"{", headers={"Origin": UI_ORIGIN})
    assert garbage.status_code == 400
    assert garbage.headers["access-control-allow-origin"] == UI_ORIGIN


async def test_cors_preflight_answers_the_ui_and_refuses_other_origins(stack: Stack) -> None:
    """OPTIONS from the Web UI's origin is allowed with credentials; another origin is refused."""
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    allowed = await stack.api.options("/codec/decode", headers={"Origin": UI_ORIGIN, **preflight})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == UI_ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    allowed_headers = allowed.headers["access-control-allow-headers"].lower()
    for header in ("content-type", "x-namespace", "authorization"):
        assert header in allowed_headers
    assert "POST" in allowed.headers["access-control-allow-methods"]

    for method in ("options", "post"):
        refused = await stack.api.request(
            method.upper(),
            "/codec/encode",
            headers={"Origin": "https://evil.example", **preflight},
            json={"payloads": []},
        )
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        assert refused.json()["error"]["code"] == "origin_not_allowed"


async def test_codec_token_is_required_when_configured(
    dev_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    """With PAYTIDE_CODEC_AUTH_TOKEN set, a missing or wrong bearer token is 401; the right one
    decodes, and the preflight (which carries no credentials) still answers."""
    async with running_stack(
        dev_env.client, sqlite_url, in_process_worker=False, codec_auth_token=TOKEN
    ) as stack:
        body: dict[str, list[Any]] = {"payloads": []}
        missing = await stack.api.post("/codec/decode", json=body, headers={"Origin": UI_ORIGIN})
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.headers["access-control-allow-origin"] == UI_ORIGIN
        wrong = await stack.api.post(
            "/codec/decode", json=body, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        right = await stack.api.post(
            "/codec/decode", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert right.status_code == 200
        preflight = await stack.api.options(
            "/codec/decode",
            headers={"Origin": UI_ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204


async def test_search_attributes_hold_no_customer_id(
    stack: Stack, dev_env: WorkflowEnvironment
) -> None:
    """The whole history, search attributes included, names the customer only by keyed hash."""
    history = await _paid_history(stack, dev_env)
    raw = history.SerializeToString()
    for secret in SECRETS:
        assert secret.encode() not in raw, secret
    expected = customer_search_value(
        CUSTOMER, stack.settings.search_hash_key.get_secret_value()
    ).encode()
    assert expected in raw

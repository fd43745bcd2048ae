"""API keys over real HTTP, on SQLite and PostgreSQL: who may call, whose payments they see, and
how fast they may call. The keys are made in the ledger the way `paytide merchants` makes them."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, func
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.key_cache import KeyCache
from api.state import ApiState
from gateways.signing import sign
from ledger import merchants
from ledger.engine import create_ledger_engine, session_factory, transaction
from ledger.models import Payment
from paytide.api_keys import KeyMode
from paytide.settings import Settings
from tests.integration.stack import Stack, bearer, issue_api_key, running_stack
from tests.support.serve import serve

# Short, so revocation shows within a test; the default (5 s) is documented in docs/security.md.
CACHE_SECONDS = 0.5
OTHER_MERCHANT = "mer-other"


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(
        dev_env.client, database_url, api_key_cache_seconds=CACHE_SECONDS
    ) as running:
        yield running


def code_of(response: httpx.Response, status: int) -> str:
    """The error code of a standard error response with ``status``."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    return str(error["code"])


async def as_key(stack: Stack, api_key: str | None, method: str, path: str) -> httpx.Response:
    headers = bearer(api_key) if api_key else {}
    async with httpx.AsyncClient(
        base_url=stack.settings.effective_api_url, headers=headers, timeout=30
    ) as client:
        return await client.request(method, path)


async def until_refused(stack: Stack, api_key: str, within: float = 15) -> httpx.Response:
    """Poll with ``api_key`` until the API refuses it (the key cache may serve it a moment)."""
    async with asyncio.timeout(within):
        while True:
            answer = await as_key(stack, api_key, "GET", "/payments")
            if answer.status_code != 200:
                return answer
            await asyncio.sleep(0.1)


# ---- 401 ----------------------------------------------------------------------------------


async def test_missing_key_is_401_missing_api_key(stack: Stack) -> None:
    """No Authorization header: 401 missing_api_key with a Bearer challenge, on every route."""
    for method, path in [
        ("GET", "/payments"),
        ("POST", "/payments"),
        ("GET", "/payments/pay_x"),
        ("POST", "/payments/pay_x/cancel"),
        ("POST", "/payments/pay_x/capture"),
        ("POST", "/payments/pay_x/review"),
        ("GET", "/reviews"),
    ]:
        answer = await as_key(stack, None, method, path)
        assert code_of(answer, 401) == "missing_api_key", (method, path)
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_bad_keys_are_401_invalid_api_key(stack: Stack) -> None:
    """Wrong scheme, junk, an unknown key id, or a real key id with a wrong secret: 401."""
    real = stack.api_key
    prefix, _, secret = real.rpartition("_")
    wrong_secret = f"{prefix}_{'0' * 64 if secret != '0' * 64 else '1' * 64}"
    unknown_id = f"pt_test_ffffffffffff_{secret}"
    async with httpx.AsyncClient(base_url=stack.settings.effective_api_url) as client:
        for header in [
            f"Basic {real}",
            "Bearer",
            "Bearer not-a-key",
            f"Bearer {real}x",
            f"Bearer {unknown_id}",
            f"Bearer {wrong_secret}",
        ]:
            answer = await client.get("/payments", headers={"Authorization": header})
            assert code_of(answer, 401) == "invalid_api_key", header
        # Scheme names are case-insensitive (RFC 7235); the real key still works.
        ok = await client.get("/payments", headers={"Authorization": f"bearer {real}"})
        assert ok.status_code == 200, ok.text


async def test_revoked_key_is_401_api_key_revoked(stack: Stack) -> None:
    """A revoked key is refused with api_key_revoked once the key cache's short bound passes."""
    api_key = issue_api_key(stack.engine, OTHER_MERCHANT)
    assert (await as_key(stack, api_key, "GET", "/payments")).status_code == 200
    with transaction(session_factory(stack.engine)) as session:
        merchants.revoke_key(session, api_key.rpartition("_")[0])
    assert code_of(await until_refused(stack, api_key), 401) == "api_key_revoked"
    assert (await stack.api.get("/payments")).status_code == 200


async def test_rotated_key_works_during_the_overlap_then_is_401_api_key_expired(
    stack: Stack,
) -> None:
    """Rotation: old and new keys both work during the overlap; after it the old one is
    refused with api_key_expired and the new one keeps working."""
    old_key = issue_api_key(stack.engine, OTHER_MERCHANT)
    with transaction(session_factory(stack.engine)) as session:
        _, issued = merchants.rotate_key(
            session, old_key.rpartition("_")[0], overlap=timedelta(hours=1), mode=KeyMode.TEST
        )
    new_key = issued.text
    await asyncio.sleep(CACHE_SECONDS)
    for key in (old_key, new_key):
        assert (await as_key(stack, key, "GET", "/payments")).status_code == 200

    with transaction(session_factory(stack.engine)) as session:
        merchants.rotate_key(
            session, old_key.rpartition("_")[0], overlap=timedelta(0), mode=KeyMode.TEST
        )
    assert code_of(await until_refused(stack, old_key), 401) == "api_key_expired"
    assert (await as_key(stack, new_key, "GET", "/payments")).status_code == 200


async def test_public_endpoints_need_no_key(stack: Stack) -> None:
    """Probes answer without a key; a webhook is judged by its gateway signature, not a key."""
    assert (await as_key(stack, None, "GET", "/healthz")).status_code == 200
    assert (await as_key(stack, None, "GET", "/readyz")).json().keys() == {"ready"}
    async with httpx.AsyncClient(base_url=stack.settings.effective_api_url) as client:
        unsigned = await client.post("/webhooks/sandbox", content=b"{}")
    assert code_of(unsigned, 400) == "missing_signature"


async def until_ready(stack: Stack, within: float = 15) -> None:
    """Wait for /readyz to answer 200 (the worker's first poll may not be seen yet)."""
    async with asyncio.timeout(within):
        while (await stack.operator.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.2)


async def test_readyz_tells_anonymous_callers_and_merchants_only_its_status(stack: Stack) -> None:
    """Without a key, or with a merchant's key, /readyz is {"ready": true} alone: no Temporal
    address, sandbox URL, task queue, poller or gateway name."""
    await until_ready(stack)
    temporal_host, _, temporal_port = stack.settings.temporal_address.rpartition(":")
    sandbox_port = stack.settings.effective_sandbox_url.rpartition(":")[2]
    for api_key in (None, stack.api_key):
        answer = await as_key(stack, api_key, "GET", "/readyz")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"ready": True}
        for secret in (
            temporal_port,
            sandbox_port,
            stack.settings.temporal_task_queue,
            "poller",
            "sandbox",
            "stripe",
            "adyen",
        ):
            assert secret not in answer.text, secret
        assert temporal_host not in answer.text


async def test_readyz_details_need_an_operator_key_and_a_wrong_key_is_401(stack: Stack) -> None:
    """An operator's key gets each part's detail and the gateways; a wrong key sent to /readyz
    is refused like anywhere else."""
    await until_ready(stack)
    answer = await stack.operator.get("/readyz")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ready"] is True
    assert stack.settings.temporal_address in body["parts"]["temporal"]["detail"]
    assert body["parts"]["gateway_sandbox"]["detail"].endswith(stack.settings.effective_sandbox_url)
    assert body["gateways"]["sandbox"] == "available"
    wrong = await as_key(stack, _junk_key(1), "GET", "/readyz")
    assert code_of(wrong, 401) == "invalid_api_key"


# ---- isolation ----------------------------------------------------------------------------


async def test_other_merchant_cannot_read_cancel_capture_or_list_a_payment(stack: Stack) -> None:
    """Merchant B gets 404 for A's payment on read, cancel and capture, and never lists it;
    A's payment is untouched afterwards."""
    created = await stack.pay(capture="manual")
    assert created.status_code == 201, created.text
    payment = created.json()
    async with asyncio.timeout(30):
        while payment["status"] != "authorized":
            await asyncio.sleep(0.1)
            payment = (await stack.api.get(f"/payments/{payment['id']}")).json()
    other = issue_api_key(stack.engine, OTHER_MERCHANT)
    async with httpx.AsyncClient(
        base_url=stack.settings.effective_api_url, headers=bearer(other), timeout=30
    ) as b:
        assert code_of(await b.get(f"/payments/{payment['id']}"), 404) == "payment_not_found"
        for action in ("cancel", "capture"):
            answer = await b.post(f"/payments/{payment['id']}/{action}")
            assert code_of(answer, 404) == "payment_not_found", action
        listed = (await b.get("/payments", params={"customer_id": payment["customer_id"]})).json()
        assert listed["data"] == []
    mine = await stack.api.get(f"/payments/{payment['id']}")
    assert mine.status_code == 200
    assert mine.json()["status"] == "authorized"
    assert await stack.charges_for(payment["id"]) == 1


async def test_idempotency_keys_are_scoped_per_merchant(stack: Stack) -> None:
    """The same Idempotency-Key and body from two merchants makes two payments, not a replay."""
    key = uuid.uuid4().hex
    body = {
        "amount": 1500,
        "currency": "USD",
        "customer_id": "cus_scoped",
        "payment_method": "pm_sandbox_ok",
        "order_id": f"order_{key[:8]}",
    }
    other = issue_api_key(stack.engine, OTHER_MERCHANT)
    headers = {"Idempotency-Key": key}
    first = await stack.api.post("/payments", json=body, headers=headers)
    second = await stack.api.post("/payments", json=body, headers={**headers, **bearer(other)})
    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    assert first.json()["id"] != second.json()["id"]


# ---- roles --------------------------------------------------------------------------------


async def test_review_endpoints_need_the_operator_role(stack: Stack) -> None:
    """A merchant key gets 403 operator_role_required on GET /reviews and POST .../review;
    the operator's key is let through (here to a 404 for an unknown payment)."""
    denied = await stack.api.get("/reviews")
    assert code_of(denied, 403) == "operator_role_required"
    decision = {"decision": "approve", "reviewer": "ana", "reason": "known customer"}
    denied = await stack.api.post("/payments/pay_unknown/review", json=decision)
    assert code_of(denied, 403) == "operator_role_required"
    assert (await stack.operator.get("/reviews")).status_code == 200
    unknown = await stack.operator.post("/payments/pay_unknown/review", json=decision)
    assert code_of(unknown, 404) == "payment_not_found"
    assert code_of(await stack.operator.get("/reviews?merchant=x"), 400) == "invalid_query"


# ---- limits -------------------------------------------------------------------------------


async def test_rate_limit_is_429_with_retry_after_and_writes_nothing(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """Past the burst a key gets 429 rate_limited with Retry-After, its POST creates no payment,
    and another key is not slowed down."""
    async with running_stack(
        dev_env.client, database_url, rate_limit_per_second=0.01, rate_limit_burst=3
    ) as stack:
        for _ in range(3):
            assert (await stack.api.get("/payments")).status_code == 200
        limited = await stack.api.get("/payments")
        assert code_of(limited, 429) == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1

        key = uuid.uuid4().hex
        refused = await stack.pay(key)
        assert code_of(refused, 429) == "rate_limited"
        with transaction(session_factory(stack.engine)) as session:
            written = session.exec(
                select(func.count()).select_from(Payment).where(Payment.idempotency_key == key)
            ).one()
        assert written == 0

        other = issue_api_key(stack.engine, OTHER_MERCHANT)
        assert (await as_key(stack, other, "GET", "/payments")).status_code == 200


class KeyReads:
    """Counts the ledger's API key look-ups (SELECTs on api_keys) by every engine in this
    process; the test's own engine makes none while it counts."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM api_keys" in statement:
            self.count += 1


@pytest.fixture
def key_reads() -> Iterator[KeyReads]:
    reads = KeyReads()
    event.listen(Engine, "before_cursor_execute", reads)
    yield reads
    event.remove(Engine, "before_cursor_execute", reads)


def _junk_key(n: int) -> str:
    return f"pt_test_{n:012x}_{'e' * 64}"


async def test_failed_authentication_is_limited_per_address_with_retry_after(
    dev_env: WorkflowEnvironment, database_url: str, key_reads: KeyReads
) -> None:
    """After PAYTIDE_AUTH_FAILURE_LIMIT failures an address gets 429 too_many_auth_failures with
    Retry-After, before its key is looked up in the ledger (even a real key); an address under
    the limit is served."""
    async with running_stack(
        dev_env.client, database_url, auth_failure_limit=5, auth_failure_window=60
    ) as stack:
        assert (await stack.api.get("/payments")).status_code == 200
        for n in range(5):
            answer = await as_key(stack, _junk_key(n), "GET", "/payments")
            assert code_of(answer, 401) == "invalid_api_key"
        reads = key_reads.count
        for api_key in (_junk_key(99), None, stack.api_key):
            limited = await as_key(stack, api_key, "GET", "/payments")
            assert code_of(limited, 429) == "too_many_auth_failures"
            assert 1 <= int(limited.headers["retry-after"]) <= 12
        assert key_reads.count == reads
        # Public paths are not behind the key check, so probes still answer.
        assert (await as_key(stack, None, "GET", "/healthz")).status_code == 200


async def test_wrong_codec_tokens_count_as_failed_authentication(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """Wrong codec tokens spend the address's failed-authentication allowance: past it even the
    right token is 429 too_many_auth_failures, so the token cannot be guessed at network speed."""
    token = "codec-token-" + uuid.uuid4().hex
    async with running_stack(
        dev_env.client,
        database_url,
        auth_failure_limit=3,
        auth_failure_window=60,
        codec_auth_token=token,
    ) as stack:
        body = {"payloads": []}
        for n in range(3):
            wrong = await stack.api.post("/codec/decode", json=body, headers=bearer(f"guess-{n}"))
            assert code_of(wrong, 401) == "unauthorized"
        limited = await stack.api.post("/codec/decode", json=body, headers=bearer(token))
        assert code_of(limited, 429) == "too_many_auth_failures"
        assert 1 <= int(limited.headers["retry-after"]) <= 21
        assert (await as_key(stack, stack.api_key, "GET", "/payments")).status_code == 429


async def test_forwarded_for_does_not_escape_the_limit_when_no_proxy_is_trusted(
    dev_env: WorkflowEnvironment, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With FORWARDED_ALLOW_IPS empty (a TCP forwarder on the API's host), a client naming a new
    address in X-Forwarded-For on every try is still one address to the failure limit."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "")
    async with running_stack(
        dev_env.client, database_url, auth_failure_limit=3, auth_failure_window=60
    ) as stack:
        for n in range(4):
            spoofed = {**bearer(_junk_key(n)), "X-Forwarded-For": f"203.0.113.{n + 1}"}
            answer = await stack.api.get("/payments", headers=spoofed)
            assert code_of(answer, 401 if n < 3 else 429) in {
                "invalid_api_key",
                "too_many_auth_failures",
            }


class FrozenClock:
    def __call__(self) -> float:
        return 1000.0


async def test_junk_key_ids_do_not_push_a_real_key_out_of_the_cache(
    database_url: str, key_reads: KeyReads
) -> None:
    """10,000 made-up key ids (the old cache's bound, past which it dropped every entry) cost
    one ledger read each, and the real key is still served from the cache afterwards. The API
    alone (no Temporal needed to authenticate), its key cache on a frozen clock so the entry's
    time to live cannot be what sends the real key back to the ledger."""
    settings = Settings(
        database_url=database_url,
        temporal_address="127.0.0.1:1",
        api_key_cache_seconds=60,
        auth_failure_limit=0,
    )
    engine = create_ledger_engine(database_url)
    try:
        api_key = issue_api_key(engine, OTHER_MERCHANT)
    finally:
        engine.dispose()
    app = create_app(settings)
    async with serve(app) as base_url:
        state: ApiState = app.state.paytide
        state.keys = KeyCache(settings.api_key_cache_seconds, clock=FrozenClock())
        assert (await as_url(base_url, api_key)).status_code == 200
        reads = key_reads.count
        refused = await asyncio.gather(
            *(_pipelined_junk(base_url, range(first, 10_000, 16)) for first in range(16))
        )
        assert sum(refused) == 10_000
        assert key_reads.count - reads == 10_000
        reads = key_reads.count
        assert (await as_url(base_url, api_key)).status_code == 200
        assert key_reads.count == reads


async def as_url(base_url: str, api_key: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, headers=bearer(api_key)) as client:
        return await client.get("/payments")


async def _pipelined_junk(base_url: str, numbers: range) -> int:
    """Send GET /payments with each made-up key on one connection, pipelined (HTTP/1.1): an
    HTTP client library costs more time per request than the API does. The number of 401s."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"".join(
                f"GET /payments HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {_junk_key(n)}\r\n\r\n".encode()
                for n in numbers
            )
        )
        await writer.drain()
        received = b""
        async with asyncio.timeout(120):
            while received.count(b"HTTP/1.1 ") < len(numbers):
                chunk = await reader.read(65536)
                assert chunk, "the API closed the connection early"
                received += chunk
        return received.count(b"HTTP/1.1 401 ")
    finally:
        writer.close()
        await writer.wait_closed()


# ---- webhooks -----------------------------------------------------------------------------


def _sandbox_event() -> bytes:
    event = {
        "id": f"evt_{uuid.uuid4().hex[:20]}",
        "type": "charge.succeeded",
        "created": int(time.time()),
        "data": {"id": f"ch_{uuid.uuid4().hex[:20]}", "status": "succeeded", "metadata": {}},
    }
    return json.dumps(event).encode()


async def test_webhook_secret_rotation_accepts_old_and_new_refuses_others_and_replays(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """With PAYTIDE_SANDBOX_WEBHOOK_PREVIOUS_SECRETS set, both secrets verify; a third secret is
    a forgery (bad_signature); an authentic delivery with an old timestamp is stale."""
    old = "whsec_rotated_out"
    async with running_stack(
        dev_env.client, database_url, sandbox_webhook_previous_secrets=old
    ) as stack:
        current = stack.settings.sandbox_webhook_secret.get_secret_value()
        async with httpx.AsyncClient(base_url=stack.settings.effective_api_url) as client:

            async def deliver(secret: str, at: int) -> httpx.Response:
                body = _sandbox_event()
                headers = {"Sandbox-Signature": sign(secret, body, at)}
                return await client.post("/webhooks/sandbox", content=body, headers=headers)

            now = int(time.time())
            assert (await deliver(current, now)).status_code == 200
            assert (await deliver(old, now)).status_code == 200
            assert code_of(await deliver("whsec_attacker", now), 400) == "bad_signature"
            stale = now - int(stack.settings.webhook_tolerance) - 60
            assert code_of(await deliver(old, stale), 400) == "stale_timestamp"


async def test_oversized_streamed_webhook_is_413_before_it_is_read_whole(stack: Stack) -> None:
    """A chunked webhook body past 256 KiB, with no Content-Length, is cut off with 413."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b"x" * 4096

    async with httpx.AsyncClient(base_url=stack.settings.effective_api_url) as client:
        answer = await client.post("/webhooks/sandbox", content=chunks())
    assert code_of(answer, 413) == "body_too_large"

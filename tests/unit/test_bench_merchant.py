"""The benchmark's merchant endpoint: a signed `payment.succeeded` settles the payment; an
unsigned or forged callback is refused and settles nothing."""

from __future__ import annotations

import json
import time

import httpx

from bench.merchant import Settled, _app, new_secret
from gateways.signing import sign


def callback(payment_id: str, kind: str = "payment.succeeded") -> bytes:
    return json.dumps({"id": "evt_1", "type": kind, "data": {"id": payment_id}}).encode()


async def post(settled: Settled, secret: str, body: bytes, signature: str | None) -> int:
    headers = {"Paytide-Signature": signature} if signature else {}
    transport = httpx.ASGITransport(app=_app(settled, secret))
    async with httpx.AsyncClient(transport=transport, base_url="http://merchant") as client:
        response = await client.post("/callbacks", content=body, headers=headers)
    return response.status_code


async def test_a_signed_success_settles_the_payment_even_before_the_wait() -> None:
    settled, secret = Settled(), new_secret()
    body = callback("pay_1")

    assert await post(settled, secret, body, sign(secret, body, int(time.time()))) == 204
    assert await settled.wait("pay_1", 0.5)


async def test_forged_unsigned_and_other_events_settle_nothing() -> None:
    settled, secret = Settled(), new_secret()
    body = callback("pay_2")

    assert await post(settled, secret, body, sign("not-the-secret", body, int(time.time()))) == 400
    assert await post(settled, secret, body, None) == 400
    other = callback("pay_2", "payment.failed")
    assert await post(settled, secret, other, sign(secret, other, int(time.time()))) == 204
    assert settled.rejected == 2
    assert not await settled.wait("pay_2", 0.05)

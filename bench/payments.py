"""One real payment through paytide's HTTP API, as a merchant makes it."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx

from bench.load import One
from bench.merchant import Settled
from bench.phase import Phase

SETTLE_TIMEOUT = 30.0
# How often a client asks whether its payment has succeeded: the resolution of the settle
# figure; the GETs are part of the API's load.
POLL_INTERVAL = 0.025
FINAL_OTHER = frozenset({"failed", "blocked", "canceled", "conflicted", "needs_attention"})


def http_payment(
    client: httpx.AsyncClient, ids: list[str] | None = None, settled: Settled | None = None
) -> One:
    """``ids`` collects the Idempotency-Keys used, in order, to find a payment's history.
    With ``settled``, a payment has succeeded when its ``payment.succeeded`` callback came;
    without, when a GET /payments/{id} (every 25 ms) says so."""

    async def one(phase: Phase) -> None:
        key = uuid.uuid4().hex
        body = {
            "amount": 1999,
            "currency": "USD",
            "customer_id": f"cus_{uuid.uuid4().hex[:10]}",
            "order_id": uuid.uuid4().hex,
            "payment_method": "pm_sandbox_ok",
        }
        if ids is not None:
            ids.append(key)
        started = time.perf_counter()
        try:
            response = await client.post("/payments", json=body, headers={"Idempotency-Key": key})
            if response.status_code not in (200, 201, 202):
                phase.errors += 1
                return
            phase.first_ms.append((time.perf_counter() - started) * 1000)
            payment_id = response.json()["id"]
            status = response.json().get("status")
            if settled is not None and status != "succeeded":
                if status in FINAL_OTHER or not await settled.wait(payment_id, SETTLE_TIMEOUT):
                    phase.errors += 1
                    return
                status = "succeeded"
            while status != "succeeded":
                if status in FINAL_OTHER or time.perf_counter() - started > SETTLE_TIMEOUT:
                    phase.errors += 1
                    return
                await asyncio.sleep(POLL_INTERVAL)
                status = (await client.get(f"/payments/{payment_id}")).json().get("status")
        except (httpx.HTTPError, ValueError, KeyError):
            phase.errors += 1
            return
        phase.settle_ms.append((time.perf_counter() - started) * 1000)

    return one

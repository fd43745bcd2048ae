"""Scenario 7: the API process restarts under load while clients retry with the same keys."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import httpx
from starlette.applications import Starlette
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from tests.faults.harness import FaultTable, measure
from tests.integration.stack import Stack, post_payment, running_stack
from tests.support.serve import serve_api

CLIENTS = 40
RESTARTS = 2
DOWN_SECONDS = 0.5


def _socket_on(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def _client(
    base_url: str, key: str, body: dict[str, Any], auth: dict[str, str]
) -> tuple[str, int]:
    """One merchant: POST until answered, retrying connection trouble and 5xx with the same key
    (and 409 payment_in_progress after its Retry-After, within one attempt).

    Returns the payment id and how many attempts it took.
    """
    attempts = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=auth) as http:
        while True:
            attempts += 1
            try:
                response = await post_payment(http, body, key)
            except httpx.TransportError:
                await asyncio.sleep(0.1)
                continue
            if response.status_code >= 500:
                await asyncio.sleep(0.1)
                continue
            assert response.status_code in (200, 201, 202), response.text
            return str(response.json()["id"]), attempts


def _api(stack: Stack, env: WorkflowEnvironment) -> Starlette:
    return create_app(stack.settings, temporal=env.client)


async def test_api_restart_under_load_with_client_retries(
    dev_env: WorkflowEnvironment, sqlite_url: str, fault_table: FaultTable
) -> None:
    """Restarting the API mid-burst: retries with the same key find their payment, never a twin."""
    async with running_stack(dev_env.client, sqlite_url, sandbox_webhook_delay=0.5) as stack:
        # A second API in front of the same Temporal and ledger: the one clients talk to, and
        # the one this test restarts (the stack's own API keeps receiving the sandbox webhooks).
        probe = _socket_on(0)
        port = probe.getsockname()[1]
        probe.close()
        base_url = f"http://127.0.0.1:{port}"
        bodies = {
            uuid.uuid4().hex: {
                "amount": 500 + i,
                "currency": "USD",
                "customer_id": f"cus_restart_{i}",
                "payment_method": "pm_sandbox_ok",
                "order_id": f"order_restart_{i}_{uuid.uuid4().hex[:6]}",
            }
            for i in range(CLIENTS)
        }
        keys = list(bodies)
        clients: list[asyncio.Task[tuple[str, int]]] = []

        def arrive(key: str) -> None:
            clients.append(
                asyncio.create_task(_client(base_url, key, bodies[key], stack.auth_headers))
            )

        batches = [keys[i :: RESTARTS + 1] for i in range(RESTARTS + 1)]
        restarted = time.monotonic()
        for index, batch in enumerate(batches):
            async with serve_api(_api(stack, dev_env), stack.settings, sock=_socket_on(port)):
                # Clients keep arriving while this instance serves; it stops right after the
                # last of them, so some are mid-request when it goes.
                for key in batch[1:] if index else batch:
                    arrive(key)
                    await asyncio.sleep(0.02)
            if index < RESTARTS:
                # The next batch's first client arrives while the API is down: it meets the
                # closed port for certain and retries (mid-request ones may all finish first).
                arrive(batches[index + 1][0])
            await asyncio.sleep(DOWN_SECONDS)
            restarted = time.monotonic()
        async with serve_api(_api(stack, dev_env), stack.settings, sock=_socket_on(port)):
            answers = await asyncio.gather(*clients)
        payment_ids = [payment_id for payment_id, _ in answers]

        row, statuses = await measure(
            stack,
            f"API restarted {RESTARTS}x under load, {len(clients)} clients retrying",
            payment_ids,
            attempted=len(clients),
            recovery_started=restarted,
        )
        fault_table.rows.append(row)

        assert row.lost == 0, statuses
        assert row.charged_twice == 0
        assert set(statuses.values()) == {"succeeded"}
        assert len(set(payment_ids)) == len(clients)
        stats = (await stack.sandbox.get("/v1/stats")).json()
        assert sorted(stats["charges_by_reference"]) == sorted(payment_ids)
        assert any(attempts > 1 for _, attempts in answers), "no client met the restart"

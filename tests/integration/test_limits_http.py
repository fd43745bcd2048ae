"""Body limits and strict schemas on the endpoints that act on an existing payment: a refused
request changes nothing about the payment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.integration.stack import Stack, running_stack


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, sqlite_url: str) -> AsyncIterator[Stack]:
    async with running_stack(
        dev_env.client, sqlite_url, risk_review_score=0, risk_block_score=100
    ) as running:
        yield running


async def _in_review(stack: Stack) -> dict[str, Any]:
    created = await stack.pay()
    assert created.status_code == 201, created.text
    payment: dict[str, Any] = created.json()
    assert payment["status"] == "in_review"
    return payment


async def test_unknown_fields_on_cancel_capture_and_review_are_422(stack: Stack) -> None:
    """Extra fields on cancel, capture and review bodies are refused as unknown_field, and the
    payment is still in review afterwards."""
    payment = await _in_review(stack)
    path = f"/payments/{payment['id']}"
    for client, action, body in [
        (stack.api, "cancel", {"reason": "x", "refund": True}),
        (stack.api, "capture", {"amount": 100, "currency": "USD"}),
        (
            stack.operator,
            "review",
            {"decision": "approve", "reviewer": "a", "reason": "b", "force": True},
        ),
    ]:
        answer = await client.post(f"{path}/{action}", json=body)
        assert answer.status_code == 422, (action, answer.text)
        codes = [item["code"] for item in answer.json()["error"]["details"]]
        assert codes == ["unknown_field"], action
    assert (await stack.api.get(path)).json()["status"] == "in_review"


async def test_oversized_streamed_cancel_body_is_413_and_cancels_nothing(stack: Stack) -> None:
    """A chunked cancel body past PAYTIDE_MAX_BODY_BYTES is cut off with 413; no cancellation."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b" " * 1024
            await asyncio.sleep(0)

    payment = await _in_review(stack)
    path = f"/payments/{payment['id']}"
    answer = await stack.api.post(
        f"{path}/cancel", content=chunks(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "body_too_large"
    assert (await stack.api.get(path)).json()["status"] == "in_review"

"""A production API as an operator starts it: refused with development defaults (every offending
variable named), and when configured correctly, without the sandbox gateway and with a codec that
answers only its token. Real HTTP, real processes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from sqlalchemy import func
from sqlmodel import Session, select
from temporalio.api.common.v1 import Payload

from api.app import create_app
from gateways.signing import sign
from ledger.engine import create_ledger_engine
from ledger.migrate import upgrade
from ledger.models import Payment, WebhookEvent
from paytide.codec import EncryptionCodec, parse_keys
from paytide.production_rules import DEV_SANDBOX_WEBHOOK_SECRET
from paytide.settings import Settings
from tests.integration.stack import bearer, issue_api_key
from tests.support.ports import free_port
from tests.support.production import CODEC_TOKEN, PRODUCTION_ENV, production_settings
from tests.support.serve import serve_api

pytestmark = pytest.mark.integration

# The console script `pip install` made, in the virtualenv running the tests.
PAYTIDE = Path(sys.executable).parent / "paytide"
REPO = Path(__file__).resolve().parents[2]
UNREACHABLE_TEMPORAL = "127.0.0.1:1"
OWN_SANDBOX_SECRET = "whsec_generated_for_this_deployment"


def _succeeded_event(secret: str) -> tuple[bytes, dict[str, str]]:
    """A charge.succeeded sandbox event, signed with ``secret`` just now."""
    body = json.dumps(
        {
            "id": "evt_forged_in_production",
            "type": "charge.succeeded",
            "data": {"id": "ch_never_captured", "amount": 4200, "currency": "USD"},
        }
    ).encode()
    return body, {"Sandbox-Signature": sign(secret, body, int(time.time()))}


def _count(url: str, model: type[Payment] | type[WebhookEvent]) -> int:
    engine = create_ledger_engine(url)
    try:
        with Session(engine) as session:
            return session.exec(select(func.count()).select_from(model)).one()
    finally:
        engine.dispose()


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = create_ledger_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
async def production_api(ledger_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """The app of a correct production config under uvicorn; Temporal is a closed port."""
    settings = production_settings(database_url=ledger_url, temporal_address=UNREACHABLE_TEMPORAL)
    async with (
        serve_api(create_app(settings), settings) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=15.0) as client,
    ):
        yield client, settings


async def test_production_api_has_no_sandbox_webhook(
    production_api: tuple[httpx.AsyncClient, Settings], ledger_url: str
) -> None:
    """A charge.succeeded signed with the public dev sandbox secret gets 404 unknown_gateway in
    production and is not even recorded (issue 16, finding 1)."""
    api, _settings = production_api
    body, headers = _succeeded_event(DEV_SANDBOX_WEBHOOK_SECRET)
    response = await api.post("/webhooks/sandbox", content=body, headers=headers)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "unknown_gateway"
    assert _count(ledger_url, WebhookEvent) == 0


async def test_production_refuses_a_merchant_asking_for_the_sandbox(
    production_api: tuple[httpx.AsyncClient, Settings], ledger_url: str
) -> None:
    """`"gateway": "sandbox"` is 422 gateway_unavailable in production; nothing is written."""
    api, settings = production_api
    engine = create_ledger_engine(ledger_url)
    try:
        key = issue_api_key(engine, "acme")
    finally:
        engine.dispose()
    response = await api.post(
        "/payments",
        json={
            "amount": 4200,
            "currency": "USD",
            "customer_id": "cus_1",
            "payment_method": "pm_sandbox_ok",
            "order_id": "order_1",
            "gateway": "sandbox",
        },
        headers={**bearer(key), "Idempotency-Key": "prod-sandbox-1"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "gateway_unavailable"
    assert "'sandbox' is not configured" in response.json()["error"]["message"]
    assert _count(ledger_url, Payment) == 0
    assert settings.routing[0].gateways == ["stripe"]


async def test_production_with_the_sandbox_enabled_trusts_only_its_own_secret(
    ledger_url: str,
) -> None:
    """PAYTIDE_SANDBOX_ENABLED=true with generated secrets: the dev-signed event is rejected
    (400), one signed with the deployment's own secret is accepted."""
    settings = production_settings(
        database_url=ledger_url,
        temporal_address=UNREACHABLE_TEMPORAL,
        sandbox_enabled=True,
        sandbox_api_key="sk_sandbox_generated_for_this_deployment",
        sandbox_webhook_secret=OWN_SANDBOX_SECRET,
        routing=[{"gateways": ["sandbox"]}],
    )
    async with (
        serve_api(create_app(settings), settings) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=15.0) as api,
    ):
        body, headers = _succeeded_event(DEV_SANDBOX_WEBHOOK_SECRET)
        forged = await api.post("/webhooks/sandbox", content=body, headers=headers)
        assert forged.status_code == 400, forged.text
        body, headers = _succeeded_event(OWN_SANDBOX_SECRET)
        genuine = await api.post("/webhooks/sandbox", content=body, headers=headers)
        assert genuine.status_code == 200, genuine.text


# ---- the real process: `paytide api` ---------------------------------------------------------


def _clean_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """No PAYTIDE_* from the machine; our code first on the path; ``variables`` added."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYTIDE_", "PYTHON"))}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path), **variables)
    return env


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        # Issue 16's config, minus the two keys: what `PAYTIDE_ENVIRONMENT=production` alone gets.
        (
            {},
            [
                "PAYTIDE_PAYLOAD_KEYS",
                "PAYTIDE_SEARCH_HASH_KEY",
                "PAYTIDE_CODEC_AUTH_TOKEN",
                "PAYTIDE_ROUTING",
            ],
        ),
        # The sandbox turned on with its dev secrets, and Stripe without its webhook secret.
        (
            {"PAYTIDE_SANDBOX_ENABLED": "true", "PAYTIDE_STRIPE_API_KEY": "sk_test_x"},
            [
                "PAYTIDE_PAYLOAD_KEYS",
                "PAYTIDE_SEARCH_HASH_KEY",
                "PAYTIDE_CODEC_AUTH_TOKEN",
                "PAYTIDE_SANDBOX_API_KEY",
                "PAYTIDE_SANDBOX_WEBHOOK_SECRET",
                "PAYTIDE_STRIPE_WEBHOOK_SECRETS",
            ],
        ),
    ],
    ids=["bare", "sandbox-and-stripe"],
)
def test_production_api_with_dev_defaults_exits_naming_every_variable(
    tmp_path: Path, variables: dict[str, str], named: list[str]
) -> None:
    """`paytide api` in production with development defaults exits 2 before serving, with one
    message naming every offending variable, and no traceback."""
    env = _clean_env(tmp_path, PAYTIDE_ENVIRONMENT="production", **variables)
    done = subprocess.run(
        [str(PAYTIDE), "api"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert done.stderr.startswith("paytide api: paytide cannot start")
    problems = [line.strip() for line in done.stderr.splitlines() if line.startswith("  PAYTIDE_")]
    assert [line.split(":", 1)[0] for line in problems[1:]] == named, done.stderr
    assert not (tmp_path / ".paytide").exists(), "nothing is created before the check"


@pytest.fixture
def production_process(tmp_path: Path) -> Iterator[str]:
    """`paytide api` with a correct production config (SQLite in tmp, Temporal a closed port),
    until it answers /healthz; yields its URL."""
    port = free_port()
    env = _clean_env(
        tmp_path,
        **PRODUCTION_ENV,
        PAYTIDE_DATABASE_URL=f"sqlite:///{tmp_path / 'state' / 'ledger.db'}",
        PAYTIDE_TEMPORAL_ADDRESS=UNREACHABLE_TEMPORAL,
        PAYTIDE_API_PORT=str(port),
        PAYTIDE_LOG_FORMAT="json",
    )
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [str(PAYTIDE), "api"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "api.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _encrypted_payload() -> tuple[dict[str, Any], bytes]:
    """A payload sealed with the production test key, as proto3 JSON, and its clear data."""
    clear = b'{"customer_id": "cus_secret"}'
    ring = parse_keys(PRODUCTION_ENV["PAYTIDE_PAYLOAD_KEYS"])
    sealed = asyncio.run(
        EncryptionCodec(ring).encode([Payload(metadata={"encoding": b"json/plain"}, data=clear)])
    )[0]
    return json_format.MessageToDict(sealed), clear


def test_production_api_process_refuses_sandbox_webhooks_and_codec_without_token(
    production_process: str,
) -> None:
    """The real `paytide api` in production: /webhooks/sandbox is 404, /codec/decode is 401
    without the token (and with a wrong one), 200 and the clear payload with it."""
    body, headers = _succeeded_event(DEV_SANDBOX_WEBHOOK_SECRET)
    webhook = httpx.post(f"{production_process}/webhooks/sandbox", content=body, headers=headers)
    assert webhook.status_code == 404, webhook.text
    assert webhook.json()["error"]["code"] == "unknown_gateway"

    sealed, clear = _encrypted_payload()
    request = {"payloads": [sealed]}
    for auth in ({}, {"Authorization": "Bearer not-the-token"}):
        for action in ("decode", "encode"):
            refused = httpx.post(f"{production_process}/codec/{action}", json=request, headers=auth)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["code"] == "unauthorized"
            assert "cus_secret" not in refused.text
    decoded = httpx.post(
        f"{production_process}/codec/decode",
        json=request,
        headers={"Authorization": f"Bearer {CODEC_TOKEN}"},
    )
    assert decoded.status_code == 200, decoded.text
    data = decoded.json()["payloads"][0]["data"]
    assert base64.b64decode(data) == clear

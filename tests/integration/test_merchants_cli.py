"""`paytide merchants …` run as a person runs it (a subprocess), against the ledger of a real
stack on SQLite and PostgreSQL, with every key it prints tried over HTTP."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from ledger.engine import session_factory, transaction
from ledger.models import ApiKey
from tests.integration.stack import Stack, bearer, running_stack, subprocess_env

KEY = re.compile(r"api key: (pt_test_([0-9a-f]{12})_[0-9a-f]{64})")


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def paytide(env: dict[str, str], *args: str) -> Ran:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paytide",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(dev_env.client, database_url, api_key_cache_seconds=0.5) as running:
        yield running


def printed_key(ran: Ran) -> str:
    assert ran.returncode == 0, ran.stderr
    found = KEY.findall(ran.stdout)
    assert len(found) == 1, ran.stdout
    return str(found[0][0])


async def status_with(stack: Stack, api_key: str, path: str = "/payments") -> int:
    async with httpx.AsyncClient(
        base_url=stack.settings.effective_api_url, headers=bearer(api_key)
    ) as client:
        return (await client.get(path)).status_code


async def code_when_refused(stack: Stack, api_key: str) -> str:
    """Poll until the API refuses ``api_key`` (its cache may serve it briefly); the error code."""
    async with (
        asyncio.timeout(15),
        httpx.AsyncClient(
            base_url=stack.settings.effective_api_url, headers=bearer(api_key)
        ) as client,
    ):
        while True:
            answer = await client.get("/payments")
            if answer.status_code != 200:
                assert answer.status_code == 401, answer.text
                return str(answer.json()["error"]["code"])
            await asyncio.sleep(0.1)


def merchant_id() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


async def test_create_prints_a_working_key_once_and_stores_only_its_hash(stack: Stack) -> None:
    """`merchants create` prints one key that authenticates; the ledger row holds a salted hash
    and the public prefix, and `keys list` and `list` never show the secret."""
    env = subprocess_env(stack.settings)
    mid = merchant_id()
    created = await paytide(env, "merchants", "create", "Acme Shop", "--id", mid)
    api_key = printed_key(created)
    secret = api_key.rsplit("_", 1)[1]
    assert f"created merchant {mid}" in created.stdout
    assert secret not in created.stderr
    assert await status_with(stack, api_key) == 200

    with transaction(session_factory(stack.engine)) as session:
        (row,) = session.exec(select(ApiKey).where(ApiKey.merchant_id == mid)).all()
        stored = " ".join(str(value) for value in row.model_dump().values())
    assert secret not in stored
    assert row.prefix == api_key.rsplit("_", 1)[0]

    listed = await paytide(env, "merchants", "keys", "list", mid)
    assert listed.returncode == 0, listed.stderr
    assert row.prefix in listed.stdout
    assert "active" in listed.stdout
    assert secret not in listed.stdout + listed.stderr
    merchants = await paytide(env, "merchants", "list")
    assert mid in merchants.stdout
    assert "Acme Shop" in merchants.stdout


async def test_rotate_keeps_the_old_key_for_the_overlap_then_refuses_it(stack: Stack) -> None:
    """`keys rotate` prints a new key; with an overlap both work, with --overlap 0s the old key
    is then refused as api_key_expired while the new one works."""
    env = subprocess_env(stack.settings)
    mid = merchant_id()
    old_key = printed_key(await paytide(env, "merchants", "create", "Rotating", "--id", mid))
    prefix = old_key.rsplit("_", 1)[0]

    rotated = await paytide(env, "merchants", "keys", "rotate", prefix, "--overlap", "1h")
    new_key = printed_key(rotated)
    assert f"rotated {prefix}" in rotated.stdout
    assert await status_with(stack, old_key) == 200
    assert await status_with(stack, new_key) == 200
    assert "expiring" in (await paytide(env, "merchants", "keys", "list", mid)).stdout

    again = await paytide(env, "merchants", "keys", "rotate", prefix, "--overlap", "0s")
    newest_key = printed_key(again)
    assert await code_when_refused(stack, old_key) == "api_key_expired"
    assert await status_with(stack, new_key) == 200
    assert await status_with(stack, newest_key) == 200


async def test_revoke_refuses_the_key_with_its_own_code(stack: Stack) -> None:
    """`keys revoke` makes the API answer 401 api_key_revoked; rotating it afterwards is refused."""
    env = subprocess_env(stack.settings)
    mid = merchant_id()
    api_key = printed_key(await paytide(env, "merchants", "create", "Revoked", "--id", mid))
    prefix = api_key.rsplit("_", 1)[0]
    assert await status_with(stack, api_key) == 200
    revoked = await paytide(env, "merchants", "keys", "revoke", prefix)
    assert revoked.returncode == 0, revoked.stderr
    assert await code_when_refused(stack, api_key) == "api_key_revoked"
    refused = await paytide(env, "merchants", "keys", "rotate", prefix)
    assert refused.returncode == 2
    assert "revoked" in refused.stderr


async def test_operator_role_opens_the_review_queue(stack: Stack) -> None:
    """A merchant created with --role operator gets 200 on GET /reviews; a merchant key 403."""
    env = subprocess_env(stack.settings)
    operator = printed_key(
        await paytide(
            env, "merchants", "create", "Ops", "--id", merchant_id(), "--role", "operator"
        )
    )
    merchant = printed_key(await paytide(env, "merchants", "create", "Shop", "--id", merchant_id()))
    assert await status_with(stack, operator, "/reviews") == 200
    assert await status_with(stack, merchant, "/reviews") == 403


async def test_keys_create_issues_another_working_key(stack: Stack) -> None:
    """`keys create` adds a second key; both keys of the merchant authenticate."""
    env = subprocess_env(stack.settings)
    mid = merchant_id()
    first = printed_key(await paytide(env, "merchants", "create", "Two keys", "--id", mid))
    second = printed_key(await paytide(env, "merchants", "keys", "create", mid))
    assert first != second
    assert await status_with(stack, first) == 200
    assert await status_with(stack, second) == 200


async def test_mistakes_are_explained_without_a_traceback(stack: Stack) -> None:
    """Each mistake exits 2 with a sentence on stderr that names the problem; never a traceback."""
    env = subprocess_env(stack.settings)
    mid = merchant_id()
    printed_key(await paytide(env, "merchants", "create", "Once", "--id", mid))
    cases = [
        (("merchants", "create", "Twice", "--id", mid), "exists already"),
        (("merchants", "create", "Bad", "--id", "Not Valid"), "not usable"),
        (("merchants", "create", "Colon", "--id", "acme:eu"), "never ':'"),
        (("merchants", "create", "   ", "--id", merchant_id()), "name"),
        (("merchants", "keys", "list", "nobody-here"), "no merchant"),
        (("merchants", "keys", "create", "nobody-here"), "no merchant"),
        (("merchants", "keys", "revoke", "pt_test_000000000000"), "no API key"),
        (("merchants", "keys", "rotate", "pt_test_000000000000"), "no API key"),
        (("merchants", "keys", "rotate", "x", "--overlap", "soon"), "not a duration"),
        (("merchants", "create", "X", "--role", "admin"), "invalid choice"),
    ]
    for args, fragment in cases:
        ran = await paytide(env, *args)
        assert ran.returncode == 2, (args, ran.stdout, ran.stderr)
        assert fragment in ran.stderr, (args, ran.stderr)
        assert "Traceback" not in ran.stdout + ran.stderr, args


async def test_unmigrated_ledger_says_to_upgrade(tmp_path: Path) -> None:
    """Against a ledger without the merchants table the command says to run `paytide db upgrade`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYTIDE_")}
    env["PAYTIDE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.db'}"
    ran = await paytide(env, "merchants", "create", "Early")
    assert ran.returncode == 2
    assert "paytide db upgrade" in ran.stderr
    assert "Traceback" not in ran.stdout + ran.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("merchants",),
        ("merchants", "create"),
        ("merchants", "list"),
        ("merchants", "keys"),
        ("merchants", "keys", "list"),
        ("merchants", "keys", "create"),
        ("merchants", "keys", "rotate"),
        ("merchants", "keys", "revoke"),
    ],
)
async def test_every_merchants_command_has_help(command: tuple[str, ...]) -> None:
    """`--help` of each merchants command exits 0 and explains its usage."""
    ran = await paytide(dict(os.environ), *command, "--help")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(f"usage: paytide {' '.join(command)}")


async def test_create_refuses_control_characters_in_the_name_and_writes_nothing(
    database_url: str,
) -> None:
    """`merchants create` with an escape sequence or a line break in NAME exits 2 naming the
    argument and the character, and no merchant is written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYTIDE_")}
    env["PAYTIDE_DATABASE_URL"] = database_url
    mid = merchant_id()
    for name in ("Acme\x1b[31m", "Acme\nShop", "Acme\u2028Shop", "Acme\x85"):
        refused = await paytide(env, "merchants", "create", name, "--id", mid)
        assert refused.returncode == 2, refused.stdout
        assert "argument NAME" in refused.stderr and "found U+" in refused.stderr, refused.stderr
    listed = await paytide(env, "merchants", "list")
    assert listed.returncode == 0, listed.stderr
    assert mid not in listed.stdout
    created = await paytide(env, "merchants", "create", "Acme Shop", "--id", mid)
    assert created.returncode == 0, created.stderr

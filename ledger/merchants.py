"""Merchants and their API keys in the ledger: create, issue, look up, rotate, revoke.

Only the salted hash of a key's secret is ever written; the full key exists in the issuing
process's memory until it is shown to a person, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlmodel import Session, col, select

from ledger.conflicts import insert_ignoring_conflict
from ledger.models import ApiKey, Merchant
from paytide import merchant_ids
from paytide.api_keys import IssuedKey, KeyMode, Role, generate


class MerchantError(Exception):
    """A request the ledger cannot honour; the message says why, for a person."""


class KeyState(StrEnum):
    ACTIVE = "active"
    EXPIRING = "expiring"  # rotated out, still accepted until expires_at
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, kw_only=True)
class KeyRecord:
    """What authentication needs to know about a key, detached from the session."""

    key_id: str
    merchant_id: str
    role: Role
    salt: str
    secret_hash: str
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> KeyState:
        return state_of(self.expires_at, self.revoked_at, now)


def aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every timestamp we write is UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def state_of(expires_at: datetime | None, revoked_at: datetime | None, now: datetime) -> KeyState:
    if revoked_at is not None:
        return KeyState.REVOKED
    expires = aware(expires_at)
    if expires is None:
        return KeyState.ACTIVE
    return KeyState.EXPIRED if now >= expires else KeyState.EXPIRING


def check_merchant_id(merchant_id: str) -> str:
    """``merchant_id`` when a merchant may have it (`paytide.merchant_ids`); else MerchantError."""
    problem = merchant_ids.problem_with(merchant_id)
    if problem is not None:
        raise MerchantError(problem)
    return merchant_id


def create_merchant(session: Session, *, merchant_id: str, name: str, role: Role) -> Merchant:
    check_merchant_id(merchant_id)
    if not 1 <= len(name.strip()) <= 200:
        raise MerchantError("the merchant's name must be 1 to 200 characters")
    row = {"id": merchant_id, "name": name.strip(), "role": role.value}
    table = cast(Any, Merchant).__table__
    if not insert_ignoring_conflict(session, table, {**row, "created_at": _now()}, ["id"]):
        raise MerchantError(f"merchant {merchant_id!r} exists already")
    merchant = session.get(Merchant, merchant_id)
    assert merchant is not None
    return merchant


def ensure_merchant(session: Session, *, merchant_id: str, name: str, role: Role) -> Merchant:
    """The merchant, created when missing; safe to call from several processes at once."""
    check_merchant_id(merchant_id)
    table = cast(Any, Merchant).__table__
    values = {"id": merchant_id, "name": name, "role": role.value, "created_at": _now()}
    insert_ignoring_conflict(session, table, values, ["id"])
    merchant = session.get(Merchant, merchant_id)
    assert merchant is not None
    return merchant


def get_merchant(session: Session, merchant_id: str) -> Merchant:
    merchant = session.get(Merchant, merchant_id)
    if merchant is None:
        raise MerchantError(f"no merchant {merchant_id!r}; `paytide merchants list` shows them")
    return merchant


def list_merchants(session: Session) -> list[Merchant]:
    return list(session.exec(select(Merchant).order_by(col(Merchant.created_at))))


def issue_key(session: Session, merchant_id: str, mode: KeyMode) -> IssuedKey:
    """A new key for the merchant; the caller shows ``.text`` once and forgets it."""
    get_merchant(session, merchant_id)
    issued = generate(mode)
    session.add(
        ApiKey(
            id=issued.key.key_id,
            merchant_id=merchant_id,
            prefix=issued.key.prefix,
            salt=issued.salt,
            secret_hash=issued.secret_hash,
            created_at=_now(),
        )
    )
    session.flush()
    return issued


def list_keys(session: Session, merchant_id: str) -> list[ApiKey]:
    get_merchant(session, merchant_id)
    statement = select(ApiKey).where(ApiKey.merchant_id == merchant_id)
    return list(session.exec(statement.order_by(col(ApiKey.created_at), col(ApiKey.id))))


def find_key(session: Session, key_id: str) -> KeyRecord | None:
    found = session.exec(
        select(ApiKey, Merchant)
        .join(Merchant, col(Merchant.id) == col(ApiKey.merchant_id))
        .where(ApiKey.id == key_id)
    ).first()
    if found is None:
        return None
    key, merchant = found
    return KeyRecord(
        key_id=key.id,
        merchant_id=merchant.id,
        role=Role(merchant.role),
        salt=key.salt,
        secret_hash=key.secret_hash,
        expires_at=aware(key.expires_at),
        revoked_at=aware(key.revoked_at),
    )


def _key_by_reference(session: Session, reference: str) -> ApiKey:
    """A key named by its id or its prefix (``pt_live_<id>``), as `keys list` prints it."""
    key_id = reference.rsplit("_", 1)[-1]
    key = session.get(ApiKey, key_id)
    if key is None or reference not in (key.id, key.prefix):
        raise MerchantError(f"no API key {reference!r}; `paytide merchants keys list` shows them")
    return key


def rotate_key(
    session: Session, reference: str, *, overlap: timedelta, mode: KeyMode
) -> tuple[ApiKey, IssuedKey]:
    """Issue a successor and let the old key live ``overlap`` longer; return both."""
    old = _key_by_reference(session, reference)
    now = _now()
    state = state_of(old.expires_at, old.revoked_at, now)
    if state in (KeyState.REVOKED, KeyState.EXPIRED):
        raise MerchantError(f"API key {old.prefix} is {state.value}; issue a new key instead")
    expires = now + overlap
    current = aware(old.expires_at)
    # A second rotation never lengthens the old key's life.
    old.expires_at = min(expires, current) if current is not None else expires
    session.add(old)
    issued = issue_key(session, old.merchant_id, mode)
    return old, issued


def revoke_key(session: Session, reference: str) -> ApiKey:
    key = _key_by_reference(session, reference)
    if key.revoked_at is None:
        key.revoked_at = _now()
        session.add(key)
    return key


def _now() -> datetime:
    return datetime.now(UTC)

"""Merchants' webhook endpoints in the ledger: create, list, update, disable, rotate the secret.

The signing secret is generated here and handed back once, in clear, to the caller that shows it
to the merchant; the row only ever holds it sealed (paytide/sealing.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from ledger.merchants import aware
from ledger.models import WebhookEndpoint, utcnow
from paytide.codec import KeyRing
from paytide.sealing import seal, unseal

ENABLED = "enabled"
DISABLED = "disabled"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a label, not a secret


@dataclass(frozen=True, kw_only=True)
class EndpointView:
    id: str
    merchant_id: str
    url: str
    events: list[str]
    status: str
    description: str | None
    created_at: datetime
    updated_at: datetime
    # While a rotated-out secret still signs beside the new one.
    previous_secret_expires_at: datetime | None


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def view_of(row: WebhookEndpoint, now: datetime | None = None) -> EndpointView:
    expires = aware(row.previous_expires_at)
    if expires is not None and expires <= (now or utcnow()):
        expires = None
    return EndpointView(
        id=row.id,
        merchant_id=row.merchant_id,
        url=row.url,
        events=list(row.events),
        status=row.status,
        description=row.description,
        created_at=aware(row.created_at) or row.created_at,
        updated_at=aware(row.updated_at) or row.updated_at,
        previous_secret_expires_at=expires,
    )


def create(
    session: Session,
    ring: KeyRing,
    *,
    merchant_id: str,
    url: str,
    events: list[str],
    description: str | None,
) -> tuple[EndpointView, str]:
    """The new endpoint and its signing secret (the only time the secret leaves the ledger)."""
    endpoint_id = f"we_{secrets.token_hex(12)}"
    secret = new_secret()
    row = WebhookEndpoint(
        id=endpoint_id,
        merchant_id=merchant_id,
        url=url,
        events=sorted(set(events)),
        description=description,
        secret_sealed=seal(ring, secret, bound_to=endpoint_id),
    )
    session.add(row)
    session.flush()
    return view_of(row), secret


def get(session: Session, merchant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    row = session.get(WebhookEndpoint, endpoint_id)
    if row is None or row.merchant_id != merchant_id:
        return None
    return row


def list_for(session: Session, merchant_id: str) -> list[EndpointView]:
    rows = session.exec(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.merchant_id == merchant_id)
        .order_by(col(WebhookEndpoint.created_at), col(WebhookEndpoint.id))
    )
    return [view_of(row) for row in rows]


def subscribed(session: Session, merchant_id: str, event_type: str) -> list[WebhookEndpoint]:
    """The merchant's enabled endpoints whose filter names ``event_type``."""
    rows = session.exec(
        select(WebhookEndpoint).where(
            WebhookEndpoint.merchant_id == merchant_id, WebhookEndpoint.status == ENABLED
        )
    )
    return [row for row in rows if event_type in row.events]


def update(
    session: Session,
    row: WebhookEndpoint,
    *,
    url: str | None,
    events: list[str] | None,
    status: str | None,
    description: str | None,
) -> EndpointView:
    if url is not None:
        row.url = url
    if events is not None:
        row.events = sorted(set(events))
    if status is not None:
        row.status = status
    if description is not None:
        row.description = description
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return view_of(row)


def rotate(
    session: Session, ring: KeyRing, row: WebhookEndpoint, *, overlap: timedelta
) -> tuple[EndpointView, str]:
    """A new secret; the current one keeps signing beside it for ``overlap``."""
    now = utcnow()
    secret = new_secret()
    if overlap > timedelta(0):
        row.previous_secret_sealed = row.secret_sealed
        row.previous_expires_at = now + overlap
    else:
        row.previous_secret_sealed = None
        row.previous_expires_at = None
    row.secret_sealed = seal(ring, secret, bound_to=row.id)
    row.updated_at = now
    session.add(row)
    session.flush()
    return view_of(row, now), secret


def signing_secrets(ring: KeyRing, row: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a delivery is signed with now: the current one, then a rotated-out one
    still inside its window."""
    found = [unseal(ring, row.secret_sealed, bound_to=row.id)]
    expires = aware(row.previous_expires_at)
    if row.previous_secret_sealed and expires is not None and expires > now:
        found.append(unseal(ring, row.previous_secret_sealed, bound_to=row.id))
    return found

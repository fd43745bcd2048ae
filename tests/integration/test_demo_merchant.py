"""The local stack's demo merchant: created once, its key kept and reused while the ledger still
accepts it, replaced when not; never created in production. Real ledger on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from ledger import merchants
from ledger.engine import create_ledger_engine, session_factory, transaction
from ledger.models import ApiKey, Merchant
from paytide import api_keys
from paytide.devstack import DEMO_KEY_FILE, demo_api_key
from paytide.settings import Environment, Settings
from tests.support.production import production_settings


def _keys_of(database_url: str, merchant_id: str) -> list[ApiKey]:
    engine = create_ledger_engine(database_url)
    try:
        with transaction(session_factory(engine)) as session:
            return list(session.exec(select(ApiKey).where(ApiKey.merchant_id == merchant_id)))
    finally:
        engine.dispose()


def test_demo_key_is_created_once_and_reused(database_url: str, tmp_path: Path) -> None:
    """Two starts print the same working key, with one merchant and one key in the ledger; the
    file holding it is readable by its owner only."""
    merchant = f"demo-{tmp_path.name[-8:].lower().replace('_', '-')}"
    settings = Settings(database_url=database_url, state_dir=tmp_path, default_merchant=merchant)
    first = demo_api_key(settings)
    second = demo_api_key(settings)
    assert first is not None
    assert first == second
    parsed = api_keys.parse(first)
    assert parsed is not None
    (row,) = _keys_of(database_url, merchant)
    assert row.id == parsed.key_id
    assert api_keys.matches(parsed.secret, row.salt, row.secret_hash)
    assert (tmp_path / DEMO_KEY_FILE).stat().st_mode & 0o077 == 0


def test_revoked_demo_key_is_replaced(database_url: str, tmp_path: Path) -> None:
    """When the kept key was revoked, the next start issues and keeps a new one."""
    merchant = f"demo-{tmp_path.name[-8:].lower().replace('_', '-')}"
    settings = Settings(database_url=database_url, state_dir=tmp_path, default_merchant=merchant)
    old = demo_api_key(settings)
    assert old is not None
    engine = create_ledger_engine(database_url)
    try:
        with transaction(session_factory(engine)) as session:
            merchants.revoke_key(session, old.rsplit("_", 1)[0])
    finally:
        engine.dispose()
    new = demo_api_key(settings)
    assert new is not None and new != old
    assert (tmp_path / DEMO_KEY_FILE).read_text().strip() == new
    assert len(_keys_of(database_url, merchant)) == 2


def test_production_never_creates_a_demo_merchant(database_url: str, tmp_path: Path) -> None:
    """PAYTIDE_ENVIRONMENT=production: no key, no merchant, no key file."""
    merchant = f"prod-{tmp_path.name[-8:].lower().replace('_', '-')}"
    settings = production_settings(
        database_url=database_url, state_dir=tmp_path, default_merchant=merchant
    )
    assert settings.environment is Environment.PRODUCTION
    assert demo_api_key(settings) is None
    assert not (tmp_path / DEMO_KEY_FILE).exists()
    engine = create_ledger_engine(database_url)
    try:
        with transaction(session_factory(engine)) as session:
            assert session.get(Merchant, merchant) is None
    finally:
        engine.dispose()

"""Database access: one SQLAlchemy async engine per service, pinned to the service's own schema."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.settings import Settings

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def advisory_key(name: str) -> int:
    """A PostgreSQL advisory lock key for a name (`migrate:ledger`, `outbox:earn`, ...): the first 8 bytes of its
    SHA-256, so every process derives the same key."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def make_engine(settings: Settings, schema: str, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size,
        max_overflow=5,
        pool_pre_ping=True,
        connect_args={"server_settings": {"search_path": schema, "application_name": f"jifen-{schema}"},
                      "timeout": 5},
    )


async def migrate(dsn: str, schema: str, service_migrations: Path, with_shared: bool = True) -> list[str]:
    """Create the schema and apply the shared (inbox, outbox) and the service's migrations not applied yet.

    An advisory lock makes concurrent starts of the same service apply each migration once.
    """
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema}, timeout=10)
    lock = advisory_key(f"migrate:{schema}")
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", lock)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                           "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        files = [(f"shared/{p.name}", p) for p in sorted(SHARED_MIGRATIONS.glob("*.sql"))] if with_shared else []
        files += [(f"{schema}/{p.name}", p) for p in sorted(service_migrations.glob("*.sql"))]
        for name, path in files:
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
            log.info("migration applied", extra={"migration": name, "schema": schema})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock)
        await conn.close()
    return applied

"""Database access: one SQLAlchemy async engine per service, pinned to the service's own schema."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared import keys
from shared.settings import Settings

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def advisory_key(name: str) -> int:
    """A PostgreSQL advisory lock key for a name (`migrate:ledger`, `outbox:earn`, ...): the first 8 bytes of its
    SHA-256, so every process derives the same key."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


async def connect(dsn: str, schema: str | None = None, timeout_s: float = 10.0,
                  server_settings: dict[str, str] | None = None) -> asyncpg.Connection:
    """Every connection Jifen opens (the engine's pool, migrations, LISTEN, the CLI), so each reaches a server the
    same way: asyncpg reads TLS as libpq does, from the URL (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) or from
    PGSSLMODE / PGSSLROOTCERT / PGSSLCERT / PGSSLKEY. `schema` sets the search path."""
    settings = {**({"search_path": schema} if schema else {}), **(server_settings or {})}
    return await asyncpg.connect(plain_dsn(dsn), server_settings=settings or None, timeout=timeout_s)


def plain_dsn(url: str) -> str:
    """A database URL as asyncpg takes it (SQLAlchemy's `postgresql+asyncpg://` spelling accepted)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def make_engine(settings: Settings, schema: str, pool_size: int = 5) -> AsyncEngine:
    dsn = settings.asyncpg_dsn

    async def pooled() -> asyncpg.Connection:
        return await connect(dsn, schema, timeout_s=5, server_settings={"application_name": f"jifen-{schema}"})

    # The pool's connections come from `connect`: SQLAlchemy's asyncpg dialect would hand a URL's `?sslmode=` to
    # asyncpg as an argument it refuses; the URL given here only picks the dialect.
    engine = create_async_engine("postgresql+asyncpg://", async_creator=pooled, pool_size=pool_size, max_overflow=5)
    # No pre-ping: SQLAlchemy's costs three round trips (BEGIN, `;`, ROLLBACK) on every checkout, which on a hot
    # path of small transactions was a tenth of a service's time. A connection the server closed (a restart, an
    # idle timeout) is known closed to the driver without asking, and is replaced at checkout instead; one lost
    # silently fails its first statement, which callers already treat as transient (a retry, or a 503).
    event.listen(engine.sync_engine, "checkout", _replace_if_closed)
    return engine


def _replace_if_closed(dbapi_connection: Any, _record: object, _proxy: object) -> None:
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


async def migrate(dsn: str, schema: str, service_migrations: Path, with_shared: bool = True) -> list[str]:
    """Create the schema and apply the shared (inbox, outbox) and the service's migrations not applied yet.

    An advisory lock makes concurrent starts of the same service apply each migration once.
    """
    conn = await connect(dsn, schema)
    lock = advisory_key(keys.migration_lock(schema))
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

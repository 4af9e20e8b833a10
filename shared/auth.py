"""API keys: Bearer keys with scopes, stored hashed, checked by every service's HTTP side.

A key is `jifen_<key id>_<secret>`: the key id is public (it names the key in `jifen keys list` and in audit
records), the secret is 256 random bits of which only the SHA-256 is stored. Keys live in the database's `auth`
schema, written only by `jifen keys` (and `make up`), read by every service, so one command creates or revokes a key
for all five. Scopes nest: `admin` can do what `redeem` can, and `redeem` what `read` can.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.http import ApiError

SCHEMA = "auth"
MIGRATIONS = Path(__file__).parent / "auth_migrations"
Scope = Literal["read", "redeem", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "redeem", "admin")
_GRANTS: dict[str, frozenset[str]] = {"read": frozenset({"read"}), "redeem": frozenset({"read", "redeem"}),
                                      "admin": frozenset({"read", "redeem", "admin"})}
PREFIX = "jifen"


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: Scope) -> bool:
        return any(scope in _GRANTS.get(held, frozenset()) for held in self.scopes)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or len(parts[2]) < 20:
        return None
    return parts[1], parts[2]


async def create_key(db: asyncpg.Connection, name: str, scopes: list[Scope]) -> tuple[ApiKey, str]:
    """A new key; returns it and the token, which is shown this once and never stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    await db.execute(f"INSERT INTO {SCHEMA}.api_keys (key_id, name, scopes, secret_hash) VALUES ($1, $2, $3, $4)",
                     key_id, name, sorted(set(scopes)), _hash(secret))
    return ApiKey(key_id, name, frozenset(scopes)), f"{PREFIX}_{key_id}_{secret}"


async def revoke_key(db: asyncpg.Connection, key_id: str) -> bool:
    """Revoke a key; False when there is no such key or it was revoked already."""
    done = await db.execute(f"UPDATE {SCHEMA}.api_keys SET revoked_at = now() WHERE key_id = $1 "
                            "AND revoked_at IS NULL", key_id)
    return bool(done.endswith(" 1"))


async def list_keys(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch(f"SELECT key_id, name, scopes, created_at, revoked_at FROM {SCHEMA}.api_keys "
                          "ORDER BY created_at")


class KeyStore:
    """Verifies keys against the `auth` schema, trusting a verified key for `cache_s` seconds."""

    def __init__(self, engine: Callable[[], AsyncEngine | None], cache_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.cache_s = cache_s
        self.clock = clock
        self._cache: dict[str, tuple[ApiKey, float]] = {}

    async def verify(self, token: str) -> ApiKey | None:
        parts = split_token(token)
        if parts is None:
            return None
        cached = self._cache.get(token)
        if cached is not None and cached[1] > self.clock():
            return cached[0]
        engine = self.engine()
        if engine is None:
            raise ApiError(503, "unavailable", "the service is starting; try again in a moment")
        key_id, secret = parts
        try:
            async with engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                assert raw is not None
                row = await raw.fetchrow(f"SELECT name, scopes, secret_hash FROM {SCHEMA}.api_keys "
                                         "WHERE key_id = $1 AND revoked_at IS NULL", key_id)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ApiError(503, "unavailable", f"API keys cannot be checked now: {type(exc).__name__}") from exc
        if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), _hash(secret)):
            self._cache.pop(token, None)
            return None
        key = ApiKey(key_id, row["name"], frozenset(row["scopes"]))
        if self.cache_s > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (key, self.clock() + self.cache_s)
        return key


bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                    description="An API key from `jifen keys create` (`make up` writes an admin key to .run/api-key): "
                                "`Authorization: Bearer jifen_...`. Scopes: read, redeem, admin.")


def requires(store: KeyStore, scope: Scope) -> Any:
    """A route dependency: the caller's key, which must carry `scope` (401 without a valid key, 403 without it)."""

    async def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> ApiKey:
        if credentials is None:
            raise ApiError(401, "missing_api_key", "send `Authorization: Bearer <api key>`; create a key with "
                                                   "`jifen keys create`")
        key = await store.verify(credentials.credentials)
        if key is None:
            raise ApiError(401, "invalid_api_key", "the API key is unknown, malformed or revoked")
        if not key.allows(scope):
            raise ApiError(403, "missing_scope", f"key {key.name!r} does not have the {scope!r} scope")
        return key

    caller.jifen_scope = scope  # type: ignore[attr-defined]  # read by the kit's check that every route has a key
    return Depends(caller)

"""`jifen keys create|list|revoke`: the API keys every service's HTTP side checks (shared/auth.py)."""

from __future__ import annotations

import argparse
import sys

import asyncpg

from cli.times import shown
from shared import auth, db
from shared.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke API keys").add_subparsers(dest="keys_command",
                                                                                          required=True)
    create = keys.add_parser("create", help="create a key and print it (shown this once)")
    create.add_argument("--name", required=True, help="who or what uses it, e.g. till-shanghai-01")
    create.add_argument("--scope", action="append", choices=auth.SCOPES, required=True, dest="scopes",
                        help="read, redeem or admin (repeat for several; admin includes redeem, redeem includes read)")
    keys.add_parser("list", help="every key: id, name, scopes, created, revoked")
    revoke = keys.add_parser("revoke", help="revoke a key by its id (services stop accepting it within seconds)")
    revoke.add_argument("key_id")
    for parser in (create, revoke, *keys.choices.values()):
        if not any(a.dest == "database_url" for a in parser._actions):
            parser.add_argument("--database-url", help="PostgreSQL URL (default: JIFEN_DATABASE_URL or the local "
                                                       "stack's)")


async def run(args: argparse.Namespace) -> int:
    dsn = args.database_url or Settings().asyncpg_dsn
    try:
        await db.migrate(dsn, auth.SCHEMA, auth.MIGRATIONS, with_shared=False)
        conn = await db.connect(dsn)
    except (OSError, asyncpg.PostgresError, ValueError) as exc:
        print(f"✘ cannot reach the database: {exc}", file=sys.stderr)
        return 2
    try:
        if args.keys_command == "create":
            key, token = await auth.create_key(conn, args.name, args.scopes)
            print(f"✔ key {key.key_id} ({key.name}; scopes {', '.join(sorted(key.scopes))}); it is shown this once:")
            print(token)
        elif args.keys_command == "list":
            rows = await auth.list_keys(conn)
            table = [("key id", "name", "scopes", "created (UTC)", "revoked")] + [
                (r["key_id"], r["name"], ",".join(r["scopes"]), shown(r["created_at"]), shown(r["revoked_at"]))
                for r in rows]
            widths = [max(len(row[i]) for row in table) for i in range(4)]
            for row in table:  # columns as wide as their longest cell, two spaces apart
                print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
        elif not await auth.revoke_key(conn, args.key_id):
            print(f"✘ no key {args.key_id!r} to revoke (unknown, or revoked already)", file=sys.stderr)
            return 1
        else:
            print(f"✔ key {args.key_id} revoked")
    finally:
        await conn.close()
    return 0

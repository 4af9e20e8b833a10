"""`jifen ledger verify`: recheck the ledger's invariants from its tables and say what was checked."""

from __future__ import annotations

import argparse
import sys

import asyncpg

from services.ledger.settings import LedgerSettings
from services.ledger.verify import verify
from shared import db


def add_parser(sub: argparse._SubParsersAction) -> None:
    ledger = sub.add_parser("ledger", help="ledger tools")
    tools = ledger.add_subparsers(dest="ledger_command", required=True)
    check = tools.add_parser("verify", help="check hash chains, sequences, zero-sum, balances, lots and holds; "
                                            "exits 1 on the first broken rule")
    check.add_argument("--program", help="only this programme (default: all)")
    check.add_argument("--database-url", help="PostgreSQL URL (default: JIFEN_DATABASE_URL or the local stack)")
    check.add_argument("--schema", help="the ledger's schema (default: JIFEN_SCHEMA_NAME or 'ledger')")


async def run(args: argparse.Namespace) -> int:
    settings = LedgerSettings()
    dsn = (args.database_url or settings.asyncpg_dsn).replace("postgresql+asyncpg://", "postgresql://")
    schema = args.schema or settings.schema_name
    try:
        conn = await db.connect(dsn, schema)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"✘ cannot reach the ledger database: {exc}", file=sys.stderr)
        return 2
    try:
        if not await conn.fetchval("SELECT to_regclass('entries') IS NOT NULL"):
            print(f"✘ no ledger tables in schema {schema!r}", file=sys.stderr)
            return 2
        if args.program and not await conn.fetchval("SELECT EXISTS (SELECT FROM accounts WHERE program_id = $1)",
                                                     args.program):
            known = await conn.fetchval("SELECT string_agg(DISTINCT program_id, ', ' ORDER BY program_id) "
                                        "FROM accounts")
            print(f"✘ the ledger has no programme {args.program!r}: nothing was ever posted to it "
                  f"(it holds: {known or 'none yet'})", file=sys.stderr)
            return 2
        scope = f"programme {args.program}" if args.program else "all programmes"
        print(f"verifying the ledger ({scope}, schema {schema})")
        report = await verify(conn, args.program, stop_at_first=True,
                              progress=lambda line: print(f"  ✔ {line}", flush=True))
    finally:
        await conn.close()
    if report.problems:
        print(f"✘ {report.problems[0]}", file=sys.stderr)
        if len(report.problems) > 1:
            print(f"  (and {len(report.problems) - 1} more problems found by the same check)", file=sys.stderr)
        return 1
    print("ledger verified: every rule holds")
    return 0

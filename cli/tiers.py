"""`jifen tiers rebuild --program P`: rebuild a programme's tier projection by replaying its topics."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import asyncpg
from aiokafka.errors import KafkaError

from services.tiers.rebuild import RebuildError, rebuild
from services.tiers.settings import TiersSettings


def add_parser(sub: argparse._SubParsersAction) -> None:
    tiers = sub.add_parser("tiers", help="tiers tools").add_subparsers(dest="tiers_command", required=True)
    again = tiers.add_parser("rebuild", help="drop a programme's tier projection and replay the topics it is made "
                                             "of from the start (the live service waits meanwhile)")
    again.add_argument("--program", required=True, help="the programme to rebuild")
    again.add_argument("--database-url", help="PostgreSQL URL (default: JIFEN_DATABASE_URL or the local stack's)")
    again.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers (default: JIFEN_KAFKA_BOOTSTRAP)")
    again.add_argument("--topic-prefix", help="topic prefix (default: JIFEN_TOPIC_PREFIX)")


async def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("database_url", args.database_url), ("kafka_bootstrap", args.kafka_bootstrap),
                                   ("topic_prefix", args.topic_prefix)) if v is not None}
    settings = TiersSettings(**overrides)
    print(f"rebuilding programme {args.program}'s tiers from {settings.kafka_bootstrap}", flush=True)
    try:
        done = await rebuild(settings, args.program, datetime.now(UTC),
                             progress=lambda line: print(f"  · {line}", flush=True))
    except RebuildError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, KafkaError) as exc:
        print(f"✘ cannot rebuild: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"✔ replayed {done.records:,} records in {done.seconds:.1f}s: {done.members:,} members, "
          f"{done.changes:,} tier changes")
    return 0

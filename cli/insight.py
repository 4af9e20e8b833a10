"""`jifen insight rebuild --program P`: rebuild a programme's insight projection by replaying its topics."""

from __future__ import annotations

import argparse
import sys

import asyncpg
from aiokafka.errors import KafkaError

from services.insight.rebuild import RebuildError, rebuild
from services.insight.settings import InsightSettings


def add_parser(sub: argparse._SubParsersAction) -> None:
    insight = sub.add_parser("insight", help="insight tools").add_subparsers(dest="insight_command", required=True)
    again = insight.add_parser("rebuild", help="clear a programme's insight projection and replay the topics it is "
                                               "made of from the start, each event once (the live service waits "
                                               "meanwhile)")
    again.add_argument("--program", required=True, help="the programme to rebuild")
    again.add_argument("--database-url", help="PostgreSQL URL (default: JIFEN_DATABASE_URL or the local stack's)")
    again.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers (default: JIFEN_KAFKA_BOOTSTRAP)")
    again.add_argument("--topic-prefix", help="topic prefix (default: JIFEN_TOPIC_PREFIX)")


async def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("database_url", args.database_url), ("kafka_bootstrap", args.kafka_bootstrap),
                                   ("topic_prefix", args.topic_prefix)) if v is not None}
    settings = InsightSettings(**overrides)
    print(f"rebuilding programme {args.program}'s insight projection from {settings.kafka_bootstrap}", flush=True)
    try:
        done = await rebuild(settings, args.program, progress=lambda line: print(f"  · {line}", flush=True))
    except RebuildError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, KafkaError) as exc:
        print(f"✘ cannot rebuild: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    width = max(len(topic) for topic in done.topics)
    for topic, counts in done.topics.items():
        print(f"  {topic:<{width}}  {counts.read:>9,} read  {counts.applied:>9,} applied  "
              f"{counts.duplicates:>6,} duplicates")
    print(f"✔ replayed {done.read:,} records in {done.seconds:.1f}s: {done.applied:,} events of {args.program} "
          f"applied once each ({done.duplicates:,} duplicates skipped), {done.members:,} members")
    return 0

"""`jifen topics create|check`: every topic the services read and write, with its `.dlq` twin, on a Kafka cluster.

`jifen stack up` makes them on its own one-broker Kafka; a cluster of one's own needs them made before the services
start (or a consumer's first look at a missing topic may have the broker auto-create it with its defaults), with as
many replicas as it has brokers to spare. The deployments in deploy/ run `create` once and `check --wait` before each
service.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient

from deploy.local.infra import StackError, create_topics
from shared.contracts.topics import all_topics
from shared.kafka import Cluster, client_options
from shared.settings import Settings


class TopicSettings(Settings):
    partitions: int = 6
    # 1 suits a one-broker cluster only: a topic then lives on one machine. Three brokers or more: 3.
    replication_factor: int = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    topics = sub.add_parser("topics", help="create or check the topics the services need on a Kafka cluster")
    actions = topics.add_subparsers(dest="topics_command", required=True)
    create = actions.add_parser("create", help="create every missing topic and its .dlq twin (existing ones are "
                                               "left as they are)")
    create.add_argument("--partitions", type=int, help="partitions of each new topic (default: JIFEN_PARTITIONS, 6)")
    create.add_argument("--replication-factor", type=int,
                        help="replicas of each new topic (default: JIFEN_REPLICATION_FACTOR, 1)")
    check = actions.add_parser("check", help="exit 0 when every topic exists, else name the missing ones")
    check.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="look again every few seconds until they exist or SECONDS have passed")
    for parser in (create, check):
        parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: JIFEN_KAFKA_BOOTSTRAP)")
        parser.add_argument("--prefix", help="topic prefix (default: JIFEN_TOPIC_PREFIX)")


async def run(args: argparse.Namespace) -> int:
    settings = TopicSettings()
    bootstrap = settings.kafka.at(args.bootstrap)
    names = all_topics(settings.topic_prefix if args.prefix is None else args.prefix)
    if args.topics_command == "check":
        return await _check(bootstrap, names, args.wait)
    partitions = args.partitions or settings.partitions
    replicas = args.replication_factor or settings.replication_factor
    try:
        created = await create_topics(bootstrap, names, partitions, replicas)
    except StackError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    for name in created:
        print(f"  + {name}")
    print(f"✔ {len(names)} topics present on {bootstrap} ({len(created)} created; {partitions} partitions, "
          f"replication factor {replicas})")
    return 0


async def _check(bootstrap: Cluster | str, names: list[str], wait_s: float) -> int:
    admin = AIOKafkaAdminClient(**client_options(bootstrap), request_timeout_ms=30_000)
    await admin.start()
    try:
        deadline = time.monotonic() + wait_s
        while missing := sorted(set(names) - set(await admin.list_topics())):
            if time.monotonic() >= deadline:
                print(f"✘ {len(missing)} of {len(names)} topics missing (`jifen topics create` makes them): "
                      f"{', '.join(missing)}", file=sys.stderr)
                return 1
            await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    finally:
        await admin.close()
    print(f"✔ every topic present ({len(names)})")
    return 0
